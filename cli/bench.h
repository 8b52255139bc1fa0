// Timing of whole-model steps, shared by `poster bench` (cli/bench.c)
// and bench/bench_model.c so both time exactly the same work:
//   BENCH_FORWARD  eval mode, no grad (inference)
//   BENCH_FWD_BWD  training mode (drop path on), loss, backward; no update
//   BENCH_STEP     a whole training step through train/optim.c as the trainer
//                  runs it (train/trainer.c train_step): zero grads, forward,
//                  loss, backward, and with SAM optim_sam_perturb, zero grads,
//                  forward, backward at w + e, optim_sam_restore; then the base
//                  optimizer step (Adam by default)
// Profiler sections (autograd/profile.h) of the step: the model's own (ir50,
// mobilefacenet, transformer, head), "loss", "optimizer" (zeroing, the Adam
// step, the non-finite check), "sam" (perturb, restore, second zeroing),
// "other" (input copy, arena reset).
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "layers/poster.h"
#include "layers/poster_flops.h"
#include "layers/loss.h"
#include "train/optim.h"

enum { BENCH_FORWARD = 0, BENCH_FWD_BWD = 1, BENCH_STEP = 2 };

typedef struct bench_ctx {
    poster_model *m;
    optimizer *opt;          // the step's optimizer (SAM + Adam: optim_opts_default)
    loss_opts lo;
    optim_opts oo;
    float *x;                // [batch, 3, size, size] N(0, 1)
    int64_t *y;              // [batch] labels
    int batch, size;
    rng r;                   // drop path
    poster_macs macs;        // per image
} bench_ctx;

// Builds the model (seed 1), the optimizer and random inputs. Returns 0, or -1
// with err set.
int bench_ctx_init(bench_ctx *c, const poster_opts *o, const loss_opts *lo,
                   const optim_opts *oo, int batch, int size, char *err, size_t errlen);
void bench_ctx_free(bench_ctx *c);
void bench_run(bench_ctx *c, int mode);
// Median seconds of `iters` runs after one warm-up; min and max through the
// pointers. profile: the timed runs are profiled (autograd/profile.h; a clock
// read per tape entry, negligible) for bench_print_split.
double bench_time(bench_ctx *c, int mode, int iters, bool profile, double *tmin, double *tmax);
// Passes (forward+backward) per step: 2 with SAM, else 1.
int bench_step_passes(const bench_ctx *c);
// Model FLOPs per image of one run of `mode` (2 * MACs; backward = 2 * forward).
double bench_flops_per_image(const bench_ctx *c, int mode);
// GFLOP/s of one n x n x n cblas_sgemm on the current thread count (best of reps).
double bench_sgemm_gflops(int n, int reps);
// Prints the time split per section of the `runs` profiled runs of `mode`
// (bench_time with profile), per run, and the achieved GFLOP/s at `seconds`
// per run against `sgemm_gflops` (0: not printed). Lines for scripts:
// "SPLIT <mode> <section> <forward s> <backward s>" and
// "GFLOPS <mode> <achieved> <sgemm>".
void bench_print_split(const bench_ctx *c, int mode, int runs, double seconds,
                       double sgemm_gflops, FILE *f);
// Peak resident memory of this process so far, MB (getrusage).
double bench_peak_rss_mb(void);
