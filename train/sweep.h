// `poster sweep`: every combination of a grid of configuration values x N seeds
// as an ordinary `poster train` run in its own folder
// (OUT/<key=value,...>/seed<S>/), one after another or --jobs at once, resumable
// (finished runs are skipped, unfinished ones resume from their last.h5), with a
// summary over seeds after every finished run: summary.csv, summary.md,
// summary.png (and runs.csv, one row per run).
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "common/config.h"

// Registers sweep.grid, sweep.seeds, sweep.out, sweep.jobs: a recipe can carry
// its sweep ([sweep] section, e.g. configs/ablation_pyramid.ini); `poster train`
// accepts and ignores them.
void sweep_config_register(config *c);

// What one finished run's logs say (log.csv, ema.csv with train.ema, test.json
// with data.val_split). Rows repeated for an epoch (a run resumed after a crash
// between its log row and its checkpoint) count once, the last one.
typedef struct sweep_run_metrics {
    int epochs;                 // distinct epochs logged
    int best_epoch;             // the epoch best.h5 holds (first maximum, as the trainer)
    bool best_is_ema;           // the EMA weights won that epoch (train.ema)
    double best_acc, best_f1, best_score;   // validation metrics at best_epoch
    double final_acc;           // validation accuracy of the last epoch
    double sec_per_epoch;       // mean of the seconds column
    double test_acc, test_f1, test_score;   // test.json (data.val_split), else NaN
} sweep_run_metrics;

// Reads DIR's logs. 0, or -1 with err (no log.csv, no evaluated epoch, ...).
int sweep_read_run(const char *dir, sweep_run_metrics *m, char *err, size_t errlen);

// Mean, sample standard deviation (n - 1; 0 for one value), min and max of the
// finite values among v[0..n).
typedef struct sweep_stat {
    int n;
    double mean, sd, min, max;
} sweep_stat;
sweep_stat sweep_stats(const double *v, int n);

// ---- running a sweep (`poster sweep`, cli/sweep.c parses its arguments) ----
#define SWEEP_MAX_JOBS 64

typedef struct sweep_args {
    const char *const *grids;   // --grid KEY=V1,V2 specs, after the recipe's sweep.grid
    int ngrids;
    int seeds, jobs;            // 0: the recipe's sweep.seeds / sweep.jobs
    const char *out;            // NULL: the recipe's sweep.out
    bool dry;                   // print the runs and their state, run nothing
    const char *cmdline;        // the command line, for summary.md
    const char *argv0;          // to find this program for the runs
} sweep_args;

// Runs the sweep of recipe `base` (loaded and validated, train keys registered):
// every combination x seed as a `poster train` child process, the summaries after
// every finished run. Returns the exit code (128 + signal when stopped).
int sweep_main(config *base, const sweep_args *a);
