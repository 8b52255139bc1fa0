// Thread control, batched matmul, linear and fused multi-head attention, all
// through cblas_sgemm.
//
// Threading: OpenBLAS is the OpenMP build, so an sgemm called inside an OpenMP
// parallel region runs on one thread. Batched products of small matrices are
// therefore spread over the batch with OpenMP (one single-threaded sgemm per
// item), while large ones run one after another with a threaded sgemm. Never
// both: that would oversubscribe the cores.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "ops_ref.h"

// ---------------------------------------------------------------------------
// Threads

static int g_threads;   // 0 until ops_set_threads is called

void ops_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    g_threads = n;
}

int ops_threads(void) { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

// ---------------------------------------------------------------------------
// Batched sgemm: C_i = alpha op(A_i) op(B_i) + beta C_i for i < batch, where
// X_i = X + i * sX. A stride of 0 shares the matrix across the batch; a shared
// C (sC == 0) accumulates, so it must run serially.

static void gemm_batch(bool ta, bool tb, int M, int N, int K, int batch, const float *A,
                       int64_t sA, const float *B, int64_t sB, float beta, float *C,
                       int64_t sC) {
    if (M == 0 || N == 0 || batch == 0) return;
    int lda = ta ? M : K, ldb = tb ? K : N;
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE TB = tb ? CblasTrans : CblasNoTrans;
    if (K == 0) {
        // sgemm with K == 0 only scales C; do that ourselves for clarity.
        for (int i = 0; i < (sC ? batch : 1); i++)
            for (int64_t j = 0; j < (int64_t)M * N; j++) C[i * sC + j] *= beta;
        return;
    }
    int nt = ops_threads();
    // Spread over the batch when each product is too small to keep the
    // threaded sgemm busy (below ~128^3 multiply-adds), or the batch is large.
    double macs = (double)M * N * K;
    bool par = sC != 0 && batch > 1 && nt > 1 && (macs < 2.1e6 || batch >= 4 * nt);
    if (par) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < batch; i++)
            cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A + i * sA, lda, B + i * sB,
                        ldb, beta, C + i * sC, N);
    } else {
        for (int i = 0; i < batch; i++) {
            float bt = (sC == 0 && i > 0) ? 1.0f : beta;
            cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A + i * sA, lda, B + i * sB,
                        ldb, bt, C + i * sC, N);
        }
    }
}

// ---------------------------------------------------------------------------
// matmul

typedef struct matmul_saved {
    bool ta, tb;
    int M, N, K, batch;
    bool shared_b;
} matmul_saved;

// y_i = op(a_i) op(b_i)
static void matmul_forward(const matmul_saved *s, const float *a, const float *b, float *y) {
    int64_t sA = (int64_t)s->M * s->K, sB = s->shared_b ? 0 : (int64_t)s->K * s->N;
    int64_t sY = (int64_t)s->M * s->N;
    if (s->shared_b && !s->ta)   // rows of all items stacked: one sgemm
        gemm_batch(false, s->tb, s->M * s->batch, s->N, s->K, 1, a, 0, b, 0, 0.0f, y, 0);
    else
        gemm_batch(s->ta, s->tb, s->M, s->N, s->K, s->batch, a, sA, b, sB, 0.0f, y, sY);
}

// da_i += d(op(a_i)) and db_i += d(op(b_i)) given dy_i; either may be NULL.
static void matmul_backward_raw(const matmul_saved *s, const float *a, const float *b,
                                const float *dy, float *da, float *db) {
    int M = s->M, N = s->N, K = s->K, nb = s->batch;
    int64_t sA = (int64_t)M * K, sB = s->shared_b ? 0 : (int64_t)K * N, sY = (int64_t)M * N;
    if (da) {
        if (s->shared_b && !s->ta) {
            // [nb*M, K] += dy [nb*M, N] op(b)^T
            gemm_batch(false, !s->tb, M * nb, K, N, 1, dy, 0, b, 0, 1.0f, da, 0);
        } else if (!s->ta) {
            // da [M,K] += dy [M,N] op(b)^T
            gemm_batch(false, !s->tb, M, K, N, nb, dy, sY, b, sB, 1.0f, da, sA);
        } else {
            // a stored [K,M]: da += op(b) [K,N] dy^T [N,M]
            gemm_batch(s->tb, true, K, M, N, nb, b, sB, dy, sY, 1.0f, da, sA);
        }
    }
    if (db) {
        if (s->shared_b && !s->ta) {
            // all rows at once: db += op-aware product over [nb*M] rows
            if (!s->tb)   // [K,N] += a^T [K, nb*M] dy [nb*M, N]
                gemm_batch(true, false, K, N, M * nb, 1, a, 0, dy, 0, 1.0f, db, 0);
            else          // [N,K] += dy^T [N, nb*M] a [nb*M, K]
                gemm_batch(true, false, N, K, M * nb, 1, dy, 0, a, 0, 1.0f, db, 0);
        } else if (!s->tb) {
            // db [K,N] += op(a)^T [K,M] dy [M,N]; op(a)^T is a^T (ta=0) or a (ta=1)
            gemm_batch(!s->ta, false, K, N, M, nb, a, sA, dy, sY, 1.0f, db, sB);
        } else {
            // b stored [N,K]: db += dy^T [N,M] op(a) [M,K]
            gemm_batch(true, s->ta, N, K, M, nb, dy, sY, a, sA, 1.0f, db, sB);
        }
    }
}

static void matmul_backward(tape_entry *e) {
    const matmul_saved *s = e->saved;
    tensor *a = e->in[0], *b = e->in[1];
    float *da = a->requires_grad ? tensor_grad(a) : NULL;
    float *db = b->requires_grad ? tensor_grad(b) : NULL;
    matmul_backward_raw(s, a->data, b->data, e->out->grad, da, db);
}

tensor *op_matmul(tensor *a, tensor *b, bool trans_a, bool trans_b) {
    char sa[64], sb[64];
    AG_ASSERT(a->ndim >= 2 && b->ndim >= 2, "matmul of %s and %s",
              tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    int ra = a->shape[a->ndim - 2], ca = a->shape[a->ndim - 1];
    int rb = b->shape[b->ndim - 2], cb = b->shape[b->ndim - 1];
    matmul_saved s = {.ta = trans_a, .tb = trans_b};
    s.M = trans_a ? ca : ra;
    s.K = trans_a ? ra : ca;
    s.N = trans_b ? rb : cb;
    int kb = trans_b ? cb : rb;
    AG_ASSERT(kb == s.K, "matmul inner dims differ: %s%s x %s%s",
              tensor_shape_str(a, sa, sizeof sa), trans_a ? "^T" : "",
              tensor_shape_str(b, sb, sizeof sb), trans_b ? "^T" : "");
    s.batch = 1;
    for (int i = 0; i < a->ndim - 2; i++) s.batch *= a->shape[i];
    s.shared_b = b->ndim == 2;
    if (!s.shared_b) {
        bool same = b->ndim == a->ndim;
        for (int i = 0; same && i < a->ndim - 2; i++) same = a->shape[i] == b->shape[i];
        AG_ASSERT(same, "matmul batch dims differ: %s x %s",
                  tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    }
    int shape[T_MAXDIM];
    for (int i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = s.M;
    shape[a->ndim - 1] = s.N;
    tensor *y = tensor_new(a->ndim, shape);
    matmul_forward(&s, a->data, b->data, y->data);
    tensor *in[2] = {a, b};
    if (ag_needs_grad(2, in)) {
        matmul_saved *sv = arena_alloc(sizeof *sv);
        *sv = s;
        ag_record_need("matmul", matmul_backward, y, 2, in, sv, AG_NEED_INPUTS);
    }
    return y;
}

// ---------------------------------------------------------------------------
// linear: y [R, out] = x [R, in] w^T + bias, with R all leading rows of x.

typedef struct linear_dims {
    int rows, in, out;
} linear_dims;

// Row blocks: with at least LIN_ROWS rows per thread, each thread fills its
// block of y with the bias and runs a single-threaded sgemm on it, in one
// parallel region. Against one threaded sgemm after a separate bias pass,
// measured on 2 cores for the transformer's shapes (800 rows): 1.0-1.1x the
// rate at 512 and 1024 columns, 1.2-1.6x at 128 and 256, where OpenBLAS's
// own split and the extra region (a thread wake-up each with
// OMP_WAIT_POLICY=passive) cost most.
#define LIN_ROWS 64

static bool linear_split(int rows, int *nt) {
    *nt = ops_threads();
    return *nt > 1 && rows >= LIN_ROWS * *nt && !omp_in_parallel();
}

static void linear_forward_rows(const linear_dims *d, const float *x, const float *w,
                                const float *bias, float *y, int r0, int r1) {
    if (r1 <= r0) return;
    if (bias)   // sgemm adds to it (beta 1): the same rounding as adding after
        for (int r = r0; r < r1; r++)
            memcpy(y + (int64_t)r * d->out, bias, (size_t)d->out * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, d->out, d->in, 1.0f,
                x + (int64_t)r0 * d->in, d->in, w, d->in, bias ? 1.0f : 0.0f,
                y + (int64_t)r0 * d->out, d->out);
}

static void linear_forward(const linear_dims *d, const float *x, const float *w,
                           const float *bias, float *y) {
    if (d->in == 0) {
        for (int r = 0; r < d->rows; r++)
            if (bias)
                memcpy(y + (int64_t)r * d->out, bias, (size_t)d->out * sizeof(float));
            else
                memset(y + (int64_t)r * d->out, 0, (size_t)d->out * sizeof(float));
        return;
    }
    int nt;
    if (linear_split(d->rows, &nt)) {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            linear_forward_rows(d, x, w, bias, y, (int)((int64_t)d->rows * t / n),
                                (int)((int64_t)d->rows * (t + 1) / n));
        }
    } else {
        linear_forward_rows(d, x, w, bias, y, 0, d->rows);
    }
}

static void linear_backward_raw(const linear_dims *d, const float *x, const float *w,
                                const float *dy, float *dx, float *dw, float *db) {
    int R = d->rows, Din = d->in, O = d->out;
    if (R == 0 || O == 0) return;
    int nt;
    if (dx && Din > 0 && linear_split(R, &nt)) {   // by row blocks, as the forward
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            int r0 = (int)((int64_t)R * t / n), r1 = (int)((int64_t)R * (t + 1) / n);
            if (r1 > r0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, Din, O, 1.0f,
                            dy + (int64_t)r0 * O, O, w, Din, 1.0f, dx + (int64_t)r0 * Din, Din);
        }
    } else if (dx && Din > 0) {   // dx [R, in] += dy [R, out] w [out, in]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, Din, O, 1.0f, dy, O, w, Din,
                    1.0f, dx, Din);
    }
    if (dw && Din > 0)   // dw [out, in] += dy^T [out, R] x [R, in]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, Din, R, 1.0f, dy, O, x, Din,
                    1.0f, dw, Din);
    if (db) {
        // Column sums of dy over blocks of 64 columns: each thread owns whole
        // blocks (race-free) and walks the rows contiguously (vectorized); every
        // column still sums its rows in order, in float.
#pragma omp parallel for schedule(static) if ((int64_t)R * O > 65536)
        for (int o0 = 0; o0 < O; o0 += 64) {
            const int w = O - o0 < 64 ? O - o0 : 64;
            float acc[64] = {0};
            for (int r = 0; r < R; r++) {
                const float *row = dy + (int64_t)r * O + o0;
#pragma omp simd
                for (int j = 0; j < w; j++) acc[j] += row[j];
            }
            for (int j = 0; j < w; j++) db[o0 + j] += acc[j];
        }
    }
}

static void linear_backward(tape_entry *e) {
    const linear_dims *d = e->saved;
    tensor *x = e->in[0], *w = e->in[1], *b = e->n_in > 2 ? e->in[2] : NULL;
    linear_backward_raw(d, x->data, w->data, e->out->grad,
                        x->requires_grad ? tensor_grad(x) : NULL,
                        w->requires_grad ? tensor_grad(w) : NULL,
                        b && b->requires_grad ? tensor_grad(b) : NULL);
}

tensor *op_linear(tensor *x, tensor *w, tensor *bias) {
    char sx[64], sw[64];
    AG_ASSERT(x->ndim >= 1 && w->ndim == 2 && x->shape[x->ndim - 1] == w->shape[1],
              "linear of %s with weight %s", tensor_shape_str(x, sx, sizeof sx),
              tensor_shape_str(w, sw, sizeof sw));
    AG_ASSERT(!bias || (bias->ndim == 1 && bias->shape[0] == w->shape[0]),
              "linear bias %s for weight %s", tensor_shape_str(bias, sx, sizeof sx),
              tensor_shape_str(w, sw, sizeof sw));
    linear_dims d = {.in = w->shape[1], .out = w->shape[0]};
    d.rows = (int)(d.in ? x->numel / d.in : 0);
    if (d.in == 0) {
        d.rows = 1;
        for (int i = 0; i < x->ndim - 1; i++) d.rows *= x->shape[i];
    }
    int shape[T_MAXDIM];
    for (int i = 0; i < x->ndim - 1; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = d.out;
    tensor *y = tensor_new(x->ndim, shape);
    linear_forward(&d, x->data, w->data, bias ? bias->data : NULL, y->data);
    tensor *in[3] = {x, w, bias};
    int n = bias ? 3 : 2;
    if (ag_needs_grad(n, in)) {
        linear_dims *sv = arena_alloc(sizeof *sv);
        *sv = d;
        ag_record_need("linear", linear_backward, y, n, in, sv, AG_NEED_IN(0) | AG_NEED_IN(1));
    }
    return y;
}

// ---------------------------------------------------------------------------
// attention: POSTER's cross attention core, fused. Per (sample b, head h), all
// B * heads pairs spread over the threads with one single-threaded sgemm each:
//   S = scale q_bh k_bh^T [Nq, N];  P = softmax(S) (in place, saved);  o_bh = P v_bh
// The heads are column blocks of width c = C / heads of q, kv and o, addressed
// through the sgemm leading dimensions: the head split and merge copy nothing.

typedef struct attention_saved {
    int B, Tq, q0, Nq, N, C, H;
    float scale;
    float *P;   // [B, H, Nq, N] softmax probabilities
} attention_saved;

// glibc's libmvec has a vector expf (within 1-2 ulp of the scalar one, as in
// ops_basic.c's GELU): declared simd, the exp loop below runs 8 or 16 lanes
// at a time. The row's 50 exps were a third of the fused attention's time.
#if defined(__GNUC__) && !defined(__clang__)
float expf(float) __attribute__((simd("notinbranch")));
#endif

// Softmax of one row in place: float exp, double sum (as op_softmax).
static void softmax_row(float *s, int n) {
    float m = s[0];
#pragma omp simd reduction(max : m)
    for (int j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - m);
        sum += s[j];
    }
    float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int j = 0; j < n; j++) s[j] *= inv;
}

// Item (b, h): pointers to its q rows, k, v and o column blocks.
#define ATT_PTRS(a, b, h, q, kv, o)                                                          \
    const int c_ = (a)->C / (a)->H;                                                          \
    const int64_t ldq = (a)->C, ldkv = 2 * (int64_t)(a)->C;                                  \
    const float *qb = (q) + ((int64_t)(b) * (a)->Tq + (a)->q0) * ldq + (int64_t)(h) * c_;    \
    const float *kb = (kv) + (int64_t)(b) * (a)->N * ldkv + (int64_t)(h) * c_;               \
    const float *vb = kb + (a)->C;                                                           \
    int64_t ob_off = (int64_t)(b) * (a)->Nq * ldq + (int64_t)(h) * c_;                       \
    (void)(o)

static void attention_forward(const attention_saved *a, const float *q, const float *kv,
                              float *o) {
    const int BH = a->B * a->H;
#pragma omp parallel for schedule(static) if (BH > 1 && ops_threads() > 1)
    for (int i = 0; i < BH; i++) {
        const int b = i / a->H, h = i % a->H;
        ATT_PTRS(a, b, h, q, kv, o);
        float *P = a->P + (int64_t)i * a->Nq * a->N;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->Nq, a->N, c_, a->scale, qb,
                    (int)ldq, kb, (int)ldkv, 0.0f, P, a->N);
        for (int r = 0; r < a->Nq; r++) softmax_row(P + (int64_t)r * a->N, a->N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->Nq, c_, a->N, 1.0f, P, a->N,
                    vb, (int)ldkv, 0.0f, o + ob_off, (int)ldq);
    }
}

// dq (rows q0.. of the query tensor) and dkv (keys and values) accumulate; either
// may be NULL. dS = scale P * (dP - rowsum(dP P)), dP = do v^T.
static void attention_backward_raw(const attention_saved *a, const float *q, const float *kv,
                                   const float *dout, float *dq, float *dkv) {
    const int BH = a->B * a->H, Nq = a->Nq, N = a->N;
    float *dS = arena_alloc((size_t)BH * Nq * N * sizeof(float));
#pragma omp parallel for schedule(static) if (BH > 1 && ops_threads() > 1)
    for (int i = 0; i < BH; i++) {
        const int b = i / a->H, h = i % a->H;
        ATT_PTRS(a, b, h, q, kv, dout);
        const float *P = a->P + (int64_t)i * Nq * N;
        const float *dob = dout + ob_off;
        float *d = dS + (int64_t)i * Nq * N;
        if (dkv)   // dv += P^T do
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, c_, Nq, 1.0f, P, N, dob,
                        (int)ldq, 1.0f, dkv + (vb - kv), (int)ldkv);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Nq, N, c_, 1.0f, dob, (int)ldq, vb,
                    (int)ldkv, 0.0f, d, N);
        for (int r = 0; r < Nq; r++) {
            float *dr = d + (int64_t)r * N;
            const float *pr = P + (int64_t)r * N;
            double dot = 0;
            for (int j = 0; j < N; j++) dot += (double)dr[j] * pr[j];
            float fd = (float)dot;
            for (int j = 0; j < N; j++) dr[j] = a->scale * (pr[j] * (dr[j] - fd));
        }
        if (dq)    // dq += dS k
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Nq, c_, N, 1.0f, d, N, kb,
                        (int)ldkv, 1.0f, dq + (qb - q), (int)ldq);
        if (dkv)   // dk += dS^T q
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, c_, Nq, 1.0f, d, N, qb,
                        (int)ldq, 1.0f, dkv + (kb - kv), (int)ldkv);
    }
}

static void attention_backward(tape_entry *e) {
    const attention_saved *a = e->saved;
    tensor *q = e->in[0], *kv = e->in[1];
    attention_backward_raw(a, q->data, kv->data, e->out->grad,
                           q->requires_grad ? tensor_grad(q) : NULL,
                           kv->requires_grad ? tensor_grad(kv) : NULL);
}

tensor *op_attention(tensor *q, int q0, int nq, tensor *kv, int heads, float scale) {
    char sq[64], skv[64];
    AG_ASSERT(q->ndim == 3 && kv->ndim == 3 && q->shape[0] == kv->shape[0] &&
                  kv->shape[2] == 2 * q->shape[2] && heads > 0 && q->shape[2] % heads == 0 &&
                  q0 >= 0 && nq > 0 && q0 + nq <= q->shape[1] && kv->shape[1] > 0,
              "attention: queries %s rows [%d, %d), keys/values %s, %d heads",
              tensor_shape_str(q, sq, sizeof sq), q0, q0 + nq,
              tensor_shape_str(kv, skv, sizeof skv), heads);
    attention_saved s = {.B = q->shape[0], .Tq = q->shape[1], .q0 = q0, .Nq = nq,
                         .N = kv->shape[1], .C = q->shape[2], .H = heads, .scale = scale};
    s.P = arena_alloc((size_t)s.B * s.H * s.Nq * s.N * sizeof(float));
    tensor *y = tensor_new(3, (int[]){s.B, nq, s.C});   // [B, Nq, C], heads merged
    attention_forward(&s, q->data, kv->data, y->data);
    tensor *in[2] = {q, kv};
    if (ag_needs_grad(2, in)) {
        attention_saved *sv = arena_alloc(sizeof *sv);
        *sv = s;
        ag_record("attention", attention_backward, y, 2, in, sv);
    }
    return y;
}

