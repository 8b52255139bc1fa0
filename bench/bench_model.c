// Whole-model speed through the shared step timing of cli/bench.h (the
// same code `poster bench` runs):
//   forward      eval mode, no grad (inference)
//   fwd_bwd      training mode, drop path on (0.1), official loss
//                2 * LSCE(0.2) + CE, backward, no update
//   sam_step     the official training step: forward+backward, SAM perturb
//                (rho 0.05), forward+backward at w + e, restore, Adam (lr 4e-5),
//                through train/optim.c
// for
//   large: default poster_opts (depth 8, ir_units 3,4,14), 224 input;
//   small: the demo model (depth 1, ir_units 1,1,1), 112 input.
// Median over timed runs after one warm-up, images/s; the time split of the
// SAM step by section (profiled during its timed runs), its achieved GFLOP/s
// against a 2048^3 cblas_sgemm measured in the same run (mean of the rates at
// the start and right after the step), and the process's peak
// resident memory after each model (getrusage maxrss: monotone, so the small
// model's line reports the large one's peak if it ran first; run
// BENCH_MODELS=small for the small model's own peak).
// bench/bench_model_torch.py times the same three in PyTorch;
// tools/bench_vs_torch.sh prints the ratios.
//
// Environment (so `make bench` stays short):
//   BENCH_BATCH  batch of the large model (default 16); the small model uses it too
//   BENCH_ITERS  timed runs per measurement (default 3)
//   BENCH_MODELS "large,small" (default), "large" or "small"
//   BENCH_THREADS threads (default: all cores, ops_set_threads(0))
//   BENCH_SKIP   comma list of forward,fwd_bwd,sam_step to leave out
// Output lines for scripts start with "RESULT <name> <s/batch> <images/s>",
// "SPLIT ..." and "GFLOPS ..." (cli/bench.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "cli/bench.h"

static int env_int(const char *name, int def, int lo, int hi) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "bench_model: %s=%s: expected an integer in [%d, %d]\n", name, v, lo, hi);
        exit(2);
    }
    return (int)x;
}

static void report(const char *name, double med, double tmin, double tmax, int batch) {
    printf("%-30s %8.3f s/batch %8.2f images/s  (min %.3f, max %.3f)\n", name, med, batch / med,
           tmin, tmax);
    printf("RESULT %s %.6f %.4f\n", name, med, batch / med);
    fflush(stdout);
}

static bool skipped(const char *what) {
    const char *s = getenv("BENCH_SKIP");
    return s && strstr(s, what);
}

static int bench_one(const char *label, const poster_opts *o, int size, int batch, int iters,
                     double sgemm) {
    char err[1024];
    loss_opts lo;
    loss_opts_default(&lo);
    optim_opts oo;
    optim_opts_default(&oo);   // official: SAM (rho 0.05) around Adam (lr 4e-5)
    bench_ctx c;
    if (bench_ctx_init(&c, o, &lo, &oo, batch, size, err, sizeof err)) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    printf("== %s model: depth %d, ir_units %d,%d,%d, input %d, batch %d, %d threads, "
           "drop path %.2f, %.2f GMAC/image, median of %d runs after 1 warm-up\n",
           label, o->depth, o->ir_units[0], o->ir_units[1], o->ir_units[2], size, batch,
           ops_threads(), o->drop_path_rate, c.macs.total * 1e-9, iters);
    static const char *what[3] = {"forward", "fwd_bwd", "sam_step"};
    char name[96];
    for (int mode = 0; mode < 3; mode++) {
        if (skipped(what[mode])) continue;
        const bool prof = mode == BENCH_STEP || mode == BENCH_FORWARD;
        double mn, mx, med = bench_time(&c, mode, iters, prof, &mn, &mx);
        snprintf(name, sizeof name, "%s_%s", label, what[mode]);
        report(name, med, mn, mx, batch);
        if (mode == BENCH_FORWARD) bench_print_split(&c, mode, iters, med, sgemm, stdout);
        if (mode == BENCH_STEP) {
            // Right after the step as well: other jobs may share the cores, and the
            // yardstick should see the same machine as the step.
            double after = bench_sgemm_gflops(2048, 2);
            printf("cblas_sgemm 2048^3 after the step: %.1f GFLOP/s\n", after);
            bench_print_split(&c, mode, iters, med, 0.5 * (sgemm + after), stdout);
        }
    }
    printf("%s peak resident memory: %.0f MB\n", label, bench_peak_rss_mb());
    printf("RESULT %s_peak_rss_mb %.0f 0\n", label, bench_peak_rss_mb());
    bench_ctx_free(&c);
    return 0;
}

int main(void) {
    int batch = env_int("BENCH_BATCH", 16, 1, 4096);
    int iters = env_int("BENCH_ITERS", 3, 1, 1000);
    int threads = env_int("BENCH_THREADS", 0, 0, 1024);
    const char *models = getenv("BENCH_MODELS");
    if (!models || !*models) models = "large,small";
    ops_set_threads(threads);
    double sgemm = bench_sgemm_gflops(2048, 2);
    printf("cblas_sgemm 2048^3: %.1f GFLOP/s on %d threads\nRESULT sgemm_gflops %.3f 0\n", sgemm,
           ops_threads(), sgemm);
    int rc = 0;
    if (strstr(models, "large")) {
        poster_opts o;
        poster_opts_default(&o);
        rc |= bench_one("large", &o, 224, batch, iters, sgemm);
    }
    if (!rc && strstr(models, "small")) {
        poster_opts o;
        poster_opts_default(&o);
        o.depth = 1;
        o.ir_units[0] = o.ir_units[1] = o.ir_units[2] = 1;
        rc |= bench_one("small", &o, 112, batch, iters, sgemm);
    }
    ag_shutdown();
    return rc;
}
