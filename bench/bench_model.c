// Whole-model speed: forward (eval, no grad) and forward + backward of the
// official loss (2 * LSCE(0.2) + CE) in training mode with drop path as in
// training, for
//   large: default poster_opts (depth 8, ir_units 3,4,14), 224 input;
//   small: the demo model (depth 1, ir_units 1,1,1), 112 input, with and
//          without SAM (a SAM step runs forward + backward twice).
// Median over timed runs after one warm-up, images/s, and the process's peak
// resident memory after each model (getrusage maxrss: monotone, so the small
// model's line reports the large one's peak if it ran first; run
// BENCH_MODELS=small for the small model's own peak).
// bench/bench_model_torch.py times the large model in PyTorch;
// tools/bench_vs_torch.sh prints the ratios.
//
// Environment (so `make bench` stays short):
//   BENCH_BATCH  batch of the large model (default 16); the small model uses it too
//   BENCH_ITERS  timed runs per measurement (default 3)
//   BENCH_MODELS "large,small" (default), "large" or "small"
//   BENCH_THREADS threads (default: all cores, ops_set_threads(0))
// Output lines for scripts start with "RESULT <name> <s/batch> <images/s>".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/ops.h"
#include "layers/poster.h"
#include "train/loss.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

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

static double peak_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

// One forward (mode 0), or `passes` forward+backward passes (mode 1; 2 = SAM).
static void run_once(poster_model *m, const loss_opts *lo, const float *x, const int64_t *y,
                     int batch, int size, int mode, int passes, rng *r) {
    if (mode == 0) {
        tensor *in = tensor_from(4, (int[]){batch, 3, size, size}, x);
        bool prev = ag_no_grad_begin();
        poster_forward(m, in, false, NULL);
        ag_no_grad_end(prev);
        ag_step_reset();
        return;
    }
    param_store *s = poster_store(m);
    for (int p = 0; p < passes; p++) {
        tensor *in = tensor_from(4, (int[]){batch, 3, size, size}, x);
        store_zero_grad(s);
        tensor *logits = poster_forward(m, in, true, r);
        ag_backward(loss_compute(lo, logits, y));
        ag_step_reset();
    }
}

static double time_median(poster_model *m, const loss_opts *lo, const float *x, const int64_t *y,
                          int batch, int size, int mode, int passes, int iters, rng *r,
                          double *tmin, double *tmax) {
    double *t = malloc((size_t)iters * sizeof(double));
    run_once(m, lo, x, y, batch, size, mode, passes, r);   // warm-up: arena, OpenMP pool
    for (int i = 0; i < iters; i++) {
        double t0 = now_s();
        run_once(m, lo, x, y, batch, size, mode, passes, r);
        t[i] = now_s() - t0;
    }
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    double med = iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]);
    *tmin = t[0];
    *tmax = t[iters - 1];
    free(t);
    return med;
}

static void report(const char *name, double med, double tmin, double tmax, int batch) {
    printf("%-30s %8.3f s/batch %8.2f images/s  (min %.3f, max %.3f)\n", name, med, batch / med,
           tmin, tmax);
    printf("RESULT %s %.6f %.4f\n", name, med, batch / med);
    fflush(stdout);
}

static int bench_one(const char *label, const poster_opts *o, int size, int batch, int iters,
                     bool sam) {
    char err[1024];
    poster_model *m = poster_create(o, 1, err, sizeof err);
    if (!m) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    loss_opts lo;
    loss_opts_default(&lo);
    int64_t n = (int64_t)batch * 3 * size * size;
    float *x = malloc((size_t)n * sizeof(float));
    int64_t *y = malloc((size_t)batch * sizeof(int64_t));
    rng r;
    rng_seed(&r, 7);
    for (int64_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    for (int b = 0; b < batch; b++) y[b] = rng_below(&r, o->num_classes);
    printf("== %s model: depth %d, ir_units %d,%d,%d, input %d, batch %d, %d threads, "
           "drop path %.2f, median of %d runs after 1 warm-up\n",
           label, o->depth, o->ir_units[0], o->ir_units[1], o->ir_units[2], size, batch,
           ops_threads(), o->drop_path_rate, iters);
    char name[96];
    double med, mn, mx;
    snprintf(name, sizeof name, "%s_forward", label);
    med = time_median(m, &lo, x, y, batch, size, 0, 1, iters, &r, &mn, &mx);
    report(name, med, mn, mx, batch);
    snprintf(name, sizeof name, "%s_fwd_bwd", label);
    med = time_median(m, &lo, x, y, batch, size, 1, 1, iters, &r, &mn, &mx);
    report(name, med, mn, mx, batch);
    if (sam) {
        snprintf(name, sizeof name, "%s_sam_step", label);
        med = time_median(m, &lo, x, y, batch, size, 1, 2, iters, &r, &mn, &mx);
        report(name, med, mn, mx, batch);
    }
    printf("%s peak resident memory: %.0f MB\n", label, peak_mb());
    printf("RESULT %s_peak_rss_mb %.0f 0\n", label, peak_mb());
    free(x);
    free(y);
    poster_free(m);
    return 0;
}

int main(void) {
    int batch = env_int("BENCH_BATCH", 16, 1, 4096);
    int iters = env_int("BENCH_ITERS", 3, 1, 1000);
    int threads = env_int("BENCH_THREADS", 0, 0, 1024);
    const char *models = getenv("BENCH_MODELS");
    if (!models || !*models) models = "large,small";
    ops_set_threads(threads);
    int rc = 0;
    if (strstr(models, "large")) {
        poster_opts o;
        poster_opts_default(&o);
        rc |= bench_one("large", &o, 224, batch, iters, false);
    }
    if (!rc && strstr(models, "small")) {
        poster_opts o;
        poster_opts_default(&o);
        o.depth = 1;
        o.ir_units[0] = o.ir_units[1] = o.ir_units[2] = 1;
        rc |= bench_one("small", &o, 112, batch, iters, true);
    }
    ag_shutdown();
    return rc;
}
