// Shared test helpers: cmocka, random tensors, a finite-difference gradient
// check and PyTorch fixture loading. Header-only; each test_*.c includes it once.
#pragma once
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/h5io.h"
#include "autograd/ops.h"
#include "autograd/tensor.h"

// ---------------------------------------------------------------------------
// Scratch files. Tests write only below tu_tmpdir(): $TEST_TMPDIR when set
// (tests/run_tests.sh gives every binary its own empty folder), else, when a
// binary is run by hand, a fresh mkdtemp folder under $TMPDIR or /tmp (named on
// stderr, left for inspection). Never the build folder: the same tests run from
// build/ and build-asan/, possibly at once.
static inline const char *tu_tmpdir(void) {
    static char dir[200];   // short, so paths built from it fit fixed buffers
    if (dir[0]) return dir;
    const char *env = getenv("TEST_TMPDIR");
    const char *t = getenv("TMPDIR");
    if ((env && strlen(env) > 150) || (!(env && env[0]) && t && strlen(t) > 150)) {
        fprintf(stderr, "TEST_TMPDIR / TMPDIR longer than 150 characters\n");
        abort();
    }
    if (env && env[0]) {
        snprintf(dir, sizeof dir, "%s", env);
        char cmd[300];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "cannot create TEST_TMPDIR %s\n", dir);
            abort();
        }
        return dir;
    }
    snprintf(dir, sizeof dir, "%s/poster_test_XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "cannot create a scratch folder %s\n", dir);
        abort();
    }
    fprintf(stderr, "scratch folder: %s\n", dir);
    return dir;
}

// tu_tmpdir() + rel ("/a/b.h5"), in one of 64 rotating buffers (several may be live
// in one call, e.g. an argv array).
static inline const char *tu_path(const char *rel) {
    static char bufs[64][1024];
    static int next;
    char *b = bufs[next++ % 64];
    snprintf(b, sizeof bufs[0], "%s%s", tu_tmpdir(), rel);
    return b;
}

// printf into one of 16 rotating buffers, for paths built from several parts.
__attribute__((format(printf, 1, 2))) static inline const char *tu_fmt(const char *fmt, ...) {
    static char bufs[16][2048];
    static int next;
    char *b = bufs[next++ % 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof bufs[0], fmt, ap);
    va_end(ap);
    return b;
}

// Directory of committed fixtures, relative to the repository root (tests run there).
#ifndef FIXTURE_DIR
#define FIXTURE_DIR "tests/fixtures"
#endif

// Skips the running test visibly: a "SKIP: <why>" line (tests/run_tests.sh lists
// them) and cmocka's skip(), so it counts as skipped, never as passed. The
// first argument is a string literal (a printf format).
#define tu_skip(...)                                                          \
    do {                                                                      \
        printf("SKIP: " __VA_ARGS__);                                         \
        printf("\n");                                                         \
        fflush(stdout);                                                       \
        skip();                                                               \
    } while (0)

static inline tensor *tu_rand(rng *r, int ndim, const int *shape, float lo, float hi) {
    tensor *t = tensor_new(ndim, shape);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = (float)(lo + (hi - lo) * rng_uniform(r));
    return t;
}

// A leaf that requires grad (not a parameter: its grad lives in the arena).
static inline tensor *tu_leaf(rng *r, int ndim, const int *shape, float lo, float hi) {
    tensor *t = tu_rand(r, ndim, shape, lo, hi);
    t->requires_grad = true;
    return t;
}

// max |a-b| / max(max|b|, floor): error relative to the reference's scale.
static inline double tu_rel_err(const float *a, const float *b, int64_t n, double floor_) {
    double num = 0, den = floor_;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / den;
}

// ||a-b||_2 / max(||b||_2, floor)
static inline double tu_norm_err(const float *a, const float *b, int64_t n, double floor_) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    den = sqrt(den);
    return sqrt(num) / (den > floor_ ? den : floor_);
}

// ---------------------------------------------------------------------------
// Finite-difference gradient check.
// f builds the output from inputs[0..n). The check uses L = sum(out * w) with a
// fixed random w, accumulated in double; central differences with step eps are
// compared with the tape's gradient: |num - ana| <= atol + rtol * |num|.
// At most max_probe elements per input are probed (spread evenly).

typedef tensor *(*tu_fn)(tensor **inputs, void *ctx);

static inline double tu_weighted_sum(const tensor *out, const float *w) {
    double s = 0;
    for (int64_t i = 0; i < out->numel; i++) s += (double)out->data[i] * w[i];
    return s;
}

static inline int tu_gradcheck(const char *name, tu_fn f, void *ctx, int n,
                               tensor **inputs, double eps, double atol, double rtol,
                               int max_probe) {
    rng r;
    rng_seed(&r, 1234);
    tensor *out = f(inputs, ctx);
    if (!out->requires_grad) {
        fprintf(stderr, "gradcheck %s: output does not require grad\n", name);
        return 1;
    }
    float *w = malloc((size_t)out->numel * sizeof(float));
    for (int64_t i = 0; i < out->numel; i++) w[i] = (float)(rng_uniform(&r) * 2 - 1);
    ag_backward_seed(out, w);
    int bad = 0;
    for (int k = 0; k < n; k++) {
        tensor *x = inputs[k];
        if (!x->requires_grad) continue;
        float *ana = tensor_grad(x);
        int64_t step = x->numel / (max_probe > 0 ? max_probe : 1);
        if (step < 1) step = 1;
        for (int64_t i = 0; i < x->numel; i += step) {
            float orig = x->data[i];
            bool prev = ag_no_grad_begin();
            x->data[i] = orig + (float)eps;
            double lp = tu_weighted_sum(f(inputs, ctx), w);
            x->data[i] = orig - (float)eps;
            double lm = tu_weighted_sum(f(inputs, ctx), w);
            x->data[i] = orig;
            ag_no_grad_end(prev);
            double num = (lp - lm) / (2 * eps);
            double diff = fabs(num - ana[i]);
            if (diff > atol + rtol * fabs(num)) {
                if (bad < 8)
                    fprintf(stderr,
                            "gradcheck %s: input %d element %lld: numeric %.6g analytic "
                            "%.6g\n",
                            name, k, (long long)i, num, (double)ana[i]);
                bad++;
            }
        }
    }
    free(w);
    return bad;
}

// Accumulation: Runs f twice with the same upstream gradient: every input's gradient must
// double (backward adds into the existing buffer) and must not be zero.
static inline void tu_check_accumulates(const char *name, tu_fn f, void *ctx, int n, tensor **in) {
    float *first[8];
    float *seed = NULL;
    for (int pass = 0; pass < 2; pass++) {
        tensor *y = f(in, ctx);
        if (!seed) {
            rng r;
            rng_seed(&r, 77);
            seed = malloc((size_t)y->numel * sizeof(float));
            for (int64_t i = 0; i < y->numel; i++) seed[i] = (float)(rng_uniform(&r) * 2 - 1);
        }
        ag_backward_seed(y, seed);
        for (int k = 0; pass == 0 && k < n; k++) {
            first[k] = NULL;
            if (!in[k]->requires_grad) continue;
            first[k] = malloc((size_t)in[k]->numel * sizeof(float));
            memcpy(first[k], tensor_grad(in[k]), (size_t)in[k]->numel * sizeof(float));
        }
    }
    for (int k = 0; k < n; k++) {
        if (!first[k]) continue;
        double s = 0;
        for (int64_t i = 0; i < in[k]->numel; i++) {
            float g1 = first[k][i], g2 = in[k]->grad[i];
            s += fabsf(g1);
            if (!(fabsf(g2 - 2 * g1) <= 1e-6f + 1e-5f * fabsf(g1)))
                fail_msg("%s: input %d element %lld: %g after two passes, %g after one", name,
                         k, (long long)i, (double)g2, (double)g1);
        }
        if (!(s > 0)) fail_msg("%s: input %d got no gradient", name, k);
        free(first[k]);
    }
    free(seed);
}

// ---------------------------------------------------------------------------
// Fixtures written by tests/reference/*.py with h5py.

static inline hid_t tu_fixture_open(const char *file) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s", FIXTURE_DIR, file);
    hid_t f = h5_open_read(path, err, sizeof err);
    if (f < 0) fail_msg("%s", err);
    return f;
}

// Loads a dataset as an arena tensor (int datasets are converted to float).
static inline tensor *tu_fixture_tensor(hid_t f, const char *name) {
    char err[512];
    float *buf;
    int nd, shape[T_MAXDIM];
    if (h5_read_floats(f, name, &buf, &nd, shape, err, sizeof err) != 0)
        fail_msg("%s", err);
    tensor *t = tensor_from(nd, shape, buf);
    free(buf);
    return t;
}

static inline int64_t *tu_fixture_int64(hid_t f, const char *name, int64_t *count) {
    char err[512];
    int64_t *buf;
    int nd, shape[T_MAXDIM];
    if (h5_read_int64s(f, name, &buf, &nd, shape, err, sizeof err) != 0)
        fail_msg("%s", err);
    if (count) *count = shape_numel(nd, shape);
    return buf;
}

// Asserts that `got` (the data or gradient of tensor `got_shape`) matches the
// fixture tensor `want`: the same shape (ndim and every dimension; a 0-d tensor
// matches a fixture of shape [1], the form tests/reference/*.py store a scalar
// in), data present, and relative error (tu_rel_err, floor 1e-6) <= tol.
static inline void tu_expect_close(const char *what, const tensor *got_shape, const float *got,
                                   const tensor *want, double tol) {
    if (!got_shape) fail_msg("%s: no tensor", what);
    bool same = got_shape->ndim == want->ndim ||
                (got_shape->ndim == 0 && want->ndim == 1 && want->shape[0] == 1);
    if (got_shape->ndim != want->ndim) same = same && got_shape->numel == 1;
    for (int d = 0; same && d < want->ndim && d < got_shape->ndim; d++)
        same = got_shape->shape[d] == want->shape[d];
    if (!same) {
        char a[64], b[64];
        fail_msg("%s: shape %s, fixture %s", what, tensor_shape_str(got_shape, a, sizeof a),
                 tensor_shape_str(want, b, sizeof b));
    }
    if (!got) fail_msg("%s: no data (gradient never computed?)", what);
    double e = tu_rel_err(got, want->data, want->numel, 1e-6);
    if (!(e <= tol)) fail_msg("%s: relative error %.3g > %.3g", what, e, tol);
}
