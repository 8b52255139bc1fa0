// Elementwise, broadcasting, activation and shape ops (autograd/ops_basic.c):
// finite-difference gradients, the parallel paths against naive loops, the
// PyTorch fixture (tests/fixtures/ops_basic.h5), view semantics of reshape and
// gradient accumulation.
//
// Tolerances:
//   - gradcheck: eps 1e-2, |num - ana| <= 2e-3 + 1e-2 |num|. add/sub/mul/scale,
//     the shape ops, mean and subsample are linear in each input, so central
//     differences are exact up to float32 rounding of the forward (~1e-6 of L,
//     divided by 2 eps ~ 1e-4). sigmoid and gelu have truncation error
//     eps^2 |f'''| / 6 < 1e-4. relu/prelu inputs are kept >= 0.05 from the kink
//     (> eps), so they are piecewise linear there.
//   - fast vs naive (large shapes, OpenMP paths): forward exact (same float
//     operation), backward <= 1e-5 relative to max |ref| (double vs float sums).
//   - fixtures: forward <= 1e-4, gradients <= 1e-3 (relative to max |ref|).
#include "test_util.h"

#define GC_EPS 1e-2
#define GC_ATOL 2e-3
#define GC_RTOL 1e-2
#define GC_PROBE 40

#define FX_FWD_TOL 1e-4
#define FX_BWD_TOL 1e-3

// Moves every element at least `margin` away from 0 (keeps ReLU off its kink).
static void push_from_zero(tensor *t, float margin) {
    for (int64_t i = 0; i < t->numel; i++) {
        float v = t->data[i];
        if (fabsf(v) < margin) t->data[i] = v < 0 ? v - margin : v + margin;
    }
}

typedef struct op_ctx {
    int kind;
    int iv[T_MAXDIM + 1];
    float fv;
} op_ctx;

enum { K_ADD, K_SUB, K_MUL };

static tensor *binary_fn(tensor **in, void *ctx) {
    op_ctx *c = ctx;
    if (c->kind == K_ADD) return op_add(in[0], in[1]);
    if (c->kind == K_SUB) return op_sub(in[0], in[1]);
    return op_mul(in[0], in[1]);
}

static const char *kind_name[] = {"add", "sub", "mul"};

// ---------------------------------------------------------------------------
// Broadcasting

typedef struct bshape {
    const char *name;
    int na, sa[T_MAXDIM], nb, sb[T_MAXDIM];
    int ny, sy[T_MAXDIM];   // expected output shape
} bshape;

static const bshape BSHAPES[] = {
    {"same", 4, {2, 3, 4, 5}, 4, {2, 3, 4, 5}, 4, {2, 3, 4, 5}},
    {"per-channel", 4, {2, 3, 4, 5}, 4, {1, 3, 1, 1}, 4, {2, 3, 4, 5}},
    {"per-channel [C,1,1]", 4, {2, 3, 4, 5}, 3, {3, 1, 1}, 4, {2, 3, 4, 5}},
    {"per-row", 3, {2, 5, 3}, 1, {3}, 3, {2, 5, 3}},
    {"per-sample", 3, {2, 3, 4}, 3, {2, 1, 1}, 3, {2, 3, 4}},
    {"scalar [1]", 2, {3, 4}, 1, {1}, 2, {3, 4}},
    {"scalar ndim 0", 2, {3, 5}, 0, {0}, 2, {3, 5}},
    {"scalar left", 0, {0}, 3, {2, 3, 1}, 3, {2, 3, 1}},
    {"both sides", 3, {3, 1, 5}, 3, {1, 4, 1}, 3, {3, 4, 5}},
    {"broadcast left", 4, {1, 3, 1, 1}, 4, {2, 3, 4, 5}, 4, {2, 3, 4, 5}},
    {"five dims", 5, {2, 1, 3, 1, 2}, 5, {1, 2, 1, 3, 1}, 5, {2, 2, 3, 3, 2}},
    {"batch 1", 3, {1, 7, 3}, 2, {7, 1}, 3, {1, 7, 3}},
    {"odd", 3, {3, 5, 7}, 2, {5, 1}, 3, {3, 5, 7}},
    {"pos-embed", 3, {2, 5, 3}, 3, {1, 5, 3}, 3, {2, 5, 3}},
    {"both scalar", 1, {1}, 0, {0}, 1, {1}},
    {"ndim 0 pair", 0, {0}, 0, {0}, 0, {0}},
};
#define N_BSHAPES (int)(sizeof BSHAPES / sizeof BSHAPES[0])

static void test_binary_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 1);
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < N_BSHAPES; s++) {
            const bshape *b = &BSHAPES[s];
            tensor *in[2] = {tu_leaf(&r, b->na, b->sa, -1, 1), tu_leaf(&r, b->nb, b->sb, -1, 1)};
            op_ctx c = {.kind = k};
            char name[96];
            snprintf(name, sizeof name, "%s %s", kind_name[k], b->name);
            tensor *y = binary_fn(in, &c);
            assert_int_equal(y->ndim, b->ny);
            for (int i = 0; i < b->ny; i++) assert_int_equal(y->shape[i], b->sy[i]);
            ag_step_reset();
            in[0] = tu_leaf(&r, b->na, b->sa, -1, 1);
            in[1] = tu_leaf(&r, b->nb, b->sb, -1, 1);
            assert_int_equal(tu_gradcheck(name, binary_fn, &c, 2, in, GC_EPS, GC_ATOL,
                                          GC_RTOL, GC_PROBE),
                             0);
            ag_step_reset();
        }
}

// Naive broadcast: out index -> a/b index through right-aligned coordinates.
static int64_t bidx(const tensor *t, int ny, const int *sy, int64_t i) {
    int coord[T_MAXDIM];
    for (int d = ny - 1; d >= 0; d--) {
        coord[d] = (int)(i % sy[d]);
        i /= sy[d];
    }
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        int c = coord[d + ny - t->ndim];
        off = off * t->shape[d] + (t->shape[d] == 1 ? 0 : c);
    }
    return off;
}

// Large shapes take the OpenMP paths; compare with the naive definition.
static void test_binary_large_vs_naive(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 2);
    static const bshape big[] = {
        {"same", 4, {4, 32, 16, 17}, 4, {4, 32, 16, 17}, 0, {0}},
        {"per-channel", 4, {4, 32, 16, 17}, 4, {1, 32, 1, 1}, 0, {0}},
        {"per-row", 3, {8, 50, 130}, 1, {130}, 0, {0}},
        {"pos-embed", 3, {8, 50, 130}, 3, {1, 50, 130}, 0, {0}},
        {"per-sample", 4, {9, 8, 30, 31}, 4, {9, 1, 1, 1}, 0, {0}},
        {"scalar", 1, {70001}, 0, {0}, 0, {0}},
        {"left", 4, {1, 32, 1, 17}, 4, {4, 32, 16, 17}, 0, {0}},
    };
    for (int k = 0; k < 3; k++)
        for (size_t s = 0; s < sizeof big / sizeof big[0]; s++) {
            const bshape *b = &big[s];
            tensor *in[2] = {tu_leaf(&r, b->na, b->sa, -1, 1), tu_leaf(&r, b->nb, b->sb, -1, 1)};
            op_ctx c = {.kind = k};
            tensor *y = binary_fn(in, &c);
            tensor *gy = tu_rand(&r, y->ndim, y->shape, -1, 1);
            ag_backward_seed(y, gy->data);
            double *ga = calloc((size_t)in[0]->numel, sizeof(double));
            double *gb = calloc((size_t)in[1]->numel, sizeof(double));
            int64_t bad = 0;
            for (int64_t i = 0; i < y->numel; i++) {
                int64_t ia = bidx(in[0], y->ndim, y->shape, i);
                int64_t ib = bidx(in[1], y->ndim, y->shape, i);
                float av = in[0]->data[ia], bv = in[1]->data[ib];
                float want = k == K_ADD ? av + bv : k == K_SUB ? av - bv : av * bv;
                if (y->data[i] != want) bad++;
                double g = gy->data[i];
                ga[ia] += k == K_MUL ? g * bv : g;
                gb[ib] += k == K_MUL ? g * av : k == K_SUB ? -g : g;
            }
            if (bad) fail_msg("%s %s: %lld forward mismatches", kind_name[k], b->name,
                              (long long)bad);
            float *fa = malloc((size_t)in[0]->numel * sizeof(float));
            float *fb = malloc((size_t)in[1]->numel * sizeof(float));
            for (int64_t i = 0; i < in[0]->numel; i++) fa[i] = (float)ga[i];
            for (int64_t i = 0; i < in[1]->numel; i++) fb[i] = (float)gb[i];
            double ea = tu_rel_err(in[0]->grad, fa, in[0]->numel, 1e-6);
            double eb = tu_rel_err(in[1]->grad, fb, in[1]->numel, 1e-6);
            if (ea > 1e-5 || eb > 1e-5)
                fail_msg("%s %s: grad error a %.3g b %.3g", kind_name[k], b->name, ea, eb);
            free(ga), free(gb), free(fa), free(fb);
            ag_step_reset();
        }
}

// The same tensor on both sides: both contributions must add up.
static tensor *square_fn(tensor **in, void *ctx) {
    (void)ctx;
    return op_mul(in[0], in[0]);
}

static void test_binary_aliased(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 3);
    tensor *in[1] = {tu_leaf(&r, T_SHAPE(3, 4), -1, 1)};
    assert_int_equal(
        tu_gradcheck("x * x", square_fn, NULL, 1, in, GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE), 0);
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// Unary ops

enum { U_SCALE, U_RELU, U_SIGMOID, U_GELU, U_PRELU };

static tensor *unary_fn(tensor **in, void *ctx) {
    op_ctx *c = ctx;
    switch (c->kind) {
    case U_SCALE: return op_scale(in[0], c->fv);
    case U_RELU: return op_relu(in[0]);
    case U_SIGMOID: return op_sigmoid(in[0]);
    case U_GELU: return op_gelu(in[0]);
    default: return op_prelu(in[0], in[1]);
    }
}

static void test_unary_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 4);
    static const int shapes[][5] = {{2, 3, 4}, {1, 7, 0}, {3, 3, 5}, {1, 1, 0}};
    for (int k = U_SCALE; k <= U_GELU; k++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            tensor *in[1] = {tu_leaf(&r, shapes[s][0], &shapes[s][1], -3, 3)};
            if (k == U_RELU) push_from_zero(in[0], 0.05f);
            op_ctx c = {.kind = k, .fv = -1.75f};
            char name[64];
            snprintf(name, sizeof name, "unary %d shape %zu", k, s);
            assert_int_equal(tu_gradcheck(name, unary_fn, &c, 1, in, GC_EPS, GC_ATOL,
                                          GC_RTOL, GC_PROBE),
                             0);
            ag_step_reset();
        }
}

static void test_prelu_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 5);
    static const int shapes[][5] = {{4, 2, 3, 4, 5}, {4, 1, 5, 3, 3}, {2, 4, 6},
                                    {2, 1, 3}, {3, 2, 3, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int C = shapes[s][2];
        tensor *in[2] = {tu_leaf(&r, shapes[s][0], &shapes[s][1], -2, 2),
                         tu_leaf(&r, T_SHAPE(C), 0, 0.5f)};
        push_from_zero(in[0], 0.05f);
        op_ctx c = {.kind = U_PRELU};
        assert_int_equal(
            tu_gradcheck("prelu", unary_fn, &c, 2, in, GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE), 0);
        ag_step_reset();
    }
}

// GELU matches the erf definition pointwise, including far tails.
static void test_gelu_values(void **state) {
    (void)state;
    float xs[] = {-10, -3, -1, -0.5f, 0, 0.5f, 1, 3, 10};
    tensor *x = tensor_from(T_SHAPE(9), xs);
    tensor *y = op_gelu(x);
    for (int i = 0; i < 9; i++) {
        double want = 0.5 * xs[i] * (1 + erf(xs[i] / sqrt(2.0)));
        assert_true(fabs(y->data[i] - want) <= 1e-6 + 1e-6 * fabs(want));
    }
    ag_step_reset();
}

// Large PReLU (OpenMP path) against the definition, including the weight sum.
static void test_prelu_large(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 6);
    tensor *x = tu_leaf(&r, T_SHAPE(4, 16, 24, 25), -1, 1);
    tensor *w = tu_leaf(&r, T_SHAPE(16), 0, 0.5f);
    tensor *y = op_prelu(x, w);
    tensor *gy = tu_rand(&r, y->ndim, y->shape, -1, 1);
    ag_backward_seed(y, gy->data);
    double gw[16] = {0};
    int64_t S = 24 * 25;
    for (int64_t i = 0; i < x->numel; i++) {
        int c = (int)((i / S) % 16);
        float v = x->data[i];
        assert_true(y->data[i] == (v > 0 ? v : w->data[c] * v));
        assert_true(x->grad[i] == (v > 0 ? gy->data[i] : w->data[c] * gy->data[i]));
        if (!(v > 0)) gw[c] += (double)gy->data[i] * v;
    }
    for (int c = 0; c < 16; c++) assert_true(fabs(w->grad[c] - gw[c]) <= 1e-4 * (1 + fabs(gw[c])));
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// Shape ops

enum { S_RESHAPE, S_PERMUTE, S_TRANSPOSE, S_SLICE, S_MEAN, S_SUBSAMPLE, S_CHAIN };

static tensor *shape_fn(tensor **in, void *ctx) {
    op_ctx *c = ctx;
    switch (c->kind) {
    case S_RESHAPE: return op_reshape(in[0], c->iv[0], &c->iv[1]);
    case S_PERMUTE: return op_permute(in[0], c->iv);
    case S_TRANSPOSE: return op_transpose(in[0], c->iv[0], c->iv[1]);
    case S_SLICE: return op_slice(in[0], c->iv[0], c->iv[1], c->iv[2]);
    case S_MEAN: return op_mean(in[0], c->iv[0], c->iv[1]);
    case S_SUBSAMPLE: return op_subsample(in[0], c->iv[0]);
    default: {
        // A view between two recorded ops: sigmoid -> reshape -> mul(w) -> reshape.
        tensor *h = op_sigmoid(in[0]);
        tensor *v = op_reshape(h, T_SHAPE(-1, 4));
        tensor *m = op_mul(v, in[1]);
        return op_reshape(m, in[0]->ndim, in[0]->shape);
    }
    }
}

static void check_shape_op(rng *r, const char *name, op_ctx c, int nd, const int *shape) {
    tensor *in[1] = {tu_leaf(r, nd, shape, -1, 1)};
    int bad = tu_gradcheck(name, shape_fn, &c, 1, in, GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE);
    if (bad) fail_msg("%s: %d bad gradients", name, bad);
    ag_step_reset();
}

static void test_shape_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 7);
    check_shape_op(&r, "reshape", (op_ctx){S_RESHAPE, {2, 6, 4}, 0}, T_SHAPE(2, 3, 4));
    check_shape_op(&r, "reshape -1", (op_ctx){S_RESHAPE, {3, 3, -1, 1}, 0}, T_SHAPE(3, 5));
    check_shape_op(&r, "permute 4d", (op_ctx){S_PERMUTE, {0, 2, 3, 1}, 0}, T_SHAPE(2, 3, 4, 5));
    check_shape_op(&r, "permute 4d b", (op_ctx){S_PERMUTE, {3, 1, 2, 0}, 0}, T_SHAPE(2, 3, 4, 5));
    check_shape_op(&r, "permute 5d", (op_ctx){S_PERMUTE, {4, 2, 0, 3, 1}, 0},
                   T_SHAPE(2, 1, 3, 2, 3));
    check_shape_op(&r, "permute identity", (op_ctx){S_PERMUTE, {0, 1, 2}, 0}, T_SHAPE(3, 1, 5));
    check_shape_op(&r, "permute 2d", (op_ctx){S_PERMUTE, {1, 0}, 0}, T_SHAPE(3, 7));
    check_shape_op(&r, "transpose", (op_ctx){S_TRANSPOSE, {1, 2}, 0}, T_SHAPE(2, 3, 5));
    check_shape_op(&r, "transpose neg", (op_ctx){S_TRANSPOSE, {-1, 0}, 0}, T_SHAPE(3, 1, 4));
    check_shape_op(&r, "slice mid", (op_ctx){S_SLICE, {1, 1, 4}, 0}, T_SHAPE(2, 6, 3));
    check_shape_op(&r, "slice last", (op_ctx){S_SLICE, {2, 0, 2}, 0}, T_SHAPE(2, 6, 3));
    check_shape_op(&r, "slice first", (op_ctx){S_SLICE, {0, 3, 4}, 0}, T_SHAPE(4, 3));
    check_shape_op(&r, "mean ax1", (op_ctx){S_MEAN, {1, 0}, 0}, T_SHAPE(2, 3, 4));
    check_shape_op(&r, "mean ax2 keep", (op_ctx){S_MEAN, {2, 1}, 0}, T_SHAPE(2, 3, 5));
    check_shape_op(&r, "mean ax0", (op_ctx){S_MEAN, {0, 0}, 0}, T_SHAPE(5, 3));
    check_shape_op(&r, "mean batch1", (op_ctx){S_MEAN, {-1, 0}, 0}, T_SHAPE(1, 7));
    check_shape_op(&r, "subsample 2", (op_ctx){S_SUBSAMPLE, {2}, 0}, T_SHAPE(2, 3, 8, 6));
    check_shape_op(&r, "subsample odd", (op_ctx){S_SUBSAMPLE, {2}, 0}, T_SHAPE(1, 2, 7, 5));
    check_shape_op(&r, "subsample 3", (op_ctx){S_SUBSAMPLE, {3}, 0}, T_SHAPE(1, 1, 7, 6));
}

static tensor *concat_fn(tensor **in, void *ctx) {
    op_ctx *c = ctx;
    return op_concat(in, c->iv[1], c->iv[0]);
}

static void test_concat_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 8);
    // axis 1 of three; axis 0; last axis; five inputs (more than the tape's
    // TAPE_MAX_IN, which the saved list must cover).
    tensor *a[3] = {tu_leaf(&r, T_SHAPE(2, 3, 4), -1, 1), tu_leaf(&r, T_SHAPE(2, 1, 4), -1, 1),
                    tu_leaf(&r, T_SHAPE(2, 2, 4), -1, 1)};
    assert_int_equal(tu_gradcheck("concat ax1", concat_fn, &(op_ctx){0, {1, 3}, 0}, 3, a,
                                  GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE),
                     0);
    tensor *b[2] = {tu_leaf(&r, T_SHAPE(1, 3), -1, 1), tu_leaf(&r, T_SHAPE(2, 3), -1, 1)};
    assert_int_equal(tu_gradcheck("concat ax0", concat_fn, &(op_ctx){0, {0, 2}, 0}, 2, b,
                                  GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE),
                     0);
    tensor *c[5];
    int widths[5] = {1, 2, 1, 3, 1};
    for (int i = 0; i < 5; i++) c[i] = tu_leaf(&r, T_SHAPE(2, 3, widths[i]), -1, 1);
    c[2]->requires_grad = false;   // a constant in the middle gets no gradient
    assert_int_equal(tu_gradcheck("concat five", concat_fn, &(op_ctx){0, {-1, 5}, 0}, 5, c,
                                  GC_EPS, GC_ATOL, GC_RTOL, GC_PROBE),
                     0);
    assert_null(c[2]->grad);
    ag_step_reset();
}

static void test_shape_chain_view(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 9);
    tensor *in[2] = {tu_leaf(&r, T_SHAPE(2, 3, 4), -2, 2), tu_leaf(&r, T_SHAPE(6, 4), -1, 1)};
    assert_int_equal(tu_gradcheck("sigmoid-reshape-mul-reshape", shape_fn,
                                  &(op_ctx){S_CHAIN, {0}, 0}, 2, in, GC_EPS, GC_ATOL, GC_RTOL,
                                  GC_PROBE),
                     0);
    ag_step_reset();
    // A reshape shares data, records nothing, and its gradient is its base's.
    tensor *x = tu_leaf(&r, T_SHAPE(2, 3, 4), -1, 1);
    tensor *h = op_scale(x, 2.0f);
    int len = ag_tape_len();
    tensor *v = op_reshape(h, T_SHAPE(4, 6));
    assert_int_equal(ag_tape_len(), len);
    assert_ptr_equal(v->data, h->data);
    assert_true(v->requires_grad);
    assert_ptr_equal(tensor_grad(v), tensor_grad(h));
    tensor *vv = op_reshape(v, T_SHAPE(24));   // a view of a view
    assert_ptr_equal(tensor_grad(vv), h->grad);
    tensor *y = op_mul(vv, vv);
    float seed[24];
    for (int i = 0; i < 24; i++) seed[i] = 1.0f;
    ag_backward_seed(y, seed);
    // d/dx sum((2x)^2) = 8x
    for (int i = 0; i < 24; i++) assert_true(fabsf(x->grad[i] - 8 * x->data[i]) <= 1e-5f);
    // Without grad a reshape of a constant stays a constant.
    tensor *k = tu_rand(&r, T_SHAPE(2, 3), -1, 1);
    assert_false(op_reshape(k, T_SHAPE(3, 2))->requires_grad);
    ag_step_reset();
}

// Large permute (OpenMP path) against index arithmetic, forward and backward.
static void test_permute_large(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 10);
    int shp[4] = {4, 20, 21, 22}, perm[4] = {0, 2, 3, 1};
    tensor *x = tu_leaf(&r, 4, shp, -1, 1);
    tensor *y = op_permute(x, perm);
    tensor *gy = tu_rand(&r, y->ndim, y->shape, -1, 1);
    ag_backward_seed(y, gy->data);
    int64_t bad = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 20; b++)
            for (int c = 0; c < 21; c++)
                for (int d = 0; d < 22; d++) {
                    int64_t xi = ((int64_t)(a * 20 + b) * 21 + c) * 22 + d;
                    int64_t yi = ((int64_t)(a * 21 + c) * 22 + d) * 20 + b;
                    if (y->data[yi] != x->data[xi] || x->grad[xi] != gy->data[yi]) bad++;
                }
    assert_int_equal(bad, 0);
    ag_step_reset();
}

// F.interpolate(size=H/2) nearest and x[:, :, ::2, ::2] pick the same pixels.
static void test_subsample_values(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 11);
    tensor *x = tu_rand(&r, T_SHAPE(2, 3, 224, 224), -1, 1);
    tensor *y = op_subsample(x, 2);
    assert_int_equal(y->shape[2], 112);
    assert_int_equal(y->shape[3], 112);
    for (int bc = 0; bc < 6; bc++)
        for (int i = 0; i < 112; i++)
            for (int j = 0; j < 112; j++)
                assert_true(y->data[((int64_t)bc * 112 + i) * 112 + j] ==
                            x->data[((int64_t)bc * 224 + 2 * i) * 224 + 2 * j]);
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// Accumulation: backward adds into existing gradients, never overwrites.

// Each op on its own, with leaves as inputs, so an overwrite cannot hide
// behind a fresh intermediate gradient buffer.
static void test_each_op_accumulates(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 14);
    for (int k = 0; k < 3; k++) {
        // both-sided broadcast: full-size and reduced gradients in one op
        tensor *in[2] = {tu_leaf(&r, T_SHAPE(2, 3, 1), -1, 1), tu_leaf(&r, T_SHAPE(1, 3, 4), -1, 1)};
        tu_check_accumulates(kind_name[k], binary_fn, &(op_ctx){.kind = k}, 2, in);
        tensor *same[2] = {tu_leaf(&r, T_SHAPE(5, 7), -1, 1), tu_leaf(&r, T_SHAPE(5, 7), -1, 1)};
        tu_check_accumulates(kind_name[k], binary_fn, &(op_ctx){.kind = k}, 2, same);
    }
    for (int k = U_SCALE; k <= U_PRELU; k++) {
        tensor *in[2] = {tu_leaf(&r, T_SHAPE(2, 3, 4), -2, 2), tu_leaf(&r, T_SHAPE(3), 0.1f, 0.5f)};
        push_from_zero(in[0], 0.05f);
        tu_check_accumulates("unary", unary_fn, &(op_ctx){.kind = k, .fv = 0.5f},
                          k == U_PRELU ? 2 : 1, in);
    }
    static const op_ctx shape_ops[] = {
        {S_PERMUTE, {2, 0, 3, 1}, 0}, {S_TRANSPOSE, {0, 2}, 0}, {S_SLICE, {1, 1, 3}, 0},
        {S_MEAN, {2, 0}, 0}, {S_SUBSAMPLE, {2}, 0}, {S_RESHAPE, {2, 4, 6}, 0}};
    for (size_t k = 0; k < sizeof shape_ops / sizeof shape_ops[0]; k++) {
        tensor *in[1] = {tu_leaf(&r, T_SHAPE(2, 3, 2, 2), -1, 1)};
        op_ctx c = shape_ops[k];
        tu_check_accumulates("shape op", shape_fn, &c, 1, in);
    }
    tensor *in2[2] = {tu_leaf(&r, T_SHAPE(2, 3, 4), -2, 2), tu_leaf(&r, T_SHAPE(6, 4), -1, 1)};
    tu_check_accumulates("view chain", shape_fn, &(op_ctx){S_CHAIN, {0}, 0}, 2, in2);
    tensor *cc[3] = {tu_leaf(&r, T_SHAPE(2, 1), -1, 1), tu_leaf(&r, T_SHAPE(2, 2), -1, 1),
                     tu_leaf(&r, T_SHAPE(2, 3), -1, 1)};
    tu_check_accumulates("concat", concat_fn, &(op_ctx){0, {1, 3}, 0}, 3, cc);
    ag_step_reset();
}


static void test_backward_accumulates(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 12);
    tensor *a = tu_leaf(&r, T_SHAPE(2, 3, 4), -1, 1);
    tensor *b = tu_leaf(&r, T_SHAPE(1, 3, 1), -1, 1);
    tensor *w = tu_leaf(&r, T_SHAPE(3), 0.1f, 0.4f);
    push_from_zero(a, 0.05f);
    // Every op of this file once; two backward passes must give twice the grads.
    float ga1[24], gb1[3], gw1[3];
    for (int pass = 0; pass < 2; pass++) {
        tensor *h = op_mul(op_add(a, b), op_sub(a, b));
        h = op_gelu(op_sigmoid(op_relu(op_scale(h, 1.5f))));
        tensor *p = op_prelu(op_sub(a, op_scale(b, 3.0f)), w);
        h = op_add(h, p);
        h = op_transpose(op_permute(h, (int[]){0, 2, 1}), 1, 2);
        tensor *parts[2] = {op_slice(h, 1, 0, 2), op_slice(h, 1, 1, 3)};
        h = op_concat(parts, 2, 1);
        h = op_mean(op_reshape(h, T_SHAPE(2, 4, 2, 2)), 1, false);
        h = op_subsample(op_reshape(h, T_SHAPE(2, 1, 2, 2)), 1);
        h = op_mean(op_reshape(h, T_SHAPE(8)), 0, false);
        ag_backward(h);
        if (pass == 0) {
            memcpy(ga1, a->grad, sizeof ga1);
            memcpy(gb1, b->grad, sizeof gb1);
            memcpy(gw1, w->grad, sizeof gw1);
        }
    }
    for (int i = 0; i < 24; i++) assert_true(fabsf(a->grad[i] - 2 * ga1[i]) <= 1e-6f + 1e-5f * fabsf(ga1[i]));
    for (int i = 0; i < 3; i++) assert_true(fabsf(b->grad[i] - 2 * gb1[i]) <= 1e-6f + 1e-5f * fabsf(gb1[i]));
    for (int i = 0; i < 3; i++) assert_true(fabsf(w->grad[i] - 2 * gw1[i]) <= 1e-6f + 1e-5f * fabsf(gw1[i]));
    // Something actually flowed.
    double n = 0;
    for (int i = 0; i < 24; i++) n += fabsf(ga1[i]);
    assert_true(n > 0);
    ag_step_reset();
}

// Ops on constants record nothing; in no-grad mode nothing records either.
static void test_no_record(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 13);
    tensor *k = tu_rand(&r, T_SHAPE(2, 3), -1, 1);
    tensor *x = tu_leaf(&r, T_SHAPE(2, 3), -1, 1);
    int len = ag_tape_len();
    assert_false(op_add(k, k)->requires_grad);
    assert_false(op_gelu(k)->requires_grad);
    assert_int_equal(ag_tape_len(), len);
    bool prev = ag_no_grad_begin();
    assert_false(op_mul(x, k)->requires_grad);
    assert_false(op_permute(x, (int[]){1, 0})->requires_grad);
    ag_no_grad_end(prev);
    assert_int_equal(ag_tape_len(), len);
    assert_true(op_mul(x, k)->requires_grad);
    assert_int_equal(ag_tape_len(), len + 1);
    ag_step_reset();
}

// ---------------------------------------------------------------------------
// PyTorch fixture

// Loads <group>/<name> marked as requiring grad.
static tensor *fx_in(hid_t f, const char *group, const char *name) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", group, name);
    tensor *t = tu_fixture_tensor(f, path);
    t->requires_grad = true;
    return t;
}

static void fx_expect(hid_t f, const char *group, const char *name, const tensor *got_shape,
                      const float *got, double tol) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", group, name);
    tensor *want = tu_fixture_tensor(f, path);
    tu_expect_close(path, got_shape, got, want, tol);
}

// Runs y = op(inputs), seeds gy and compares y and every g<input>.
typedef tensor *(*fx_op)(tensor **in, int n, const float *cfg);

static void fx_check(hid_t f, const char *group, int n, const char *const *names, fx_op op) {
    tensor *in[8];
    for (int i = 0; i < n; i++) in[i] = fx_in(f, group, names[i]);
    const float *cfg = NULL;
    char path[160];
    snprintf(path, sizeof path, "%s/cfg", group);
    if (h5_exists(f, path)) cfg = tu_fixture_tensor(f, path)->data;
    tensor *y = op(in, n, cfg);
    fx_expect(f, group, "y", y, y->data, FX_FWD_TOL);
    snprintf(path, sizeof path, "%s/gy", group);
    tensor *gy = tu_fixture_tensor(f, path);
    assert_int_equal(gy->numel, y->numel);
    ag_backward_seed(y, gy->data);
    for (int i = 0; i < n; i++) {
        char g[32];
        snprintf(g, sizeof g, "g%s", names[i]);
        fx_expect(f, group, g, in[i], in[i]->grad, FX_BWD_TOL);
    }
    ag_step_reset();
}

static tensor *fx_add(tensor **in, int n, const float *cfg) { (void)n, (void)cfg; return op_add(in[0], in[1]); }
static tensor *fx_sub(tensor **in, int n, const float *cfg) { (void)n, (void)cfg; return op_sub(in[0], in[1]); }
static tensor *fx_mul(tensor **in, int n, const float *cfg) { (void)n, (void)cfg; return op_mul(in[0], in[1]); }
static tensor *fx_scale(tensor **in, int n, const float *cfg) { (void)n; return op_scale(in[0], cfg[0]); }
static tensor *fx_relu(tensor **in, int n, const float *cfg) { (void)n, (void)cfg; return op_relu(in[0]); }
static tensor *fx_sigmoid(tensor **in, int n, const float *cfg) { (void)n, (void)cfg; return op_sigmoid(in[0]); }
static tensor *fx_gelu(tensor **in, int n, const float *cfg) { (void)n, (void)cfg; return op_gelu(in[0]); }
static tensor *fx_prelu(tensor **in, int n, const float *cfg) { (void)n, (void)cfg; return op_prelu(in[0], in[1]); }

static tensor *fx_reshape(tensor **in, int n, const float *cfg) {
    (void)n;
    // Through a recorded op so the view's gradient must reach the leaf via it.
    tensor *h = op_scale(in[0], 1.0f);
    return op_reshape(h, T_SHAPE((int)cfg[0], (int)cfg[1]));
}

static tensor *fx_permute(tensor **in, int n, const float *cfg) {
    (void)n;
    int perm[T_MAXDIM];
    for (int i = 0; i < in[0]->ndim; i++) perm[i] = (int)cfg[i];
    return op_permute(in[0], perm);
}

static tensor *fx_transpose(tensor **in, int n, const float *cfg) {
    (void)n;
    return op_transpose(in[0], (int)cfg[0], (int)cfg[1]);
}

static tensor *fx_concat(tensor **in, int n, const float *cfg) {
    assert_int_equal((int)cfg[1], n);
    return op_concat(in, n, (int)cfg[0]);
}

static tensor *fx_slice(tensor **in, int n, const float *cfg) {
    (void)n;
    return op_slice(in[0], (int)cfg[0], (int)cfg[1], (int)cfg[2]);
}

static tensor *fx_mean(tensor **in, int n, const float *cfg) {
    (void)n;
    return op_mean(in[0], (int)cfg[0], cfg[1] != 0);
}

static tensor *fx_subsample(tensor **in, int n, const float *cfg) {
    (void)n;
    return op_subsample(in[0], (int)cfg[0]);
}

static void test_fixture_ops_basic(void **state) {
    (void)state;
    hid_t f = tu_fixture_open("ops_basic.h5");
    int64_t version = 0;
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &version), 0);
    assert_int_equal(version, 1);
    static const char *const ab[] = {"a", "b"}, *const x[] = {"x"}, *const xw[] = {"x", "w"};
    static const char *const cases[] = {"same", "chan", "chan1d", "row", "sample", "scalar",
                                        "scalar0", "both", "left", "five", "batch1"};
    fx_op bin[3] = {fx_add, fx_sub, fx_mul};
    char g[96];
    for (int k = 0; k < 3; k++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            snprintf(g, sizeof g, "%s/%s", kind_name[k], cases[c]);
            fx_check(f, g, 2, ab, bin[k]);
        }
    fx_check(f, "scale/a", 1, x, fx_scale);
    fx_check(f, "relu/a", 1, x, fx_relu);
    fx_check(f, "sigmoid/a", 1, x, fx_sigmoid);
    fx_check(f, "gelu/a", 1, x, fx_gelu);
    fx_check(f, "prelu/4d", 2, xw, fx_prelu);
    fx_check(f, "prelu/2d", 2, xw, fx_prelu);
    fx_check(f, "reshape/a", 1, x, fx_reshape);
    static const char *const perms[] = {"p4", "p4b", "p3", "p5", "p2"};
    for (size_t c = 0; c < 5; c++) {
        snprintf(g, sizeof g, "permute/%s", perms[c]);
        fx_check(f, g, 1, x, fx_permute);
    }
    fx_check(f, "transpose/a", 1, x, fx_transpose);
    static const char *const xs[] = {"x0", "x1", "x2", "x3", "x4"};
    fx_check(f, "concat/ax1", 3, xs, fx_concat);
    fx_check(f, "concat/ax0", 2, xs, fx_concat);
    fx_check(f, "concat/axlast", 2, xs, fx_concat);
    fx_check(f, "concat/five", 5, xs, fx_concat);
    fx_check(f, "slice/mid", 1, x, fx_slice);
    fx_check(f, "slice/last", 1, x, fx_slice);
    fx_check(f, "slice/first", 1, x, fx_slice);
    fx_check(f, "mean/ax1", 1, x, fx_mean);
    fx_check(f, "mean/ax2keep", 1, x, fx_mean);
    fx_check(f, "mean/ax0", 1, x, fx_mean);
    fx_check(f, "subsample/interp", 1, x, fx_subsample);
    fx_check(f, "subsample/odd", 1, x, fx_subsample);
    fx_check(f, "subsample/s3", 1, x, fx_subsample);
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
        cmocka_unit_test_teardown(test_binary_gradcheck, teardown),
        cmocka_unit_test_teardown(test_binary_large_vs_naive, teardown),
        cmocka_unit_test_teardown(test_binary_aliased, teardown),
        cmocka_unit_test_teardown(test_unary_gradcheck, teardown),
        cmocka_unit_test_teardown(test_prelu_gradcheck, teardown),
        cmocka_unit_test_teardown(test_gelu_values, teardown),
        cmocka_unit_test_teardown(test_prelu_large, teardown),
        cmocka_unit_test_teardown(test_shape_gradcheck, teardown),
        cmocka_unit_test_teardown(test_concat_gradcheck, teardown),
        cmocka_unit_test_teardown(test_shape_chain_view, teardown),
        cmocka_unit_test_teardown(test_permute_large, teardown),
        cmocka_unit_test_teardown(test_subsample_values, teardown),
        cmocka_unit_test_teardown(test_backward_accumulates, teardown),
        cmocka_unit_test_teardown(test_each_op_accumulates, teardown),
        cmocka_unit_test_teardown(test_no_record, teardown),
        cmocka_unit_test_teardown(test_fixture_ops_basic, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
