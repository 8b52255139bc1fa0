// `poster bench`: how fast the configured model trains on this machine.
// Times forward (eval mode), and forward + backward of the configured loss in
// training mode, on random inputs; reports the median over the timed
// iterations as images/s, and the peak resident memory. bench/ holds the
// side-by-side comparisons with PyTorch; this is the user's quick check.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/ops.h"
#include "layers/poster.h"
#include "train/cli.h"
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

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: poster bench [--config FILE] [--set model.key=value]... [--batch N]\n"
            "                    [--iters N] [--threads N] [--size 224|112]\n\n"
            "Times the configured model (default: the official large 7-class model):\n"
            "forward in eval mode, and forward + backward of the loss in training mode,\n"
            "on random inputs. Prints the median seconds per batch and images/s.\n");
}

static int parse_pos(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "poster bench: %s %s: expected an integer in [%d, %d]\n", flag, v, lo,
                hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int cli_bench(int argc, char **argv) {
    static config c;
    config_init(&c);
    poster_config_register(&c);
    loss_config_register(&c);
    char err[2048];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0, rc = 2;
    int batch = 16, iters = 3, threads = 0, size = 224;
    poster_model *m = NULL;
    float *x = NULL;
    int64_t *y = NULL;
    double *times = NULL;
    if (config_from_args(&c, argc, argv, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "poster bench: %s\n", err);
        goto done;
    }
    for (int i = 1; i < nrest; i++) {
        const char *a = rest[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            bench_usage(stdout);
            rc = 0;
            goto done;
        }
        if (i + 1 >= nrest) {
            fprintf(stderr, "poster bench: unknown or incomplete argument '%s'\n\n", a);
            bench_usage(stderr);
            goto done;
        }
        int r;
        if (!strcmp(a, "--batch")) r = parse_pos(a, rest[++i], 1, 4096, &batch);
        else if (!strcmp(a, "--iters")) r = parse_pos(a, rest[++i], 1, 1000, &iters);
        else if (!strcmp(a, "--threads")) r = parse_pos(a, rest[++i], 0, 1024, &threads);
        else if (!strcmp(a, "--size")) {
            r = parse_pos(a, rest[++i], 112, 224, &size);
            if (!r && size != 112 && size != 224) {
                fprintf(stderr, "poster bench: --size %d: expected 224 or 112\n", size);
                r = -1;
            }
        } else {
            fprintf(stderr, "poster bench: unknown argument '%s'\n\n", a);
            bench_usage(stderr);
            goto done;
        }
        if (r) goto done;
    }
    rc = 1;
    poster_opts o;
    loss_opts lo;
    if (config_validate(&c, err, sizeof err) || poster_opts_from_config(&c, &o, err, sizeof err) ||
        loss_opts_from_config(&c, &lo, err, sizeof err)) {
        fprintf(stderr, "poster bench: %s\n", err);
        goto done;
    }
    ops_set_threads(threads);
    m = poster_create(&o, 1, err, sizeof err);
    if (!m) {
        fprintf(stderr, "poster bench: %s\n", err);
        goto done;
    }
    int64_t n = (int64_t)batch * 3 * size * size;
    x = malloc((size_t)n * sizeof(float));
    y = malloc((size_t)batch * sizeof(int64_t));
    times = malloc((size_t)(iters + 1) * sizeof(double));
    rng r;
    rng_seed(&r, 7);
    for (int64_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    for (int b = 0; b < batch; b++) y[b] = rng_below(&r, o.num_classes);
    char cnt[32];
    param_store *s = poster_store(m);
    printf("model: depth %d, pyramid levels %d, ir_units %d,%d,%d, %s trainable parameters\n",
           o.depth, o.pyramid_levels, o.ir_units[0], o.ir_units[1], o.ir_units[2],
           poster_fmt_count(store_count(s, PARAM_TRAINABLE) + store_count(s, PARAM_UNUSED), cnt,
                            sizeof cnt));
    printf("batch %d, input %dx%d, %d threads, %d timed iterations after 1 warm-up\n", batch,
           size, size, ops_threads(), iters);
    const char *names[2] = {"forward (eval)", "forward+backward (train)"};
    for (int mode = 0; mode < 2; mode++) {
        for (int it = 0; it <= iters; it++) {
            double t0 = now_s();
            tensor *in = tensor_from(4, (int[]){batch, 3, size, size}, x);
            if (mode == 0) {
                bool prev = ag_no_grad_begin();
                poster_forward(m, in, false, NULL);
                ag_no_grad_end(prev);
            } else {
                store_zero_grad(s);
                tensor *logits = poster_forward(m, in, true, &r);
                ag_backward(loss_compute(&lo, logits, y));
            }
            ag_step_reset();
            times[it] = now_s() - t0;
        }
        qsort(times + 1, (size_t)iters, sizeof(double), cmp_double);
        double med = times[1 + iters / 2];
        printf("%-26s %8.3f s/batch  %8.2f images/s  (min %.3f, max %.3f)\n", names[mode], med,
               batch / med, times[1], times[iters]);
    }
    printf("a SAM training step runs forward+backward twice: about %.2f images/s\n",
           batch / (2 * times[1 + iters / 2]));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak resident memory: %.0f MB\n", ru.ru_maxrss / 1024.0);
    rc = 0;
done:
    free(times);
    free(x);
    free(y);
    if (m) poster_free(m);
    free(rest);
    ag_shutdown();
    return rc;
}
