// `poster bench`: how fast the configured model trains on this machine, and
// the shared step timing of cli/bench.h (bench/bench_model.c uses it too).
// Times forward (eval mode), forward + backward of the configured loss in
// training mode, and the whole training step (SAM + Adam by default) through
// the real optimizer code, on random inputs; reports the median over the
// timed iterations as images/s, the time split of the step by section
// (autograd/profile.h), the achieved GFLOP/s against a large cblas_sgemm's,
// and the peak resident memory.
#include "cli/bench.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/ops.h"
#include "autograd/profile.h"
#include "cli/cli.h"
#include "train/trainer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// ---------------------------------------------------------------------------
// Shared step timing (cli/bench.h)

int bench_ctx_init(bench_ctx *c, const poster_opts *o, const loss_opts *lo,
                   const optim_opts *oo, int batch, int size, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->m = poster_create(o, 1, err, errlen);
    if (!c->m) return -1;
    c->lo = *lo;
    c->oo = *oo;
    c->opt = optim_create(poster_store(c->m), oo);
    c->batch = batch;
    c->size = size;
    int64_t n = (int64_t)batch * 3 * size * size;
    c->x = malloc((size_t)n * sizeof(float));
    c->y = malloc((size_t)batch * sizeof(int64_t));
    if (!c->x || !c->y) {
        snprintf(err, errlen, "out of memory for a batch of %d inputs", batch);
        bench_ctx_free(c);
        return -1;
    }
    rng_seed(&c->r, 7);
    for (int64_t i = 0; i < n; i++) c->x[i] = (float)rng_normal(&c->r);
    for (int b = 0; b < batch; b++) c->y[b] = rng_below(&c->r, o->num_classes);
    poster_count_macs(o, &c->macs);
    return 0;
}

void bench_ctx_free(bench_ctx *c) {
    if (c->opt) optim_free(c->opt);
    if (c->m) poster_free(c->m);
    free(c->x);
    free(c->y);
    memset(c, 0, sizeof *c);
}

int bench_step_passes(const bench_ctx *c) { return c->oo.sam ? 2 : 1; }

// One training forward, loss and backward; the arena is reset after it.
static void bench_pass(bench_ctx *c) {
    tensor *in = tensor_from(4, (int[]){c->batch, 3, c->size, c->size}, c->x);
    tensor *logits = poster_forward(c->m, in, true, &c->r);
    int p = prof_enter("loss");
    tensor *loss = loss_compute(&c->lo, logits, c->y);
    prof_leave(p);
    ag_backward(loss);
    ag_step_reset();
}

void bench_run(bench_ctx *c, int mode) {
    param_store *s = poster_store(c->m);
    if (mode == BENCH_FORWARD) {
        tensor *in = tensor_from(4, (int[]){c->batch, 3, c->size, c->size}, c->x);
        bool prev = ag_no_grad_begin();
        poster_forward(c->m, in, false, NULL);
        ag_no_grad_end(prev);
        ag_step_reset();
        return;
    }
    int p = prof_enter("optimizer");
    store_zero_grad(s);
    prof_leave(p);
    if (mode == BENCH_STEP && c->oo.sam) poster_landmark_reuse(c->m, POSTER_LM_RECORD);
    bench_pass(c);
    poster_landmark_reuse(c->m, POSTER_LM_OFF);
    if (mode == BENCH_FWD_BWD) return;
    // As train_step: the non-finite check, SAM's two passes, the base step.
    p = prof_enter("optimizer");
    const char *bad = train_first_nonfinite_grad(s);
    prof_leave(p);
    if (c->oo.sam && !bad) {
        p = prof_enter("sam");
        optim_sam_perturb(c->opt);
        store_zero_grad(s);
        prof_leave(p);
        poster_landmark_reuse(c->m, POSTER_LM_REPLAY);   // as train_step
        bench_pass(c);
        poster_landmark_reuse(c->m, POSTER_LM_OFF);
        p = prof_enter("optimizer");
        bad = train_first_nonfinite_grad(s);
        prof_leave(p);
        p = prof_enter("sam");
        optim_sam_restore(c->opt);
        prof_leave(p);
    }
    p = prof_enter("optimizer");
    // Random inputs and the official learning rate: gradients stay finite; a
    // non-finite one would be skipped by the trainer, so it is skipped here too.
    if (!bad) optim_step(c->opt);
    prof_leave(p);
}

double bench_time(bench_ctx *c, int mode, int iters, bool profile, double *tmin, double *tmax) {
    double *t = malloc((size_t)iters * sizeof(double));
    AG_ASSERT(t != NULL, "out of memory");
    bench_run(c, mode);   // warm-up: arena, tape, OpenMP pool
    if (profile) {
        prof_reset();
        prof_set_enabled(true);
    }
    for (int i = 0; i < iters; i++) {
        double t0 = now_s();
        bench_run(c, mode);
        t[i] = now_s() - t0;
    }
    if (profile) prof_set_enabled(false);
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    double med = iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]);
    if (tmin) *tmin = t[0];
    if (tmax) *tmax = t[iters - 1];
    free(t);
    return med;
}

double bench_flops_per_image(const bench_ctx *c, int mode) {
    if (mode == BENCH_FORWARD) return 2.0 * c->macs.total;
    double pass = poster_train_pass_flops(&c->macs);
    return mode == BENCH_STEP ? bench_step_passes(c) * pass : pass;
}

double bench_sgemm_gflops(int n, int reps) {
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float));
    float *y = calloc(nn, sizeof(float));
    AG_ASSERT(a && b && y, "out of memory");
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7 % 13) - 6) * 0.01f;
        b[i] = (float)((i * 5 % 11) - 5) * 0.01f;
    }
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {   // the first run warms the threads up
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    y, n);
        double t = now_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    free(a);
    free(b);
    free(y);
    return 2.0 * n * (double)n * n / best * 1e-9;
}

static const char *mode_name(int mode) {
    return mode == BENCH_FORWARD ? "forward" : mode == BENCH_FWD_BWD ? "fwd_bwd" : "train_step";
}

void bench_print_split(const bench_ctx *c, int mode, int runs, double seconds,
                       double sgemm_gflops, FILE *f) {
    fprintf(f, "time split of one %s, batch %d, mean of %d profiled runs, seconds:\n",
            mode != BENCH_STEP ? mode_name(mode)
            : c->oo.sam        ? "SAM training step (2 passes, SAM, Adam)"
                               : "training step (1 pass, optimizer)",
            c->batch, runs);
    fprintf(f, "  %-22s %10s %10s %10s %7s\n", "section", "forward", "backward", "total",
            "share");
    double tot = prof_total_seconds() / runs;
    for (int i = 0; i < prof_section_count(); i++) {
        double a = prof_seconds(i, PROF_FORWARD) / runs, b = prof_seconds(i, PROF_BACKWARD) / runs;
        if (a + b <= 0) continue;
        fprintf(f, "  %-22s %10.3f %10.3f %10.3f %6.1f%%\n", prof_section_name(i), a, b, a + b,
                tot > 0 ? 100.0 * (a + b) / tot : 0.0);
    }
    // Sections named "<group>.<part>" (transformer.attention, ...) also add up
    // into their group's line.
    for (int i = 0; i < prof_section_count(); i++) {
        const char *g = prof_section_name(i);
        if (strchr(g, '.')) continue;
        size_t n = strlen(g);
        double a = 0, b = 0;
        int parts = 0;
        for (int j = 0; j < prof_section_count(); j++) {
            const char *q = prof_section_name(j);
            if (strncmp(q, g, n) || (q[n] != 0 && q[n] != '.')) continue;
            a += prof_seconds(j, PROF_FORWARD) / runs;
            b += prof_seconds(j, PROF_BACKWARD) / runs;
            parts += q[n] == '.';
        }
        if (parts)
            fprintf(f, "  %-22s %10.3f %10.3f %10.3f %6.1f%%  (%s and its parts)\n", g, a, b,
                    a + b, tot > 0 ? 100.0 * (a + b) / tot : 0.0, g);
    }
    fprintf(f, "  %-22s %32.3f\n", "all", tot);
    for (int i = 0; i < prof_section_count(); i++)
        if (prof_seconds(i, 0) + prof_seconds(i, 1) > 0)
            fprintf(f, "SPLIT %s %s %.6f %.6f\n", mode_name(mode), prof_section_name(i),
                    prof_seconds(i, PROF_FORWARD) / runs, prof_seconds(i, PROF_BACKWARD) / runs);
    double fl = bench_flops_per_image(c, mode) * c->batch;
    double gf = fl / seconds * 1e-9;
    fprintf(f, "model FLOPs %.1f G per run (%.2f GMAC/image forward), %.3f s per run: ", fl * 1e-9,
            c->macs.total * 1e-9, seconds);
    if (sgemm_gflops > 0)
        fprintf(f, "%.1f GFLOP/s = %.0f%% of a large cblas_sgemm's %.1f GFLOP/s\n", gf,
                100.0 * gf / sgemm_gflops, sgemm_gflops);
    else
        fprintf(f, "%.1f GFLOP/s\n", gf);
    fprintf(f, "GFLOPS %s %.3f %.3f\n", mode_name(mode), gf, sgemm_gflops);
}

double bench_peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

// ---------------------------------------------------------------------------
// poster bench

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: poster bench [--config FILE] [--set key=value]... [--batch N]\n"
            "                    [--iters N] [--threads N] [--size 224|112] [--no-split]\n"
            "                    [--skip forward,fwd_bwd,step]\n\n"
            "Times the configured model (default: the official large 7-class model) on\n"
            "random inputs, median seconds per batch and images/s of:\n"
            "  forward (eval)            eval mode, no gradients (inference)\n"
            "  forward+backward (train)  training mode, drop path on, loss, backward\n"
            "  training step             the whole step as `poster train` runs it: with\n"
            "                            optim.sam = on (default) two forward+backward\n"
            "                            passes around optim_sam_perturb/restore, then the\n"
            "                            base optimizer (Adam, optim.lr 4e-5, rho 0.05)\n"
            "After the evaluation forward and after the training step, the time split by\n"
            "section (IR-50, MobileFaceNet, transformer, head, loss: forward and backward;\n"
            "optimizer; SAM bookkeeping; other), profiled during the timed runs, and the\n"
            "achieved GFLOP/s (model FLOPs counted from the shapes: 2 x multiply-adds,\n"
            "backward twice the forward) against a 2048^3 cblas_sgemm measured in the\n"
            "same run; then the peak resident memory. --no-split: no profiling, no sgemm.\n"
            "--skip leaves the listed measurements out.\n"
            "Model keys: model.*; loss: loss.*; optimizer: optim.* (poster train --help).\n");
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
    optim_config_register(&c);
    char err[2048];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0, rc = 2;
    int batch = 16, iters = 3, threads = 0, size = 224;
    bool split = true;
    const char *skip = "";
    bench_ctx bc = {0};
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
        if (!strcmp(a, "--no-split")) {
            split = false;
            continue;
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
        else if (!strcmp(a, "--skip")) {
            skip = rest[++i];
            r = 0;
            for (const char *p = skip; *p;) {
                size_t n = strcspn(p, ",");
                if (!((n == 7 && !strncmp(p, "forward", 7)) || (n == 7 && !strncmp(p, "fwd_bwd", 7)) ||
                      (n == 4 && !strncmp(p, "step", 4)))) {
                    fprintf(stderr, "poster bench: --skip %s: expected a comma list of forward, "
                            "fwd_bwd, step\n", skip);
                    r = -1;
                    break;
                }
                p += n + (p[n] == ',');
            }
        }
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
    optim_opts oo;
    if (config_validate(&c, err, sizeof err) || poster_opts_from_config(&c, &o, err, sizeof err) ||
        loss_opts_from_config(&c, &lo, err, sizeof err) ||
        optim_opts_from_config(&c, &oo, err, sizeof err)) {
        fprintf(stderr, "poster bench: %s\n", err);
        goto done;
    }
    ops_set_threads(threads);
    if (bench_ctx_init(&bc, &o, &lo, &oo, batch, size, err, sizeof err)) {
        fprintf(stderr, "poster bench: %s\n", err);
        goto done;
    }
    char cnt[32];
    param_store *s = poster_store(bc.m);
    printf("model: depth %d, pyramid levels %d, ir_units %d,%d,%d, %s trainable parameters, "
           "%.2f GMAC per image forward\n",
           o.depth, o.pyramid_levels, o.ir_units[0], o.ir_units[1], o.ir_units[2],
           poster_fmt_count(store_count(s, PARAM_TRAINABLE) + store_count(s, PARAM_UNUSED), cnt,
                            sizeof cnt),
           bc.macs.total * 1e-9);
    printf("batch %d, input %dx%d, %d threads, %d timed iterations after 1 warm-up\n", batch,
           size, size, ops_threads(), iters);
    char step_name[64];
    snprintf(step_name, sizeof step_name, "training step (%s%s)", oo.sam ? "SAM + " : "",
             optim_name(oo.kind));
    const char *names[3] = {"forward (eval)", "forward+backward (train)", step_name};
    // The yardstick only for a split that will be printed.
    const bool splits = split && (!strstr(skip, "forward") || !strstr(skip, "step"));
    double step_s = 0, sgemm = splits ? bench_sgemm_gflops(2048, 2) : 0;
    static const char *keys[3] = {"forward", "fwd_bwd", "step"};
    for (int mode = 0; mode < 3; mode++) {
        if (strstr(skip, keys[mode])) continue;
        double mn, mx;
        const bool prof = split && (mode == BENCH_STEP || mode == BENCH_FORWARD);
        double med = bench_time(&bc, mode, iters, prof, &mn, &mx);
        printf("%-26s %8.3f s/batch  %8.2f images/s  (min %.3f, max %.3f)\n", names[mode], med,
               batch / med, mn, mx);
        // The evaluation's split right away: the next bench_time resets the profile.
        if (prof && mode == BENCH_FORWARD) bench_print_split(&bc, mode, iters, med, sgemm, stdout);
        fflush(stdout);
        step_s = med;
    }
    if (split && !strstr(skip, "step")) bench_print_split(&bc, BENCH_STEP, iters, step_s, sgemm, stdout);
    printf("peak resident memory: %.0f MB\n", bench_peak_rss_mb());
    rc = 0;
done:
    bench_ctx_free(&bc);
    free(rest);
    ag_shutdown();
    return rc;
}
