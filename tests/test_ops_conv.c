// conv2d, conv1d and conv-transpose1d: finite-difference gradients over the
// configurations the network uses (and odd ones), every fast path (im2col,
// pointwise, depthwise, Winograd) against the naive loops on larger shapes in
// both threading regimes, and PyTorch fixtures.
//
// Tolerances:
//   - gradcheck: eps 1e-2, |num - ana| <= 2e-3 + 1e-2 |num|. Convolutions are
//     linear in each input, so central differences are exact up to float32
//     rounding of the forward (~1e-5 on L), divided by 2 eps.
//   - fast vs naive: max abs error <= 1e-4 of the reference's max |value|
//     (float32 sums of up to ~600 terms against double sums). Winograd
//     F(2x2) transforms use only 0, +-1, 1/2; F(4x4) (points 0, +-1, +-2)
//     multiplies by up to 8 and divides by 24, measured here at a few 1e-6,
//     within the same bound.
//   - fixtures: forward <= 1e-4, gradients <= 1e-3 (relative to max |ref|).
#include "autograd/ops_ref.h"
#include "test_util.h"

#define GC_EPS 1e-2
#define GC_ATOL 2e-3
#define GC_RTOL 1e-2

typedef struct conv_cfg {
    int B, Cin, H, W, Cout, k, stride, pad, groups, bias;
} conv_cfg;

static tensor *conv2d_fn(tensor **in, void *ctx) {
    conv_cfg *c = ctx;
    return op_conv2d(in[0], in[1], c->bias ? in[2] : NULL, c->stride, c->pad, c->groups);
}
static tensor *conv1d_fn(tensor **in, void *ctx) {
    conv_cfg *c = ctx;
    return op_conv1d(in[0], in[1], c->bias ? in[2] : NULL, c->stride);
}
static tensor *convt1d_fn(tensor **in, void *ctx) {
    conv_cfg *c = ctx;
    return op_conv_transpose1d(in[0], in[1], c->bias ? in[2] : NULL, c->stride);
}

static const conv_cfg k_conv2d_cases[] = {
    // B Cin H  W Cout k s p g bias
    {2, 3, 7, 6, 4, 3, 1, 1, 1, 1},   // 3x3 same padding, odd sizes
    {2, 3, 7, 6, 4, 3, 1, 1, 1, 0},
    {1, 3, 7, 7, 5, 3, 2, 1, 1, 0},   // stride 2, batch 1
    {3, 2, 8, 5, 3, 3, 2, 1, 1, 1},
    {2, 3, 6, 5, 2, 3, 1, 0, 1, 1},   // no padding
    {2, 2, 7, 8, 3, 3, 2, 0, 1, 0},
    {2, 4, 5, 5, 3, 1, 1, 0, 1, 0},   // 1x1 pointwise
    {1, 4, 5, 5, 3, 1, 1, 0, 1, 1},
    {2, 4, 7, 6, 5, 1, 2, 0, 1, 1},   // 1x1 stride 2 (subsampling)
    {2, 3, 5, 4, 3, 1, 1, 1, 1, 0},   // 1x1 with padding
    {2, 4, 6, 5, 6, 3, 1, 1, 2, 1},   // groups 2
    {1, 4, 7, 7, 2, 3, 2, 1, 2, 0},
    {2, 4, 5, 5, 4, 1, 1, 0, 2, 0},   // grouped pointwise
    {2, 5, 7, 6, 5, 3, 1, 1, 5, 0},   // depthwise
    {1, 5, 7, 7, 5, 3, 2, 1, 5, 1},   // depthwise stride 2, batch 1
    {3, 4, 8, 9, 4, 3, 2, 1, 4, 1},
    {2, 3, 5, 5, 3, 3, 1, 0, 3, 1},   // depthwise, no padding
    {2, 2, 5, 5, 4, 3, 1, 1, 2, 1},   // depthwise with multiplier 2 (general path)
};

static void run_conv2d_gradchecks(void) {
    rng r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < sizeof k_conv2d_cases / sizeof *k_conv2d_cases; i++) {
        conv_cfg c = k_conv2d_cases[i];
        tensor *in[3] = {tu_leaf(&r, T_SHAPE(c.B, c.Cin, c.H, c.W), -1, 1),
                         tu_leaf(&r, T_SHAPE(c.Cout, c.Cin / c.groups, c.k, c.k), -1, 1),
                         tu_leaf(&r, T_SHAPE(c.Cout), -1, 1)};
        char name[96];
        snprintf(name, sizeof name, "conv2d case %zu", i);
        int bad = tu_gradcheck(name, conv2d_fn, &c, c.bias ? 3 : 2, in, GC_EPS, GC_ATOL,
                               GC_RTOL, 60);
        assert_int_equal(bad, 0);
        tensor *y = conv2d_fn(in, &c);
        assert_int_equal(y->shape[2], (c.H + 2 * c.pad - c.k) / c.stride + 1);
        assert_int_equal(y->shape[3], (c.W + 2 * c.pad - c.k) / c.stride + 1);
        ag_step_reset();
    }
}

static void test_conv2d_gradcheck(void **state) {
    (void)state;
    for (int mode = 1; mode <= 2; mode++) {   // batch-parallel and threaded-sgemm paths
        conv_set_mode(mode);
        run_conv2d_gradchecks();
    }
    conv_set_mode(0);
}

// 3x3 stride 1 with >= 16 channels takes the Winograd path, with 4x4 tiles
// (edges cut: 5x6 output) and with 2x2 tiles.
static void test_conv2d_winograd_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 12);
    static const conv_cfg cases[] = {
        {2, 16, 5, 6, 16, 3, 1, 1, 1, 1},
        {1, 16, 7, 5, 17, 3, 1, 0, 1, 0},
        {2, 17, 4, 3, 16, 3, 1, 2, 1, 1},
        {1, 16, 9, 10, 16, 3, 1, 1, 1, 1},
    };
    for (size_t i = 0; i < 2 * sizeof cases / sizeof *cases; i++) {
        conv_set_winograd_tile(i % 2 ? 2 : 4);
        conv_cfg c = cases[i / 2];
        tensor *in[3] = {tu_leaf(&r, T_SHAPE(c.B, c.Cin, c.H, c.W), -1, 1),
                         tu_leaf(&r, T_SHAPE(c.Cout, c.Cin, 3, 3), -1, 1),
                         tu_leaf(&r, T_SHAPE(c.Cout), -1, 1)};
        int bad = tu_gradcheck(i % 2 ? "conv2d winograd 2x2" : "conv2d winograd 4x4", conv2d_fn,
                               &c, c.bias ? 3 : 2, in, GC_EPS, GC_ATOL, GC_RTOL, 60);
        assert_int_equal(bad, 0);
        ag_step_reset();
    }
    conv_set_winograd_tile(0);
}

// Only x needs grad / only w: the backward must skip the others.
static void test_conv2d_partial_grads(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 4);
    conv_cfg c = {2, 3, 6, 6, 4, 3, 2, 1, 1, 1};
    for (int which = 0; which < 3; which++) {
        tensor *in[3] = {tu_rand(&r, T_SHAPE(2, 3, 6, 6), -1, 1),
                         tu_rand(&r, T_SHAPE(4, 3, 3, 3), -1, 1), tu_rand(&r, T_SHAPE(4), -1, 1)};
        in[which]->requires_grad = true;
        int bad = tu_gradcheck("conv2d partial", conv2d_fn, &c, 3, in, GC_EPS, GC_ATOL, GC_RTOL,
                               40);
        assert_int_equal(bad, 0);
        for (int k = 0; k < 3; k++)
            if (k != which) assert_null(in[k]->grad);
        ag_step_reset();
    }
    // No grad mode records nothing.
    tensor *x = tu_leaf(&r, T_SHAPE(1, 3, 5, 5), -1, 1);
    tensor *w = tu_leaf(&r, T_SHAPE(2, 3, 3, 3), -1, 1);
    bool prev = ag_no_grad_begin();
    tensor *y = op_conv2d(x, w, NULL, 1, 1, 1);
    ag_no_grad_end(prev);
    assert_false(y->requires_grad);
    assert_int_equal(ag_tape_len(), 0);
    ag_step_reset();
}

static void test_conv1d_gradcheck(void **state) {
    (void)state;
    static const conv_cfg cases[] = {
        // B Cin H(unused) L Cout k s p g bias
        {2, 6, 1, 16, 6, 2, 2, 0, 1, 1},   // POSTER downsample_m (k2 s2)
        {2, 6, 1, 16, 5, 4, 4, 0, 1, 1},   // downsample_s (k4 s4)
        {2, 6, 1, 9, 6, 1, 1, 0, 1, 1},    // token mixing (k1)
        {1, 4, 1, 11, 3, 3, 2, 0, 1, 0},   // odd: k3 s2, ragged end
        {3, 3, 1, 7, 2, 3, 1, 0, 1, 0},
    };
    rng r;
    rng_seed(&r, 5);
    for (int mode = 1; mode <= 2; mode++) {
        conv_set_mode(mode);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            conv_cfg c = cases[i];
            tensor *in[3] = {tu_leaf(&r, T_SHAPE(c.B, c.Cin, c.W), -1, 1),
                             tu_leaf(&r, T_SHAPE(c.Cout, c.Cin, c.k), -1, 1),
                             tu_leaf(&r, T_SHAPE(c.Cout), -1, 1)};
            int bad = tu_gradcheck("conv1d", conv1d_fn, &c, c.bias ? 3 : 2, in, GC_EPS, GC_ATOL,
                                   GC_RTOL, 60);
            assert_int_equal(bad, 0);
            tensor *y = conv1d_fn(in, &c);
            assert_int_equal(y->ndim, 3);
            assert_int_equal(y->shape[2], (c.W - c.k) / c.stride + 1);
            ag_step_reset();
        }
    }
    conv_set_mode(0);
}

static void test_conv_transpose1d_gradcheck(void **state) {
    (void)state;
    static const conv_cfg cases[] = {
        {2, 6, 1, 8, 6, 2, 2, 0, 1, 1},    // POSTER upsample (k2 s2)
        {1, 4, 1, 5, 3, 3, 2, 0, 1, 0},    // overlapping k3 s2
        {2, 3, 1, 4, 5, 3, 1, 0, 1, 1},
        {3, 2, 1, 3, 2, 2, 3, 0, 1, 0},    // gaps: stride > k
    };
    rng r;
    rng_seed(&r, 6);
    for (int mode = 1; mode <= 2; mode++) {
        conv_set_mode(mode);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            conv_cfg c = cases[i];
            tensor *in[3] = {tu_leaf(&r, T_SHAPE(c.B, c.Cin, c.W), -1, 1),
                             tu_leaf(&r, T_SHAPE(c.Cin, c.Cout, c.k), -1, 1),
                             tu_leaf(&r, T_SHAPE(c.Cout), -1, 1)};
            int bad = tu_gradcheck("conv_transpose1d", convt1d_fn, &c, c.bias ? 3 : 2, in,
                                   GC_EPS, GC_ATOL, GC_RTOL, 60);
            assert_int_equal(bad, 0);
            tensor *y = convt1d_fn(in, &c);
            assert_int_equal(y->shape[1], c.Cout);
            assert_int_equal(y->shape[2], (c.W - 1) * c.stride + c.k);
            ag_step_reset();
        }
    }
    conv_set_mode(0);
}

// ---------------------------------------------------------------------------
// Fast kernels against the naive loops on network-sized shapes.

static float *rand_buf(rng *r, int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(rng_uniform(r) * 2 - 1);
    return p;
}

static double g_worst;   // largest error seen by expect_close since the last reset

static void expect_close(const char *what, const float *got, const float *want, int64_t n,
                         double tol) {
    double e = tu_rel_err(got, want, n, 1e-6);
    if (!(e <= tol)) fail_msg("%s: relative error %.3g > %.3g", what, e, tol);
    if (e > g_worst) g_worst = e;
}

static void check_conv2d_vs_naive(const conv2d_geom *g, const char *what) {
    rng r;
    rng_seed(&r, 8);
    int64_t nx = (int64_t)g->B * g->Cin * g->H * g->W;
    int64_t nw = (int64_t)g->Cout * (g->Cin / g->groups) * g->KH * g->KW;
    int64_t ny = (int64_t)g->B * g->Cout * g->Ho * g->Wo;
    float *x = rand_buf(&r, nx), *w = rand_buf(&r, nw), *b = rand_buf(&r, g->Cout);
    float *dy = rand_buf(&r, ny);
    float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    conv2d_naive_forward(g, x, w, b, y2);
    // Gradients accumulate: start both from the same non-zero values.
    float *dx1 = rand_buf(&r, nx), *dw1 = rand_buf(&r, nw), *db1 = rand_buf(&r, g->Cout);
    float *dx2 = malloc(sizeof(float) * nx), *dw2 = malloc(sizeof(float) * nw);
    float *db2 = malloc(sizeof(float) * g->Cout);
    memcpy(dx2, dx1, sizeof(float) * nx);
    memcpy(dw2, dw1, sizeof(float) * nw);
    memcpy(db2, db1, sizeof(float) * g->Cout);
    conv2d_naive_backward(g, x, w, dy, dx2, dw2, db2);
    float *dx0 = malloc(sizeof(float) * nx), *dw0 = malloc(sizeof(float) * nw);
    float *db0 = malloc(sizeof(float) * g->Cout);
    for (int mode = 1; mode <= 2; mode++) {
        char m[160];
        conv_set_mode(mode);
        memset(y1, 0x7f, sizeof(float) * ny);   // garbage: the forward must overwrite
        conv2d_forward(g, x, w, b, y1);
        snprintf(m, sizeof m, "%s mode %d forward", what, mode);
        expect_close(m, y1, y2, ny, 1e-4);
        memcpy(dx0, dx1, sizeof(float) * nx);
        memcpy(dw0, dw1, sizeof(float) * nw);
        memcpy(db0, db1, sizeof(float) * g->Cout);
        conv2d_backward(g, x, w, dy, dx0, dw0, db0);
        snprintf(m, sizeof m, "%s mode %d dx", what, mode);
        expect_close(m, dx0, dx2, nx, 1e-4);
        snprintf(m, sizeof m, "%s mode %d dw", what, mode);
        expect_close(m, dw0, dw2, nw, 1e-4);
        snprintf(m, sizeof m, "%s mode %d db", what, mode);
        expect_close(m, db0, db2, g->Cout, 1e-4);
    }
    conv_set_mode(0);
    free(x); free(w); free(b); free(dy); free(y1); free(y2);
    free(dx0); free(dw0); free(db0); free(dx1); free(dw1); free(db1);
    free(dx2); free(dw2); free(db2);
}

static void test_conv2d_vs_naive(void **state) {
    (void)state;
    // 3x3 stride 1 runs through Winograd 4x4 tiles, 2x2 tiles and im2col.
    static const char *paths[] = {"winograd 4x4", "winograd 2x2", "im2col"};
    static const int shapes[][7] = {
        // B Cin H W Cout pad
        {2, 64, 28, 28, 64, 1},    // IR-50 stage 2 size
        {3, 16, 9, 7, 24, 0},      // pad 0, odd sizes, partial tiles
        {1, 20, 6, 5, 16, 2},      // pad 2
        {2, 32, 13, 14, 17, 1},    // odd channels, 13 rows: a one-row tile at the bottom
        {1, 23, 14, 14, 40, 1},    // batch 1, channels not multiples of 8, 14x14
        {2, 16, 5, 4, 16, 0},      // output 3x2: smaller than one 4x4 tile
        {2, 24, 30, 31, 16, 1},    // width 31: tiles of the last column cut at 3
    };
    char what[96];
    for (int p = 0; p < 3; p++) {
        conv_set_winograd(p < 2);
        conv_set_winograd_tile(p == 1 ? 2 : 4);
        g_worst = 0;
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
            const int *sh = shapes[i];
            conv2d_geom g = conv2d_make_geom(sh[0], sh[1], sh[2], sh[3], sh[4], 3, 3, 1, sh[5], 1);
            snprintf(what, sizeof what, "%s %dx%dx%dx%d -> %d pad %d", paths[p], sh[0], sh[1],
                     sh[2], sh[3], sh[4], sh[5]);
            check_conv2d_vs_naive(&g, what);
        }
        print_message("3x3 stride 1 via %s: worst relative error %.2g (y, dx, dw, db)\n",
                      paths[p], g_worst);
    }
    conv_set_winograd(true);
    conv_set_winograd_tile(0);
    conv2d_geom g;
    conv_set_winograd(true);
    g = conv2d_make_geom(3, 64, 28, 28, 128, 3, 3, 2, 1, 1);
    check_conv2d_vs_naive(&g, "64->128 28x28 3x3 s2");
    // col matrices over 2^20 floats go through im2col in blocks of rows: the
    // 45x46 output (576 x 2070 col) in blocks of 6 rows, the last one partial.
    g = conv2d_make_geom(2, 64, 90, 92, 32, 3, 3, 2, 1, 1);
    check_conv2d_vs_naive(&g, "64->32 90x92 3x3 s2 row blocks");
    g = conv2d_make_geom(1, 3, 112, 112, 16, 3, 3, 1, 1, 1);
    check_conv2d_vs_naive(&g, "stem 3ch 112x112 s1");
    g = conv2d_make_geom(2, 64, 28, 28, 128, 1, 1, 2, 0, 1);
    check_conv2d_vs_naive(&g, "1x1 s2 shortcut");
    g = conv2d_make_geom(2, 64, 28, 28, 96, 1, 1, 1, 0, 1);
    check_conv2d_vs_naive(&g, "1x1 s1");
    g = conv2d_make_geom(2, 64, 28, 28, 64, 3, 3, 1, 1, 64);
    check_conv2d_vs_naive(&g, "depthwise 3x3");
    g = conv2d_make_geom(3, 64, 29, 27, 64, 3, 3, 2, 1, 64);
    check_conv2d_vs_naive(&g, "depthwise 3x3 s2 odd");
    g = conv2d_make_geom(2, 32, 15, 15, 48, 3, 3, 1, 1, 2);
    check_conv2d_vs_naive(&g, "groups 2");
    g = conv2d_make_geom(1, 3, 57, 57, 16, 3, 3, 2, 1, 1);
    check_conv2d_vs_naive(&g, "stem 3ch s2 batch 1");
}

static void test_conv_transpose1d_vs_naive(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 9);
    int B = 3, Cin = 100, L = 128, Cout = 100, k = 2, s = 2;
    int Lout = (L - 1) * s + k;
    int64_t nx = (int64_t)B * Cin * L, nw = (int64_t)Cin * Cout * k, ny = (int64_t)B * Cout * Lout;
    float *x = rand_buf(&r, nx), *w = rand_buf(&r, nw), *b = rand_buf(&r, Cout);
    float *dy = rand_buf(&r, ny);
    float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    float *dx1 = calloc(nx, sizeof(float)), *dw1 = calloc(nw, sizeof(float));
    float *db1 = calloc(Cout, sizeof(float)), *dx2 = calloc(nx, sizeof(float));
    float *dw2 = calloc(nw, sizeof(float)), *db2 = calloc(Cout, sizeof(float));
    conv_transpose1d_naive_forward(B, Cin, L, Cout, k, s, x, w, b, y2);
    conv_transpose1d_naive_backward(B, Cin, L, Cout, k, s, x, w, dy, dx2, dw2, db2);
    conv_transpose1d_forward(B, Cin, L, Cout, k, s, x, w, b, y1);
    conv_transpose1d_backward(B, Cin, L, Cout, k, s, x, w, dy, dx1, dw1, db1);
    expect_close("convt1d forward", y1, y2, ny, 1e-4);
    expect_close("convt1d dx", dx1, dx2, nx, 1e-4);
    expect_close("convt1d dw", dw1, dw2, nw, 1e-4);
    expect_close("convt1d db", db1, db2, Cout, 1e-4);
    free(x); free(w); free(b); free(dy); free(y1); free(y2);
    free(dx1); free(dw1); free(db1); free(dx2); free(dw2); free(db2);
}

// POSTER's conv1d shape through the op, against conv2d_naive with H = 1.
static void test_conv1d_vs_naive(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 10);
    int ks[] = {2, 4, 1};
    for (int i = 0; i < 3; i++) {
        int k = ks[i];
        tensor *x = tu_leaf(&r, T_SHAPE(3, 100, 512), -1, 1);
        tensor *w = tu_leaf(&r, T_SHAPE(100, 100, k), -1, 1);
        tensor *b = tu_leaf(&r, T_SHAPE(100), -1, 1);
        tensor *y = op_conv1d(x, w, b, k);
        conv2d_geom g = conv2d_make_geom(3, 100, 1, 512, 100, 1, k, k, 0, 1);
        int64_t ny = y->numel;
        float *ref = malloc(sizeof(float) * ny);
        conv2d_naive_forward(&g, x->data, w->data, b->data, ref);
        expect_close("conv1d forward", y->data, ref, ny, 1e-4);
        tensor *dy = tu_rand(&r, y->ndim, y->shape, -1, 1);
        ag_backward_seed(y, dy->data);
        float *dx = calloc(x->numel, sizeof(float)), *dw = calloc(w->numel, sizeof(float));
        float *db = calloc(100, sizeof(float));
        conv2d_naive_backward(&g, x->data, w->data, dy->data, dx, dw, db);
        expect_close("conv1d dx", x->grad, dx, x->numel, 1e-4);
        expect_close("conv1d dw", w->grad, dw, w->numel, 1e-4);
        expect_close("conv1d db", b->grad, db, 100, 1e-4);
        free(ref); free(dx); free(dw); free(db);
        ag_step_reset();
    }
}

// Same inputs, same thread count: bit-identical outputs and gradients (resume
// is tested bit-exact), on the Winograd 4x4 path with several chunks
// (256 channels at 14x14 and batch 20 are more than one chunk of tile rows).
static void test_conv2d_winograd_deterministic(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 13);
    conv2d_geom g = conv2d_make_geom(20, 256, 14, 14, 256, 3, 3, 1, 1, 1);
    int64_t nx = (int64_t)g.B * g.Cin * g.H * g.W, nw = (int64_t)g.Cout * g.Cin * 9;
    int64_t ny = (int64_t)g.B * g.Cout * g.Ho * g.Wo;
    float *x = rand_buf(&r, nx), *w = rand_buf(&r, nw), *dy = rand_buf(&r, ny);
    float *out[2][3];
    for (int k = 0; k < 2; k++) {
        out[k][0] = malloc(sizeof(float) * ny);
        out[k][1] = calloc(nx, sizeof(float));
        out[k][2] = calloc(nw, sizeof(float));
        conv2d_forward(&g, x, w, NULL, out[k][0]);
        conv2d_backward(&g, x, w, dy, out[k][1], out[k][2], NULL);
    }
    assert_memory_equal(out[0][0], out[1][0], sizeof(float) * ny);
    assert_memory_equal(out[0][1], out[1][1], sizeof(float) * nx);
    assert_memory_equal(out[0][2], out[1][2], sizeof(float) * nw);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 3; i++) free(out[k][i]);
    free(x); free(w); free(dy);
}

// Which tile each pass takes when none is forced: a forward that records
// gradients stays on F(2x2); an inference forward (no gradient wanted) takes
// F(4x4) where it has fewer products (14x14 outputs), F(2x2) where it has not
// (a 2x2 output fits one 2x2 tile).
static void test_conv2d_inference_tile(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 21);
    static const int sizes[2][2] = {{14, 4}, {2, 2}};   // output size, expected tile
    for (int k = 0; k < 2; k++) {
        int n = sizes[k][0];
        conv2d_geom g = conv2d_make_geom(2, 32, n, n, 32, 3, 3, 1, 1, 1);
        int64_t nx = (int64_t)g.B * g.Cin * g.H * g.W, nw = (int64_t)g.Cout * g.Cin * 9;
        int64_t ny = (int64_t)g.B * g.Cout * g.Ho * g.Wo;
        float *x = rand_buf(&r, nx), *w = rand_buf(&r, nw);
        float *y_train = malloc(sizeof(float) * ny), *y_inf = malloc(sizeof(float) * ny);
        float *y_t2 = malloc(sizeof(float) * ny), *y_t4 = malloc(sizeof(float) * ny);
        conv2d_forward(&g, x, w, NULL, y_train);
        conv2d_forward_inference(&g, x, w, NULL, y_inf);
        conv_set_winograd_tile(2);
        conv2d_forward(&g, x, w, NULL, y_t2);
        conv_set_winograd_tile(4);
        conv2d_forward(&g, x, w, NULL, y_t4);
        conv_set_winograd_tile(0);
        assert_memory_equal(y_train, y_t2, sizeof(float) * ny);
        assert_memory_equal(y_inf, sizes[k][1] == 4 ? y_t4 : y_t2, sizeof(float) * ny);
        if (sizes[k][1] == 4) assert_memory_not_equal(y_t2, y_t4, sizeof(float) * ny);
        free(x); free(w); free(y_train); free(y_inf); free(y_t2); free(y_t4);
    }
}

// ---------------------------------------------------------------------------
// op_conv2d_fused against the ops one after another (eval BatchNorm before,
// conv, eval BatchNorm, PReLU, + residual), with gradients off: the same
// floats, compared element by element (==), on every forward path.

static bn_args eval_bn(rng *r, int C) {
    bn_args a = {.weight = tu_rand(r, T_SHAPE(C), 0.5f, 1.5f),
                 .bias = tu_rand(r, T_SHAPE(C), -0.5f, 0.5f),
                 .running_mean = tu_rand(r, T_SHAPE(C), -0.3f, 0.3f),
                 .running_var = tu_rand(r, T_SHAPE(C), 0.2f, 2.0f),
                 .training = false, .momentum = 0.1f, .eps = 1e-5f};
    return a;
}

static void test_conv2d_fused(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 31);
    static const conv_cfg cases[] = {
        {2, 32, 14, 14, 48, 3, 1, 1, 1, 0},    // Winograd F(4x4) (inference tile)
        {2, 32, 2, 2, 32, 3, 1, 1, 1, 1},      // Winograd F(2x2): one 2x2 tile
        {2, 16, 15, 13, 24, 3, 2, 1, 1, 0},    // im2col, stride 2: prologue via a temporary
        {1, 64, 112, 112, 16, 3, 2, 1, 1, 0},  // im2col by blocks of output rows
        {2, 3, 20, 20, 16, 3, 1, 1, 1, 1},     // the 3-channel stem (im2col)
        {2, 24, 9, 9, 40, 1, 1, 0, 1, 0},      // pointwise
        {2, 24, 9, 9, 40, 1, 2, 0, 1, 0},      // 1x1 stride 2 (the shortcut)
        {2, 32, 12, 12, 32, 3, 1, 1, 32, 0},   // depthwise
        {2, 32, 11, 11, 32, 3, 2, 1, 32, 1},   // depthwise, stride 2
    };
    // pre, post, slope, res
    static const bool combos[][4] = {{1, 1, 1, 1}, {0, 1, 0, 1}, {1, 0, 1, 0}, {0, 1, 1, 0}};
    bool prev = ag_no_grad_begin();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const conv_cfg *c = &cases[i];
        for (size_t k = 0; k < sizeof combos / sizeof *combos; k++) {
            const bool *f = combos[k];
            tensor *x = tu_rand(&r, T_SHAPE(c->B, c->Cin, c->H, c->W), -1, 1);
            tensor *w = tu_rand(&r, T_SHAPE(c->Cout, c->Cin / c->groups, c->k, c->k), -0.3f, 0.3f);
            tensor *b = c->bias ? tu_rand(&r, T_SHAPE(c->Cout), -0.5f, 0.5f) : NULL;
            bn_args pre = eval_bn(&r, c->Cin), post = eval_bn(&r, c->Cout);
            tensor *slope = tu_rand(&r, T_SHAPE(c->Cout), 0.05f, 0.4f);
            // reference: the ops one after another
            tensor *y = op_conv2d(f[0] ? op_batchnorm(x, &pre) : x, w, b, c->stride, c->pad,
                                  c->groups);
            if (f[1]) y = op_batchnorm(y, &post);
            if (f[2]) y = op_prelu(y, slope);
            tensor *res = f[3] ? tu_rand(&r, y->ndim, y->shape, -1, 1) : NULL;
            if (res) y = op_add(y, res);
            float pk[64], po[64], qk[64], qo[64];
            op_batchnorm_affine(&pre, c->Cin, pk, po);
            op_batchnorm_affine(&post, c->Cout, qk, qo);
            conv_fuse fu = {.pre_k = f[0] ? pk : NULL, .pre_o = f[0] ? po : NULL,
                            .post_k = f[1] ? qk : NULL, .post_o = f[1] ? qo : NULL,
                            .slope = f[2] ? slope->data : NULL, .res = res};
            tensor *z = op_conv2d_fused(x, w, b, c->stride, c->pad, c->groups, &fu);
            assert_int_equal(z->numel, y->numel);
            int64_t bad = 0;
            for (int64_t j = 0; j < y->numel; j++) bad += z->data[j] != y->data[j];
            if (bad)
                fail_msg("conv2d_fused case %zu combo %zu: %lld of %lld outputs differ", i, k,
                         (long long)bad, (long long)y->numel);
            ag_step_reset();
        }
    }
    ag_no_grad_end(prev);
}

// ---------------------------------------------------------------------------
// PyTorch fixtures

static tensor *fx_get(hid_t f, const char *group, const char *name, bool leaf) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", group, name);
    tensor *t = tu_fixture_tensor(f, path);
    t->requires_grad = leaf;
    return t;
}

static void fx_expect(hid_t f, const char *group, const char *name, const tensor *t,
                      const float *got, double tol) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", group, name);
    tu_expect_close(path, t, got, tu_fixture_tensor(f, path), tol);
}

// op: 0 conv2d, 1 conv1d, 2 conv_transpose1d
static void check_fixture(hid_t f, int op, const char *name) {
    static const char *ops[] = {"conv2d", "conv1d", "conv_transpose1d"};
    char g[96], p[128];
    snprintf(g, sizeof g, "%s/%s", ops[op], name);
    snprintf(p, sizeof p, "%s/cfg", g);
    int64_t n, *cfg = tu_fixture_int64(f, p, &n);
    assert_int_equal(n, op == 0 ? 4 : 2);
    bool has_b = cfg[n - 1];
    tensor *x = fx_get(f, g, "x", true), *w = fx_get(f, g, "w", true);
    tensor *b = has_b ? fx_get(f, g, "b", true) : NULL;
    tensor *y = op == 0   ? op_conv2d(x, w, b, (int)cfg[0], (int)cfg[1], (int)cfg[2])
                : op == 1 ? op_conv1d(x, w, b, (int)cfg[0])
                          : op_conv_transpose1d(x, w, b, (int)cfg[0]);
    free(cfg);
    tensor *want = fx_get(f, g, "y", false);
    assert_true(tensor_same_shape(y, want));
    fx_expect(f, g, "y", y, y->data, 1e-4);
    ag_backward_seed(y, fx_get(f, g, "gy", false)->data);
    fx_expect(f, g, "gx", x, x->grad, 1e-3);
    fx_expect(f, g, "gw", w, w->grad, 1e-3);
    if (has_b) fx_expect(f, g, "gb", b, b->grad, 1e-3);
    ag_step_reset();
}

static void test_fixtures(void **state) {
    (void)state;
    hid_t f = tu_fixture_open("ops_linalg.h5");
    const char *c2[] = {"k3s1p1", "k3s2p1", "k3s1p0", "k1s1", "k1s2", "g2", "dw_s1", "dw_s2", "wino"};
    const char *c1[] = {"k2s2", "k4s4", "k1s1", "k3s2"};
    const char *ct[] = {"k2s2", "k3s2", "k3s1"};
    for (int mode = 1; mode <= 2; mode++) {
        conv_set_mode(mode);
        for (size_t i = 0; i < sizeof c2 / sizeof *c2; i++) check_fixture(f, 0, c2[i]);
        for (size_t i = 0; i < sizeof c1 / sizeof *c1; i++) check_fixture(f, 1, c1[i]);
        for (size_t i = 0; i < sizeof ct / sizeof *ct; i++) check_fixture(f, 2, ct[i]);
    }
    conv_set_mode(0);
    h5_close(f);
}

static int teardown(void **state) {
    (void)state;
    ag_shutdown();
    ops_conv_release_scratch();
    return 0;
}

int main(void) {
    h5_quiet();
    ops_set_threads(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d_gradcheck),
        cmocka_unit_test(test_conv2d_winograd_gradcheck),
        cmocka_unit_test(test_conv2d_partial_grads),
        cmocka_unit_test(test_conv1d_gradcheck),
        cmocka_unit_test(test_conv_transpose1d_gradcheck),
        cmocka_unit_test(test_conv2d_vs_naive),
        cmocka_unit_test(test_conv2d_winograd_deterministic),
        cmocka_unit_test(test_conv2d_inference_tile),
        cmocka_unit_test(test_conv2d_fused),
        cmocka_unit_test(test_conv_transpose1d_vs_naive),
        cmocka_unit_test(test_conv1d_vs_naive),
        cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
