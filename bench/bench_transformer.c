// The cross-fusion pyramid transformer alone (layers/transformer.c): forward
// and backward of pyramid_fuse in training mode (drop path 0.1 schedule) on
// random image and landmark tokens, as in a training pass of the large model,
// with the time split of its sections (attention, MLP, norms, the rest) from
// the profiler (autograd/profile.h). Used to measure transformer changes
// before/after without the IR-50 trunk's time around them.
//
// Environment: BENCH_BATCH (16), BENCH_ITERS (3 timed runs after 1 warm-up,
// median), BENCH_DEPTH (8), BENCH_THREADS (0: all cores).
// Output: "RESULT transformer_fwd_bwd <s/batch> <images/s>" and
// "SPLIT <section> <forward s> <backward s>" per run.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/ops.h"
#include "autograd/profile.h"
#include "layers/layers.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int env_int(const char *name, int def, int lo, int hi) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "bench_transformer: %s=%s: expected an integer in [%d, %d]\n", name, v,
                lo, hi);
        exit(2);
    }
    return (int)x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    const int B = env_int("BENCH_BATCH", 16, 1, 4096), iters = env_int("BENCH_ITERS", 3, 1, 1000);
    const int depth = env_int("BENCH_DEPTH", 8, 1, 64);
    ops_set_threads(env_int("BENCH_THREADS", 0, 0, 1024));
    param_store s;
    store_init(&s);
    layer_builder b;
    lb_init(&b, &s);
    b.kind = PARAM_TRAINABLE;
    pyramid_fuse pf;
    pyramid_fuse_init(&pf, &b, "pyramid_fuse", depth, 3, true);
    store_finalize(&s);
    rng r;
    rng_seed(&r, 3);
    lb_apply_init(&b, &r);
    pyramid_fuse_set_drop_path(&pf, 0.1f);
    const int64_t n = (int64_t)B * 49 * 512;
    float *img = malloc((size_t)n * sizeof(float)), *lm = malloc((size_t)n * sizeof(float));
    float *seed = malloc((size_t)B * 512 * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        img[i] = (float)rng_normal(&r);
        lm[i] = (float)rng_normal(&r);
    }
    for (int i = 0; i < B * 512; i++) seed[i] = (float)(rng_uniform(&r) * 2 - 1);
    double *t = malloc((size_t)iters * sizeof(double));
    printf("pyramid_fuse depth %d, batch %d, %d threads: forward + backward (training), "
           "median of %d runs after 1 warm-up\n", depth, B, ops_threads(), iters);
    for (int it = -1; it < iters; it++) {
        if (it == 0) {
            prof_reset();
            prof_set_enabled(true);
        }
        double t0 = now_s();
        store_zero_grad(&s);
        tensor *ti = tensor_from(3, (int[]){B, 49, 512}, img);
        ti->requires_grad = true;   // the image tokens come from the trunk
        tensor *tl = tensor_from(3, (int[]){B, 49, 512}, lm);   // frozen stream: no grad
        tensor *y = pyramid_fuse_forward(&pf, &s, ti, tl, true, &r);
        ag_backward_seed(y, seed);
        ag_step_reset();
        if (it >= 0) t[it] = now_s() - t0;
    }
    prof_set_enabled(false);
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    double med = t[iters / 2];
    printf("transformer forward+backward  %8.3f s/batch %8.2f images/s  (min %.3f, max %.3f)\n",
           med, B / med, t[0], t[iters - 1]);
    printf("RESULT transformer_fwd_bwd %.6f %.4f\n", med, B / med);
    printf("  %-22s %10s %10s\n", "section", "forward s", "backward s");
    for (int i = 0; i < prof_section_count(); i++) {
        double a = prof_seconds(i, PROF_FORWARD) / iters, bw = prof_seconds(i, PROF_BACKWARD) / iters;
        if (a + bw <= 0) continue;
        printf("  %-22s %10.3f %10.3f\n", prof_section_name(i), a, bw);
        printf("SPLIT %s %.6f %.6f\n", prof_section_name(i), a, bw);
    }
    free(t);
    free(img);
    free(lm);
    free(seed);
    pyramid_fuse_free(&pf);
    lb_free(&b);
    store_free(&s);
    ag_shutdown();
    return 0;
}
