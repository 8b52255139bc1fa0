// `poster sweep`: its arguments (train/sweep.h runs the grid).
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "train/sweep.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: poster sweep --config FILE [--set k=v]... --grid KEY=V1,V2,... [--grid ...]\n"
        "                    [--seeds N] [--out DIR] [--jobs N] [--dry-run]\n\n"
        "Trains every combination of the grids' values x N seeds as an ordinary\n"
        "`poster train` run in DIR/<key=value,...>/seed<S>/ (S = train.seed, train.seed+1,\n"
        "...). Started again with the same arguments it skips finished runs and resumes\n"
        "unfinished ones from their last.h5. After every finished run it writes\n"
        "DIR/summary.csv, summary.md, summary.png and runs.csv: per combination the mean,\n"
        "sample standard deviation, min and max over seeds of the best validation\n"
        "accuracy, its macro F1 and score, the final-epoch accuracy (and the test metrics\n"
        "with data.val_split), the parameter count and the seconds per epoch.\n\n"
        "  --config FILE   the recipe; a [sweep] section may hold grid (\"k=a,b; k2=c,d\"),\n"
        "                  seeds, out, jobs (the options below override it)\n"
        "  --set k=v       a key of every run\n"
        "  --grid K=V,...  a key and its values (repeatable; the combinations are all\n"
        "                  products, the last grid varying fastest)\n"
        "  --seeds N       seeds per combination (default 1)\n"
        "  --out DIR       output folder (default runs/sweep)\n"
        "  --jobs N        runs at once; each gets cores/N threads unless train.threads is\n"
        "                  set (default 1: one run after another with all cores)\n"
        "  --dry-run       print the runs and their state, run nothing\n");
}

int cli_sweep(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    static config base;
    config_init(&base);
    train_config_register(&base);
    char err[4096];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    const char **grids = malloc((size_t)(argc + 1) * sizeof(char *));
    AG_ASSERT(rest && grids, "out of memory");
    int nrest = 0, rc = 1;
    sweep_args a = {.grids = grids, .argv0 = argv[0]};
    if (config_from_args(&base, argc, argv, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "poster sweep: %s\n", err);
        goto done;
    }
    if (!base.path[0]) {
        fprintf(stderr, "poster sweep: --config FILE is required\n\n");
        usage(stderr);
        rc = 2;
        goto done;
    }
    if (config_validate(&base, err, sizeof err)) {
        fprintf(stderr, "poster sweep: %s\n", err);
        goto done;
    }
    for (int i = 1; i < nrest; i++) {
        const char *s = rest[i];
        bool has_val = i + 1 < nrest;
        if (!strcmp(s, "--grid") && has_val) {
            grids[a.ngrids++] = rest[++i];
        } else if (!strcmp(s, "--seeds") && has_val) {
            a.seeds = atoi(rest[++i]);
            if (a.seeds < 1 || a.seeds > 1000) {
                fprintf(stderr, "poster sweep: --seeds %s: expected 1..1000\n", rest[i]);
                goto done;
            }
        } else if (!strcmp(s, "--jobs") && has_val) {
            a.jobs = atoi(rest[++i]);
            if (a.jobs < 1 || a.jobs > SWEEP_MAX_JOBS) {
                fprintf(stderr, "poster sweep: --jobs %s: expected 1..%d\n", rest[i],
                        SWEEP_MAX_JOBS);
                goto done;
            }
        } else if (!strcmp(s, "--out") && has_val) {
            a.out = rest[++i];
        } else if (!strcmp(s, "--dry-run")) {
            a.dry = true;
        } else {
            fprintf(stderr, "poster sweep: %s '%s'\n\n",
                    has_val || strncmp(s, "--", 2) ? "unknown argument" : "missing value after", s);
            usage(stderr);
            rc = 2;
            goto done;
        }
    }
    char cmdline[4096];   // the command line, for summary.md
    size_t len = (size_t)snprintf(cmdline, sizeof cmdline, "poster");
    for (int i = 0; i < argc && len < sizeof cmdline; i++)
        len += (size_t)snprintf(cmdline + len, sizeof cmdline - len, " %s", argv[i]);
    a.cmdline = cmdline;
    rc = sweep_main(&base, &a);
done:
    free(rest);
    free(grids);
    return rc;
}
