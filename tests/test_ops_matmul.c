// matmul, linear and attention: finite-difference gradients, the sgemm paths against a
// naive triple loop on larger shapes, and PyTorch fixtures (ops_linalg.h5).
//
// Tolerances:
//   - gradcheck: eps 1e-2, |num - ana| <= 2e-3 + 1e-2 |num|. Both ops are linear
//     in each input, so central differences have no truncation error; what is
//     left is float32 rounding of the forward (~1e-5 on L) divided by 2 eps.
//   - fast vs naive: max abs error <= 1e-4 of the reference's max (float32 sums
//     of a few hundred terms against double sums).
//   - fixtures: forward <= 1e-4, gradients <= 1e-3 (relative to max |ref|).
#include <omp.h>

#include "autograd/ops_ref.h"
#include "test_util.h"

#define GC_EPS 1e-2
#define GC_ATOL 2e-3
#define GC_RTOL 1e-2

typedef struct mm_ctx {
    bool ta, tb;
} mm_ctx;

static tensor *mm_fn(tensor **in, void *ctx) {
    mm_ctx *c = ctx;
    return op_matmul(in[0], in[1], c->ta, c->tb);
}

static tensor *lin_fn(tensor **in, void *ctx) {
    (void)ctx;
    return op_linear(in[0], in[1], in[2]);
}

// Gradchecks matmul for one shape in all four transpose combinations; a and b
// are given untransposed (a [..., M, K], b [..., K, N] or [K, N]).
static void check_mm_all(int nd_a, const int *sa, int nd_b, const int *sb) {
    rng r;
    rng_seed(&r, 7);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int sha[T_MAXDIM], shb[T_MAXDIM];
            memcpy(sha, sa, sizeof(int) * nd_a);
            memcpy(shb, sb, sizeof(int) * nd_b);
            if (ta) { sha[nd_a - 2] = sa[nd_a - 1]; sha[nd_a - 1] = sa[nd_a - 2]; }
            if (tb) { shb[nd_b - 2] = sb[nd_b - 1]; shb[nd_b - 1] = sb[nd_b - 2]; }
            tensor *in[2] = {tu_leaf(&r, nd_a, sha, -1, 1), tu_leaf(&r, nd_b, shb, -1, 1)};
            mm_ctx c = {ta, tb};
            char name[64];
            snprintf(name, sizeof name, "matmul ta=%d tb=%d nd=%d/%d", ta, tb, nd_a, nd_b);
            int bad = tu_gradcheck(name, mm_fn, &c, 2, in, GC_EPS, GC_ATOL, GC_RTOL, 40);
            assert_int_equal(bad, 0);
            // Output shape: a's batch dims + [M, N].
            tensor *y = mm_fn(in, &c);
            assert_int_equal(y->ndim, nd_a);
            assert_int_equal(y->shape[nd_a - 2], sa[nd_a - 2]);
            assert_int_equal(y->shape[nd_a - 1], sb[nd_b - 1]);
            ag_step_reset();
        }
}

static void test_matmul_gradcheck(void **state) {
    (void)state;
    check_mm_all(T_SHAPE(3, 5), T_SHAPE(5, 4));                 // plain 2-D, odd sizes
    check_mm_all(T_SHAPE(2, 3, 4, 5), T_SHAPE(2, 3, 5, 3));     // batched [2, 3]
    check_mm_all(T_SHAPE(1, 1, 7), T_SHAPE(1, 7, 1));           // batch 1, vectors
    check_mm_all(T_SHAPE(3, 4, 6), T_SHAPE(6, 5));              // shared 2-D b
    check_mm_all(T_SHAPE(2, 2, 3, 6), T_SHAPE(6, 5));           // shared b, 4-D a
    // Both threading regimes of the batched path (spread over batch / serial).
    int nt = ops_threads();
    ops_set_threads(1);
    check_mm_all(T_SHAPE(3, 4, 6), T_SHAPE(3, 6, 5));
    check_mm_all(T_SHAPE(3, 4, 6), T_SHAPE(6, 5));
    ops_set_threads(nt);
}

static void test_linear_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 11);
    int shapes[][4] = {{3, 2, 3, 5}, {2, 1, 7, 0}, {2, 5, 3, 0}};   // ndim, dims...
    for (int s = 0; s < 3; s++)
        for (int bias = 0; bias < 2; bias++) {
            int nd = shapes[s][0];
            const int *sx = &shapes[s][1];
            int in_f = sx[nd - 1], out_f = 4 + s;
            tensor *in[3] = {tu_leaf(&r, nd, sx, -1, 1), tu_leaf(&r, T_SHAPE(out_f, in_f), -1, 1),
                             bias ? tu_leaf(&r, T_SHAPE(out_f), -1, 1) : NULL};
            int bad = tu_gradcheck("linear", lin_fn, NULL, bias ? 3 : 2, in, GC_EPS, GC_ATOL, GC_RTOL, 40);
            assert_int_equal(bad, 0);
            tensor *y = lin_fn(in, NULL);
            assert_int_equal(y->ndim, nd);
            assert_int_equal(y->shape[nd - 1], out_f);
            for (int i = 0; i < nd - 1; i++) assert_int_equal(y->shape[i], sx[i]);
            ag_step_reset();
        }
}

// The sgemm paths (batched, shared, both thread regimes) against matmul_naive,
// forward and both gradients.
static void check_mm_vs_naive(int batch, bool shared, int M, int N, int K) {
    rng r;
    rng_seed(&r, 99);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            tensor *a = tu_leaf(&r, T_SHAPE(batch, ta ? K : M, ta ? M : K), -1, 1);
            tensor *b = shared ? tu_leaf(&r, T_SHAPE(tb ? N : K, tb ? K : N), -1, 1)
                               : tu_leaf(&r, T_SHAPE(batch, tb ? N : K, tb ? K : N), -1, 1);
            tensor *y = op_matmul(a, b, ta, tb);
            tensor *dy = tu_rand(&r, y->ndim, y->shape, -1, 1);
            ag_backward_seed(y, dy->data);
            float *yr = malloc(sizeof(float) * M * N);
            float *g = malloc(sizeof(float) * (size_t)(M > N ? M : N) * K);
            float *gb = calloc((size_t)N * K, sizeof(float));
            for (int i = 0; i < batch; i++) {
                const float *ai = a->data + (int64_t)i * M * K;
                const float *bi = b->data + (shared ? 0 : (int64_t)i * K * N);
                const float *dyi = dy->data + (int64_t)i * M * N;
                matmul_naive(ta, tb, M, N, K, ai, bi, yr);
                double e = tu_rel_err(y->data + (int64_t)i * M * N, yr, (int64_t)M * N, 1e-6);
                assert_true(e <= 1e-4);
                if (!ta) matmul_naive(false, !tb, M, K, N, dyi, bi, g);      // [M, K]
                else matmul_naive(tb, true, K, M, N, bi, dyi, g);            // [K, M]
                e = tu_rel_err(a->grad + (int64_t)i * M * K, g, (int64_t)M * K, 1e-6);
                assert_true(e <= 1e-4);
                if (!tb) matmul_naive(!ta, false, K, N, M, ai, dyi, g);      // [K, N]
                else matmul_naive(true, ta, N, K, M, dyi, ai, g);            // [N, K]
                if (shared) {
                    for (int64_t j = 0; j < (int64_t)N * K; j++) gb[j] += g[j];
                } else {
                    e = tu_rel_err(b->grad + (int64_t)i * K * N, g, (int64_t)K * N, 1e-6);
                    assert_true(e <= 1e-4);
                }
            }
            if (shared) assert_true(tu_rel_err(b->grad, gb, (int64_t)N * K, 1e-6) <= 1e-4);
            free(yr);
            free(g);
            free(gb);
            ag_step_reset();
        }
}

static void test_matmul_vs_naive(void **state) {
    (void)state;
    int nt = ops_threads();
    for (int t = 1; t <= 2; t++) {
        ops_set_threads(t);
        check_mm_vs_naive(1, false, 131, 97, 150);
        check_mm_vs_naive(6, false, 33, 65, 47);
        check_mm_vs_naive(5, true, 37, 29, 61);
    }
    ops_set_threads(nt);
}

// R = 70 runs one sgemm; 258 and 257 rows on 2 threads take the row-block
// path (LIN_ROWS rows or more per thread), the odd count splitting unevenly.
static void test_linear_vs_naive(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 5);
    const struct { int R, threads; bool bias; } cases[] = {{70, 0, true}, {258, 2, true},
                                                           {257, 2, false}};
    int nt = ops_threads();
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int R = cases[k].R, in_f = 130, out_f = 90;
        ops_set_threads(cases[k].threads ? cases[k].threads : nt);
        tensor *x = R % 2 ? tu_leaf(&r, T_SHAPE(R, in_f), -1, 1)
                          : tu_leaf(&r, T_SHAPE(2, R / 2, in_f), -1, 1);
        tensor *w = tu_leaf(&r, T_SHAPE(out_f, in_f), -1, 1);
        tensor *b = cases[k].bias ? tu_leaf(&r, T_SHAPE(out_f), -1, 1) : NULL;
        tensor *y = op_linear(x, w, b);
        tensor *dy = tu_rand(&r, y->ndim, y->shape, -1, 1);
        ag_backward_seed(y, dy->data);
        float *ref = malloc(sizeof(float) * R * in_f * 2);
        matmul_naive(false, true, R, out_f, in_f, x->data, w->data, ref);
        if (b)
            for (int i = 0; i < R; i++)
                for (int o = 0; o < out_f; o++) ref[i * out_f + o] += b->data[o];
        assert_true(tu_rel_err(y->data, ref, (int64_t)R * out_f, 1e-6) <= 1e-4);
        matmul_naive(false, false, R, in_f, out_f, dy->data, w->data, ref);
        assert_true(tu_rel_err(x->grad, ref, (int64_t)R * in_f, 1e-6) <= 1e-4);
        matmul_naive(true, false, out_f, in_f, R, dy->data, x->data, ref);
        assert_true(tu_rel_err(w->grad, ref, (int64_t)out_f * in_f, 1e-6) <= 1e-4);
        if (b) {
            for (int o = 0; o < out_f; o++) {
                double s = 0;
                for (int i = 0; i < R; i++) s += dy->data[i * out_f + o];
                ref[o] = (float)s;
            }
            assert_true(tu_rel_err(b->grad, ref, out_f, 1e-6) <= 1e-4);
        }
        free(ref);
        ag_step_reset();
    }
    ops_set_threads(nt);
}

static void test_threads(void **state) {
    (void)state;
    ops_set_threads(1);
    assert_int_equal(ops_threads(), 1);
    assert_int_equal(omp_get_max_threads(), 1);
    ops_set_threads(0);
    assert_int_equal(ops_threads(), omp_get_num_procs());
    assert_int_equal(omp_get_max_threads(), omp_get_num_procs());
}

// Loads group/name from the fixture, makes it a leaf that requires grad.
static tensor *fx_leaf(hid_t f, const char *group, const char *name) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", group, name);
    tensor *t = tu_fixture_tensor(f, path);
    t->requires_grad = true;
    return t;
}

static void fx_expect(hid_t f, const char *group, const char *name, const tensor *t,
                      const float *got, double tol) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", group, name);
    tu_expect_close(path, t, got, tu_fixture_tensor(f, path), tol);
}

static void test_fixtures(void **state) {
    (void)state;
    hid_t f = tu_fixture_open("ops_linalg.h5");
    const char *mm[] = {"nn", "nt", "tn", "tt", "shared", "shared_tt", "plain"};
    for (size_t i = 0; i < sizeof mm / sizeof *mm; i++) {
        char g[64];
        snprintf(g, sizeof g, "matmul/%s", mm[i]);
        char p[80];
        snprintf(p, sizeof p, "%s/cfg", g);
        int64_t n, *cfg = tu_fixture_int64(f, p, &n);
        assert_int_equal(n, 2);
        tensor *a = fx_leaf(f, g, "a"), *b = fx_leaf(f, g, "b");
        tensor *y = op_matmul(a, b, cfg[0], cfg[1]);
        free(cfg);
        fx_expect(f, g, "y", y, y->data, 1e-4);
        ag_backward_seed(y, fx_leaf(f, g, "gy")->data);
        fx_expect(f, g, "ga", a, a->grad, 1e-3);
        fx_expect(f, g, "gb", b, b->grad, 1e-3);
        ag_step_reset();
    }
    const char *lin[] = {"bias", "nobias"};
    for (int i = 0; i < 2; i++) {
        char g[64], p[80];
        snprintf(g, sizeof g, "linear/%s", lin[i]);
        snprintf(p, sizeof p, "%s/cfg", g);
        int64_t n, *cfg = tu_fixture_int64(f, p, &n);
        bool has_b = cfg[0];
        free(cfg);
        tensor *x = fx_leaf(f, g, "x"), *w = fx_leaf(f, g, "w");
        tensor *b = has_b ? fx_leaf(f, g, "b") : NULL;
        tensor *y = op_linear(x, w, b);
        fx_expect(f, g, "y", y, y->data, 1e-4);
        ag_backward_seed(y, fx_leaf(f, g, "gy")->data);
        fx_expect(f, g, "gx", x, x->grad, 1e-3);
        fx_expect(f, g, "gw", w, w->grad, 1e-3);
        if (has_b) fx_expect(f, g, "gb", b, b->grad, 1e-3);
        ag_step_reset();
    }
    h5_close(f);
}

static int teardown(void **state) {
    (void)state;
    ag_shutdown();
    return 0;
}

// ---------------------------------------------------------------------------
// attention (fused: heads as column blocks, softmax in place)

typedef struct att_ctx {
    int q0, nq, heads;
    float scale;
} att_ctx;

static tensor *att_fn(tensor **in, void *ctx) {
    att_ctx *c = ctx;
    return op_attention(in[0], c->q0, c->nq, in[1], c->heads, c->scale);
}

// The same attention from the general ops: slice, reshape, permute, matmul, softmax.
static tensor *att_composed(tensor **in, void *ctx) {
    att_ctx *a = ctx;
    tensor *q = in[0], *kv = in[1];
    int B = q->shape[0], C = q->shape[2], H = a->heads, c = C / H, N = kv->shape[1];
    tensor *kv5 = op_permute(op_reshape(kv, 5, (int[]){B, N, 2, H, c}), (int[]){2, 0, 3, 1, 4});
    tensor *k = op_reshape(op_slice(kv5, 0, 0, 1), 4, (int[]){B, H, N, c});
    tensor *v = op_reshape(op_slice(kv5, 0, 1, 2), 4, (int[]){B, H, N, c});
    tensor *qs = op_slice(q, 1, a->q0, a->q0 + a->nq);
    tensor *qh = op_permute(op_reshape(qs, 4, (int[]){B, a->nq, H, c}), (int[]){0, 2, 1, 3});
    tensor *att = op_softmax(op_scale(op_matmul(qh, k, false, true), a->scale));
    tensor *o = op_permute(op_matmul(att, v, false, false), (int[]){0, 2, 1, 3});
    return op_reshape(o, 3, (int[]){B, a->nq, C});
}

static void test_attention_gradcheck(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 11);
    const att_ctx cases[] = {{3, 3, 2, 0.5f}, {0, 2, 1, 0.35f}, {1, 4, 4, 1.0f}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        att_ctx c = cases[i];
        int C = 8, T = c.q0 + c.nq + 1, N = 5;
        tensor *in[2] = {tu_leaf(&r, T_SHAPE(2, T, C), -1, 1), tu_leaf(&r, T_SHAPE(2, N, 2 * C), -1, 1)};
        char name[64];
        snprintf(name, sizeof name, "attention q0=%d nq=%d heads=%d", c.q0, c.nq, c.heads);
        assert_int_equal(tu_gradcheck(name, att_fn, &c, 2, in, GC_EPS, GC_ATOL, GC_RTOL, 60), 0);
        tensor *fresh[2] = {tu_leaf(&r, T_SHAPE(2, T, C), -1, 1),
                            tu_leaf(&r, T_SHAPE(2, N, 2 * C), -1, 1)};
        tu_check_accumulates(name, att_fn, &c, 2, fresh);
        ag_step_reset();
    }
}

// POSTER's shapes (tokens 100, queries 50..99, 8 heads): against the naive loop
// (forward) and the composed ops (forward and both gradients).
static void test_attention_vs_reference(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 12);
    const int dims[3] = {512, 256, 128};
    for (int di = 0; di < 3; di++) {
        int B = 3, C = dims[di];
        att_ctx c = {50, 50, 8, (float)(1.0 / sqrt(C / 8.0))};
        tensor *in[2] = {tu_leaf(&r, T_SHAPE(B, 100, C), -2, 2), tu_leaf(&r, T_SHAPE(B, 50, 2 * C), -2, 2)};
        tensor *y = att_fn(in, &c);
        float *ref = malloc((size_t)y->numel * sizeof(float));
        attention_naive(B, 100, 50, 50, 50, C, 8, c.scale, in[0]->data, in[1]->data, ref);
        double e = tu_rel_err(y->data, ref, y->numel, 1e-6);
        if (e > 1e-5) fail_msg("attention C=%d vs naive: %.3g", C, e);
        free(ref);
        float *w = malloc((size_t)y->numel * sizeof(float));
        for (int64_t i = 0; i < y->numel; i++) w[i] = (float)(rng_uniform(&r) * 2 - 1);
        ag_backward_seed(y, w);
        int64_t nq = in[0]->numel, nkv = in[1]->numel;
        float *gq = malloc((size_t)nq * sizeof(float)), *gkv = malloc((size_t)nkv * sizeof(float));
        memcpy(gq, in[0]->grad, (size_t)nq * sizeof(float));
        memcpy(gkv, in[1]->grad, (size_t)nkv * sizeof(float));
        memset(in[0]->grad, 0, (size_t)nq * sizeof(float));
        memset(in[1]->grad, 0, (size_t)nkv * sizeof(float));
        tensor *y2 = att_composed(in, &c);
        e = tu_rel_err(y->data, y2->data, y->numel, 1e-6);
        if (e > 1e-5) fail_msg("attention C=%d vs composed ops: %.3g", C, e);
        ag_backward_seed(y2, w);
        double eq = tu_rel_err(gq, in[0]->grad, nq, 1e-6), ekv = tu_rel_err(gkv, in[1]->grad, nkv, 1e-6);
        double mq = 0, mkv = 0;
        for (int64_t i = 0; i < nq; i++) mq = fmax(mq, fabs(gq[i]));
        for (int64_t i = 0; i < nkv; i++) mkv = fmax(mkv, fabs(gkv[i]));
        assert_true(mq > 1e-3 && mkv > 1e-3);   // the comparison is not of zeros
        printf("attention C=%d: forward ok, grad q rel %.2e, grad kv rel %.2e\n", C, eq, ekv);
        if (eq > 1e-4 || ekv > 1e-4) fail_msg("attention C=%d gradients: q %.3g kv %.3g", C, eq, ekv);
        // Keys 0..49 of q get no gradient (they are not queries).
        for (int b = 0; b < B; b++)
            for (int64_t i = 0; i < 50 * C; i++) assert_true(gq[(int64_t)b * 100 * C + i] == 0.0f);
        free(gq);
        free(gkv);
        free(w);
        ag_step_reset();
    }
}

int main(void) {
    h5_quiet();
    ops_set_threads(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_matmul_gradcheck),
        cmocka_unit_test(test_linear_gradcheck),
        cmocka_unit_test(test_matmul_vs_naive),
        cmocka_unit_test(test_linear_vs_naive),
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_attention_gradcheck),
        cmocka_unit_test(test_attention_vs_reference),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
