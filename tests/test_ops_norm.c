// Softmax, log-softmax, layer norm, batch norm, drop path and cross entropy
// (autograd/ops_norm.c): finite-difference gradients, the PyTorch fixture
// (tests/fixtures/ops_basic.h5), batch norm running statistics, drop path
// statistics, cross entropy's target check and gradient accumulation.
//
// Tolerances:
//   - gradcheck: eps 1e-2 on inputs of scale ~1, |num - ana| <= 3e-3 + 2e-2 |num|.
//     These ops are smooth but curved: the central difference's truncation
//     error eps^2 |f'''| / 6 stays below ~1e-4 relative here, and float32
//     rounding of the forward (~1e-6 of L) divided by 2 eps adds ~1e-4 absolute.
//     Normalizations over few elements (batch norm on 6 values per channel)
//     have the largest third derivatives, hence 2e-2 rather than 1e-2 relative.
//   - fixtures: forward <= 1e-4, gradients <= 1e-3 relative to max |ref|;
//     running statistics <= 1e-5.
//   - drop path: kept fraction within 4.5 standard deviations of 1 - rate.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define GC_EPS 1e-2
#define GC_ATOL 3e-3
#define GC_RTOL 2e-2
#define GC_PROBE 40

#define FX_FWD_TOL 1e-4
#define FX_BWD_TOL 1e-3

// ---------------------------------------------------------------------------
// Softmax / log-softmax

static tensor *softmax_fn(tensor **in, void *ctx) {
    return *(int *)ctx ? op_log_softmax(in[0]) : op_softmax(in[0]);
}

static void test_softmax_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 1);
    static const int shapes[][4] = {{2, 3, 7}, {3, 2, 3, 5}, {2, 1, 4}, {2, 4, 1}, {1, 9}};
    for (int lg = 0; lg < 2; lg++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            tensor *in[1] = {tu_leaf(&r, shapes[s][0], &shapes[s][1], -2, 2)};
            char name[64];
            snprintf(name, sizeof name, "%s shape %zu", lg ? "log_softmax" : "softmax", s);
            assert_int_equal(tu_gradcheck(name, softmax_fn, &lg, 1, in, GC_EPS, GC_ATOL,
                                          GC_RTOL, GC_PROBE),
                             0);
            ag_step_reset();
        }
}

// Huge logits do not overflow; rows sum to 1; log_softmax = log(softmax).
static void test_softmax_stable(void **state) {
    (void)state;
    float xs[8] = {1000, 999, 998, -1000, 88, 89, 90, 91};
    tensor *x = tensor_from(T_SHAPE(2, 4), xs);
    tensor *p = op_softmax(x), *lp = op_log_softmax(x);
    for (int r = 0; r < 2; r++) {
        double s = 0;
        for (int j = 0; j < 4; j++) {
            float v = p->data[r * 4 + j];
            assert_true(isfinite(v) && isfinite(lp->data[r * 4 + j]));
            s += v;
            if (v > 1e-30f) assert_true(fabs(log(v) - lp->data[r * 4 + j]) < 1e-4);
        }
        assert_true(fabs(s - 1) < 1e-6);
    }
    // exp(1000 - 1000) / (1 + e^-1 + e^-2) exactly up to float rounding
    assert_true(fabs(p->data[0] - 1.0 / (1 + exp(-1.0) + exp(-2.0))) < 1e-6);
    assert_true(fabs(lp->data[3] - (-2000 - log(1 + exp(-1.0) + exp(-2.0)))) < 1e-2);
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// Layer norm

typedef struct ln_ctx {
    float eps;
    bool w, b;
} ln_ctx;

static tensor *ln_fn(tensor **in, void *ctx) {
    ln_ctx *c = ctx;
    return op_layernorm(in[0], c->w ? in[1] : NULL, c->b ? in[2] : NULL, c->eps);
}

static void test_layernorm_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 2);
    static const int shapes[][4] = {{3, 2, 5, 8}, {2, 3, 7}, {3, 1, 1, 9}, {2, 4, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int aff = 0; aff < 4; aff++) {   // none, w, b, both
            int nd = shapes[s][0], D = shapes[s][nd];
            tensor *in[3] = {tu_leaf(&r, nd, &shapes[s][1], -1, 1),
                             tu_leaf(&r, T_SHAPE(D), 0.5f, 1.5f), tu_leaf(&r, T_SHAPE(D), -1, 1)};
            ln_ctx c = {1e-5f, aff & 1, aff & 2};
            char name[64];
            snprintf(name, sizeof name, "layernorm shape %zu affine %d", s, aff);
            assert_int_equal(
                tu_gradcheck(name, ln_fn, &c, 3, in, GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE), 0);
            ag_step_reset();
        }
}

// ---------------------------------------------------------------------------
// Batch norm

typedef struct bn_ctx {
    bn_args a;
    bool affine;
} bn_ctx;

static tensor *bn_fn(tensor **in, void *ctx) {
    bn_ctx *c = ctx;
    bn_args a = c->a;
    a.weight = c->affine ? in[1] : NULL;
    a.bias = c->affine ? in[2] : NULL;
    return op_batchnorm(in[0], &a);
}

static void test_batchnorm_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 3);
    // 2d, 2d batch 1 (statistics over H W only), 1d [B, C], 1d [B, C, L], odd sizes
    static const int shapes[][5] = {{4, 4, 3, 5, 5}, {4, 1, 2, 3, 3}, {2, 6, 4},
                                    {3, 3, 4, 5}, {4, 3, 5, 3, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int mode = 0; mode < 4; mode++) {   // train/eval x affine/plain
            bool training = mode < 2, affine = mode % 2 == 0;
            int C = shapes[s][2];
            tensor *in[3] = {tu_leaf(&r, shapes[s][0], &shapes[s][1], -2, 3),
                             tu_leaf(&r, T_SHAPE(C), 0.5f, 1.5f), tu_leaf(&r, T_SHAPE(C), -1, 1)};
            tensor *rm = tu_rand(&r, T_SHAPE(C), -1, 1), *rv = tu_rand(&r, T_SHAPE(C), 0.5f, 2);
            int64_t nbt = 0;
            bn_ctx c = {{NULL, NULL, rm, rv, &nbt, training, 0.1f, 1e-5f, NULL}, affine};
            char name[80];
            snprintf(name, sizeof name, "batchnorm shape %zu %s %s", s,
                     training ? "train" : "eval", affine ? "affine" : "plain");
            int n = affine ? 3 : 1;
            assert_int_equal(
                tu_gradcheck(name, bn_fn, &c, n, in, GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE), 0);
            if (!training) assert_int_equal(nbt, 0);
            else assert_true(nbt > 0);
            ag_step_reset();
        }
}

// Running statistics: momentum update with the unbiased variance, counter
// incremented, also under no-grad; eval changes nothing and uses them.
static void test_batchnorm_running_stats(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 4);
    int B = 3, C = 2, H = 2, W = 3;
    tensor *x = tu_rand(&r, T_SHAPE(B, C, H, W), -1, 2);
    float rm0[2] = {0.5f, -0.25f}, rv0[2] = {1.5f, 0.75f};
    tensor *rm = tensor_from(T_SHAPE(2), rm0), *rv = tensor_from(T_SHAPE(2), rv0);
    int64_t nbt = 5;
    bn_args a = {NULL, NULL, rm, rv, &nbt, true, 0.1f, 1e-5f, NULL};
    bool prev = ag_no_grad_begin();
    tensor *y = op_batchnorm(x, &a);
    ag_no_grad_end(prev);
    assert_int_equal(nbt, 6);
    int n = B * H * W;
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < H * W; j++) s += x->data[(b * C + c) * H * W + j];
        double mu = s / n;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < H * W; j++) {
                double d = x->data[(b * C + c) * H * W + j] - mu;
                ss += d * d;
            }
        assert_true(fabs(rm->data[c] - (0.9 * rm0[c] + 0.1 * mu)) < 1e-6);
        assert_true(fabs(rv->data[c] - (0.9 * rv0[c] + 0.1 * ss / (n - 1))) < 1e-6);
        // normalized with the biased variance
        double want = (x->data[c * H * W] - mu) / sqrt(ss / n + 1e-5);
        assert_true(fabs(y->data[c * H * W] - want) < 1e-5);
    }
    // Eval: no update, running statistics used.
    float rm1[2] = {rm->data[0], rm->data[1]}, rv1[2] = {rv->data[0], rv->data[1]};
    a.training = false;
    y = op_batchnorm(x, &a);
    assert_int_equal(nbt, 6);
    assert_true(rm->data[0] == rm1[0] && rv->data[1] == rv1[1]);
    for (int c = 0; c < C; c++) {
        double want = (x->data[c * H * W] - rm1[c]) / sqrt(rv1[c] + 1e-5);
        assert_true(fabs(y->data[c * H * W] - want) < 1e-5);
    }
    // Training without running statistics (track_running_stats=False) works too.
    bn_args none = {NULL, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f, NULL};
    y = op_batchnorm(x, &none);
    assert_true(isfinite(y->data[0]));
    ag_step_reset();
}

// Larger batch norm (OpenMP over channels) against a double-precision loop.
static void test_batchnorm_large(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 5);
    int B = 8, C = 16, S = 17 * 19;
    tensor *x = tu_leaf(&r, T_SHAPE(B, C, 17, 19), -1, 3);
    tensor *w = tu_leaf(&r, T_SHAPE(C), 0.5f, 1.5f), *bb = tu_leaf(&r, T_SHAPE(C), -1, 1);
    bn_args a = {w, bb, NULL, NULL, NULL, true, 0.1f, 1e-5f, NULL};
    tensor *y = op_batchnorm(x, &a);
    tensor *gy = tu_rand(&r, y->ndim, y->shape, -1, 1);
    ag_backward_seed(y, gy->data);
    double max_ey = 0, max_ex = 0, max_ew = 0;
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0, n = (double)B * S;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < S; j++) s += x->data[((int64_t)b * C + c) * S + j];
        double mu = s / n;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < S; j++) {
                double d = x->data[((int64_t)b * C + c) * S + j] - mu;
                ss += d * d;
            }
        double rs = 1 / sqrt(ss / n + 1e-5), sg = 0, sgh = 0;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < S; j++) {
                int64_t i = ((int64_t)b * C + c) * S + j;
                double h = (x->data[i] - mu) * rs;
                double want = h * w->data[c] + bb->data[c];
                max_ey = fmax(max_ey, fabs(y->data[i] - want));
                sg += gy->data[i];
                sgh += gy->data[i] * h;
            }
        max_ew = fmax(max_ew, fabs(w->grad[c] - sgh) / (1 + fabs(sgh)));
        max_ew = fmax(max_ew, fabs(bb->grad[c] - sg) / (1 + fabs(sg)));
        for (int b = 0; b < B; b++)
            for (int j = 0; j < S; j++) {
                int64_t i = ((int64_t)b * C + c) * S + j;
                double h = (x->data[i] - mu) * rs;
                double want = w->data[c] * rs * (gy->data[i] - sg / n - h * sgh / n);
                max_ex = fmax(max_ex, fabs(x->grad[i] - want));
            }
    }
    assert_true(max_ey < 1e-5);
    assert_true(max_ex < 1e-5);
    assert_true(max_ew < 1e-5);
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// Drop path

typedef struct dp_ctx {
    float rate;
    uint64_t seed;
} dp_ctx;

// Re-seeds so every call of the gradcheck draws the same mask.
static tensor *dp_fn(tensor **in, void *ctx) {
    dp_ctx *c = ctx;
    rng r;
    rng_seed(&r, c->seed);
    return op_drop_path(in[0], c->rate, true, &r);
}

static void test_drop_path(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 6);
    int B = 4000, D = 3;
    float rate = 0.3f;
    tensor *x = tu_leaf(&r, T_SHAPE(B, D), 0.5f, 1.5f);   // never 0, so drops show
    rng dr;
    rng_seed(&dr, 99);
    tensor *y = op_drop_path(x, rate, true, &dr);
    assert_ptr_not_equal(y, x);
    int kept = 0;
    for (int b = 0; b < B; b++) {
        bool k = y->data[b * D] != 0;
        kept += k;
        for (int j = 0; j < D; j++) {   // one decision per sample, exact scaling
            float want = k ? x->data[b * D + j] / (1.0f - rate) : 0.0f;
            assert_true(fabsf(y->data[b * D + j] - want) <= 1e-6f * fabsf(want));
        }
    }
    double frac = (double)kept / B, sd = sqrt(rate * (1 - rate) / B);
    if (fabs(frac - (1 - rate)) > 4.5 * sd)
        fail_msg("drop_path kept %.4f, expected %.2f +- %.4f", frac, 1 - rate, 4.5 * sd);
    // Backward: the same mask and scale.
    tensor *gy = tu_rand(&r, T_SHAPE(B, D), -1, 1);
    ag_backward_seed(y, gy->data);
    for (int64_t i = 0; i < x->numel; i++) {
        float f = y->data[i] / x->data[i];
        assert_true(fabsf(x->grad[i] - f * gy->data[i]) <= 1e-6f);
    }
    // Identity in eval or at rate 0 (the same tensor, nothing drawn).
    rng before = dr;
    assert_ptr_equal(op_drop_path(x, rate, false, &dr), x);
    assert_ptr_equal(op_drop_path(x, 0.0f, true, &dr), x);
    assert_memory_equal(&before, &dr, sizeof dr);
    // Same seed, same mask.
    rng a, b2;
    rng_seed(&a, 7);
    rng_seed(&b2, 7);
    tensor *y1 = op_drop_path(x, rate, true, &a), *y2 = op_drop_path(x, rate, true, &b2);
    assert_memory_equal(y1->data, y2->data, (size_t)x->numel * sizeof(float));
    ag_step_reset();
    // Per-sample on 4-D tensors, gradcheck with a fixed mask.
    tensor *in[1] = {tu_leaf(&r, T_SHAPE(6, 2, 3, 3), -1, 1)};
    dp_ctx c = {0.5f, 3};
    assert_int_equal(tu_gradcheck("drop_path", dp_fn, &c, 1, in, GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE), 0);
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// Cross entropy

typedef struct ce_ctx {
    const int64_t *target;
    float s;
} ce_ctx;

static tensor *ce_fn(tensor **in, void *ctx) {
    ce_ctx *c = ctx;
    return op_cross_entropy(in[0], c->target, c->s);
}

static void test_cross_entropy_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 8);
    int64_t target[6] = {0, 6, 3, 3, 1, 5};
    float smooth[2] = {0.0f, 0.2f};
    int Bs[3] = {6, 1, 3};
    for (int bi = 0; bi < 3; bi++)
        for (int si = 0; si < 2; si++) {
            tensor *in[1] = {tu_leaf(&r, T_SHAPE(Bs[bi], 7), -3, 3)};
            ce_ctx c = {target, smooth[si]};
            tensor *y = ce_fn(in, &c);
            assert_int_equal(y->numel, 1);
            // The formula, in double.
            double want = 0;
            for (int b = 0; b < Bs[bi]; b++) {
                const float *x = in[0]->data + b * 7;
                double se = 0, sx = 0;
                for (int k = 0; k < 7; k++) se += exp(x[k]), sx += x[k];
                double lse = log(se);
                want += (1 - smooth[si]) * (lse - x[target[b]]) + smooth[si] * (lse - sx / 7);
            }
            want /= Bs[bi];
            assert_true(fabs(y->data[0] - want) < 1e-5 * (1 + fabs(want)));
            ag_step_reset();
            char name[64];
            snprintf(name, sizeof name, "cross_entropy B %d s %.1f", Bs[bi], smooth[si]);
            in[0] = tu_leaf(&r, T_SHAPE(Bs[bi], 7), -3, 3);
            assert_int_equal(
                tu_gradcheck(name, ce_fn, &c, 1, in, GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE), 0);
            ag_step_reset();
        }
}

// A target out of range is a programmer error: abort naming the index.
static void test_cross_entropy_bad_target(void **state) {
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        float xs[6] = {0};
        tensor *x = tensor_from(T_SHAPE(2, 3), xs);
        int64_t t[2] = {1, 3};
        op_cross_entropy(x, t, 0.0f);
        _exit(0);
    }
    close(fds[1]);
    char buf[1024] = {0};
    size_t got = 0;
    ssize_t k;
    while (got < sizeof buf - 1 && (k = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)k;
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    if (!strstr(buf, "target[1] = 3"))
        fail_msg("message does not name the index: %s", buf);
}

// ---------------------------------------------------------------------------
// Accumulation


static void test_each_op_accumulates(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 10);
    for (int lg = 0; lg < 2; lg++) {
        tensor *in[1] = {tu_leaf(&r, T_SHAPE(3, 5), -2, 2)};
        tu_check_accumulates(lg ? "log_softmax" : "softmax", softmax_fn, &lg, 1, in);
    }
    tensor *ln[3] = {tu_leaf(&r, T_SHAPE(3, 6), -1, 1), tu_leaf(&r, T_SHAPE(6), 0.5f, 1.5f),
                     tu_leaf(&r, T_SHAPE(6), -1, 1)};
    tu_check_accumulates("layernorm", ln_fn, &(ln_ctx){1e-5f, true, true}, 3, ln);
    for (int training = 0; training < 2; training++) {
        tensor *in[3] = {tu_leaf(&r, T_SHAPE(3, 2, 4), -1, 2), tu_leaf(&r, T_SHAPE(2), 0.5f, 1.5f),
                         tu_leaf(&r, T_SHAPE(2), -1, 1)};
        tensor *rm = tu_rand(&r, T_SHAPE(2), -1, 1), *rv = tu_rand(&r, T_SHAPE(2), 0.5f, 2);
        bn_ctx c = {{NULL, NULL, rm, rv, NULL, training, 0.1f, 1e-5f, NULL}, true};
        tu_check_accumulates(training ? "batchnorm train" : "batchnorm eval", bn_fn, &c, 3, in);
    }
    tensor *dp[1] = {tu_leaf(&r, T_SHAPE(8, 3), -1, 1)};
    tu_check_accumulates("drop_path", dp_fn, &(dp_ctx){0.25f, 4}, 1, dp);
    int64_t target[3] = {2, 0, 4};
    tensor *ce[1] = {tu_leaf(&r, T_SHAPE(3, 5), -2, 2)};
    tu_check_accumulates("cross_entropy", ce_fn, &(ce_ctx){target, 0.2f}, 1, ce);
    ag_step_reset();
}

static void test_norm_backward_accumulates(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 9);
    tensor *x = tu_leaf(&r, T_SHAPE(4, 3, 5), -1, 1);
    tensor *lw = tu_leaf(&r, T_SHAPE(3), 0.5f, 1.5f), *lb = tu_leaf(&r, T_SHAPE(3), -1, 1);
    tensor *bw = tu_leaf(&r, T_SHAPE(3), 0.5f, 1.5f), *bb = tu_leaf(&r, T_SHAPE(3), -1, 1);
    int64_t target[4] = {1, 0, 2, 2};
    tensor *leaves[5] = {x, lw, lb, bw, bb};
    float first[5][60];
    for (int pass = 0; pass < 2; pass++) {
        bn_args a = {bw, bb, NULL, NULL, NULL, true, 0.1f, 1e-5f, NULL};
        tensor *h = op_batchnorm(x, &a);            // [4, 3, 5]
        // Layer norm across the channels: a per-channel affine does not cancel.
        h = op_transpose(h, 1, 2);                  // [4, 5, 3]
        h = op_layernorm(h, lw, lb, 1e-6f);
        h = op_add(op_softmax(h), op_log_softmax(h));
        rng dr;
        rng_seed(&dr, 5);
        h = op_drop_path(h, 0.25f, true, &dr);
        h = op_mean(h, 1, false);                   // [4, 3]
        tensor *loss = op_cross_entropy(h, target, 0.2f);
        ag_backward(loss);
        if (pass == 0)
            for (int i = 0; i < 5; i++)
                memcpy(first[i], leaves[i]->grad, (size_t)leaves[i]->numel * sizeof(float));
    }
    for (int i = 0; i < 5; i++) {
        double n = 0;
        for (int64_t j = 0; j < leaves[i]->numel; j++) {
            float g1 = first[i][j];
            n += fabsf(g1);
            assert_true(fabsf(leaves[i]->grad[j] - 2 * g1) <= 1e-7f + 1e-5f * fabsf(g1));
        }
        if (!(n > 1e-3 * leaves[i]->numel)) fail_msg("leaf %d: gradient too small (%g)", i, n);
    }
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// PyTorch fixture

static tensor *fx_get(hid_t f, const char *group, const char *name, bool grad) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", group, name);
    tensor *t = tu_fixture_tensor(f, path);
    t->requires_grad = grad;
    return t;
}

static void fx_close(hid_t f, const char *group, const char *name, const tensor *got,
                     const float *data, double tol) {
    tensor *want = fx_get(f, group, name, false);
    char what[160];
    snprintf(what, sizeof what, "%s/%s", group, name);
    tu_expect_close(what, got, data, want, tol);
}

static void fx_seed(hid_t f, const char *group, tensor *y) {
    tensor *gy = fx_get(f, group, "gy", false);
    assert_int_equal(gy->numel, y->numel);
    ag_backward_seed(y, gy->data);
}

static void test_fixture_softmax(void **state) {
    (void)state;
    hid_t f = tu_fixture_open("ops_basic.h5");
    static const char *cases[] = {"a", "b3d", "large"};
    for (int lg = 0; lg < 2; lg++)
        for (int c = 0; c < 3; c++) {
            char g[64];
            snprintf(g, sizeof g, "%s/%s", lg ? "log_softmax" : "softmax", cases[c]);
            tensor *x = fx_get(f, g, "x", true);
            tensor *y = lg ? op_log_softmax(x) : op_softmax(x);
            fx_close(f, g, "y", y, y->data, FX_FWD_TOL);
            fx_seed(f, g, y);
            fx_close(f, g, "gx", x, x->grad, FX_BWD_TOL);
            ag_step_reset();
        }
    h5_close(f);
}

static void test_fixture_layernorm(void **state) {
    (void)state;
    hid_t f = tu_fixture_open("ops_basic.h5");
    for (int aff = 1; aff >= 0; aff--) {
        const char *g = aff ? "layernorm/affine" : "layernorm/plain";
        tensor *x = fx_get(f, g, "x", true);
        tensor *w = aff ? fx_get(f, g, "w", true) : NULL, *b = aff ? fx_get(f, g, "b", true) : NULL;
        float eps = fx_get(f, g, "cfg", false)->data[0];
        tensor *y = op_layernorm(x, w, b, eps);
        fx_close(f, g, "y", y, y->data, FX_FWD_TOL);
        fx_seed(f, g, y);
        fx_close(f, g, "gx", x, x->grad, FX_BWD_TOL);
        if (aff) {
            fx_close(f, g, "gw", w, w->grad, FX_BWD_TOL);
            fx_close(f, g, "gb", b, b->grad, FX_BWD_TOL);
        }
        ag_step_reset();
    }
    h5_close(f);
}

static void test_fixture_batchnorm(void **state) {
    (void)state;
    hid_t f = tu_fixture_open("ops_basic.h5");
    static const char *cases[] = {"train2d", "train1d", "train1d_l", "train_noaffine",
                                  "eval2d", "eval1d"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char g[64];
        snprintf(g, sizeof g, "batchnorm/%s", cases[c]);
        const float *cfg = fx_get(f, g, "cfg", false)->data;
        bool training = cfg[0] != 0, affine = cfg[1] != 0;
        tensor *x = fx_get(f, g, "x", true);
        tensor *w = affine ? fx_get(f, g, "w", true) : NULL;
        tensor *b = affine ? fx_get(f, g, "b", true) : NULL;
        tensor *rm = fx_get(f, g, "rm", false), *rv = fx_get(f, g, "rv", false);
        int64_t nbt = 0;
        bn_args a = {w, b, rm, rv, &nbt, training, cfg[2], cfg[3], NULL};
        tensor *y = op_batchnorm(x, &a);
        assert_int_equal(nbt, training ? 1 : 0);
        fx_close(f, g, "y", y, y->data, FX_FWD_TOL);
        fx_close(f, g, "rm_out", rm, rm->data, 1e-5);
        fx_close(f, g, "rv_out", rv, rv->data, 1e-5);
        fx_seed(f, g, y);
        fx_close(f, g, "gx", x, x->grad, FX_BWD_TOL);
        if (affine) {
            fx_close(f, g, "gw", w, w->grad, FX_BWD_TOL);
            fx_close(f, g, "gb", b, b->grad, FX_BWD_TOL);
        }
        ag_step_reset();
    }
    h5_close(f);
}

static void test_fixture_cross_entropy(void **state) {
    (void)state;
    hid_t f = tu_fixture_open("ops_basic.h5");
    static const char *cases[] = {"s0", "s02", "b1", "big"};
    for (int c = 0; c < 4; c++) {
        char g[64], p[96];
        snprintf(g, sizeof g, "cross_entropy/%s", cases[c]);
        tensor *x = fx_get(f, g, "x", true);
        snprintf(p, sizeof p, "%s/target", g);
        int64_t n = 0;
        int64_t *t = tu_fixture_int64(f, p, &n);
        assert_int_equal(n, x->shape[0]);
        float s = fx_get(f, g, "cfg", false)->data[0];
        tensor *y = op_cross_entropy(x, t, s);
        free(t);   // the op keeps its own copy
        fx_close(f, g, "y", y, y->data, FX_FWD_TOL);
        fx_seed(f, g, y);
        fx_close(f, g, "gx", x, x->grad, FX_BWD_TOL);
        ag_step_reset();
    }
    h5_close(f);
}

static int teardown(void **state) {
    (void)state;
    ag_step_reset();
    return 0;
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_softmax_gradcheck, teardown),
        cmocka_unit_test_teardown(test_softmax_stable, teardown),
        cmocka_unit_test_teardown(test_layernorm_gradcheck, teardown),
        cmocka_unit_test_teardown(test_batchnorm_gradcheck, teardown),
        cmocka_unit_test_teardown(test_batchnorm_running_stats, teardown),
        cmocka_unit_test_teardown(test_batchnorm_large, teardown),
        cmocka_unit_test_teardown(test_drop_path, teardown),
        cmocka_unit_test_teardown(test_cross_entropy_gradcheck, teardown),
        cmocka_unit_test_teardown(test_cross_entropy_bad_target, teardown),
        cmocka_unit_test_teardown(test_norm_backward_accumulates, teardown),
        cmocka_unit_test_teardown(test_each_op_accumulates, teardown),
        cmocka_unit_test_teardown(test_fixture_softmax, teardown),
        cmocka_unit_test_teardown(test_fixture_layernorm, teardown),
        cmocka_unit_test_teardown(test_fixture_batchnorm, teardown),
        cmocka_unit_test_teardown(test_fixture_cross_entropy, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
