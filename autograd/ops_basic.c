// Elementwise ops with numpy broadcasting, activations and shape ops.
//
// Broadcasting: both operands are right-aligned to the output's rank, dims of
// output size 1 are dropped and adjacent dims where each operand is either
// full in both or broadcast in both are merged. What is left is at most five
// dims whose innermost has, per operand, stride 1 (full) or 0 (broadcast).
// That one plan gives the fast paths for free: same shape and scalar collapse
// to one dim, per-channel [1, C, 1, 1] to three dims with a contiguous inner
// run, per-row [D] to two.
//
// Backward reduces over broadcast dims. A full operand gets its gradient
// elementwise (rows in parallel, no races); a broadcast one sums into
// per-thread double buffers that are added up at the end.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "ops.h"

// Below this many elements an OpenMP region costs more than it saves.
#define PAR_MIN 32768

static int norm_axis(int axis, int ndim, const char *op) {
    int a = axis < 0 ? axis + ndim : axis;
    AG_ASSERT(a >= 0 && a < ndim, "%s: axis %d out of range for ndim %d", op, axis, ndim);
    return a;
}

// ---------------------------------------------------------------------------
// Broadcast plan

typedef struct bcast {
    int nd;                  // merged dims, >= 1
    int shape[T_MAXDIM];
    int64_t sa[T_MAXDIM];    // element strides of a and b in the merged dims (0: broadcast)
    int64_t sb[T_MAXDIM];
    int64_t rows;            // product of all but the innermost merged dim
    int out_ndim;
    int out_shape[T_MAXDIM];
} bcast;

static bcast bcast_plan(const tensor *a, const tensor *b, const char *op) {
    bcast p;
    memset(&p, 0, sizeof p);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int da[T_MAXDIM], db[T_MAXDIM];
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        da[i] = ia >= 0 ? a->shape[ia] : 1;
        db[i] = ib >= 0 ? b->shape[ib] : 1;
        if (da[i] != db[i] && da[i] != 1 && db[i] != 1) {
            char sa[64], sb[64];
            AG_ASSERT(0, "%s: shapes %s and %s do not broadcast", op,
                      tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
        }
        p.out_shape[i] = da[i] == 1 ? db[i] : da[i];
    }
    p.out_ndim = nd;
    // Keep dims of output size > 1, with per-operand full/broadcast flags.
    int shp[T_MAXDIM], fa[T_MAXDIM], fb[T_MAXDIM], k = 0;
    for (int i = 0; i < nd; i++) {
        if (p.out_shape[i] == 1) continue;
        shp[k] = p.out_shape[i];
        fa[k] = da[i] != 1;
        fb[k] = db[i] != 1;
        k++;
    }
    // Merge neighbours with the same flags.
    int m = 0;
    int ms[T_MAXDIM], mfa[T_MAXDIM], mfb[T_MAXDIM];
    for (int i = 0; i < k; i++) {
        if (m > 0 && mfa[m - 1] == fa[i] && mfb[m - 1] == fb[i]) {
            ms[m - 1] *= shp[i];
        } else {
            ms[m] = shp[i];
            mfa[m] = fa[i];
            mfb[m] = fb[i];
            m++;
        }
    }
    if (m == 0) {   // everything is size 1
        ms[0] = 1;
        mfa[0] = mfb[0] = 1;
        m = 1;
    }
    p.nd = m;
    int64_t ra = 1, rb = 1;
    for (int i = m - 1; i >= 0; i--) {
        p.shape[i] = ms[i];
        p.sa[i] = mfa[i] ? ra : 0;
        p.sb[i] = mfb[i] ? rb : 0;
        if (mfa[i]) ra *= ms[i];
        if (mfb[i]) rb *= ms[i];
    }
    p.rows = 1;
    for (int i = 0; i < m - 1; i++) p.rows *= p.shape[i];
    return p;
}

// Offsets of a and b at the start of outer row r.
static inline void bcast_row(const bcast *p, int64_t r, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int d = p->nd - 2; d >= 0; d--) {
        int64_t i = r % p->shape[d];
        r /= p->shape[d];
        a += i * p->sa[d];
        b += i * p->sb[d];
    }
    *oa = a;
    *ob = b;
}

enum { BIN_ADD, BIN_SUB, BIN_MUL };

// Work is split into tasks of at most TASK_LEN elements of one row, so a
// single long row (same-shape or scalar operands) still spreads over threads.
#define TASK_LEN 8192

static inline int64_t bcast_tasks(const bcast *p, int64_t *per_row) {
    int64_t n = p->shape[p->nd - 1];
    *per_row = n > 0 ? (n + TASK_LEN - 1) / TASK_LEN : 0;
    return p->rows * *per_row;
}

// Row, column range and operand offsets of task t.
static inline void bcast_task(const bcast *p, int64_t t, int64_t per_row, int64_t *row,
                              int64_t *j0, int64_t *j1, int64_t *oa, int64_t *ob) {
    int64_t n = p->shape[p->nd - 1];
    *row = t / per_row;
    *j0 = (t % per_row) * TASK_LEN;
    *j1 = *j0 + TASK_LEN < n ? *j0 + TASK_LEN : n;
    bcast_row(p, *row, oa, ob);
}

static void binary_forward(const bcast *p, int kind, const float *a, const float *b,
                           float *y) {
    int64_t n = p->shape[p->nd - 1], per_row;
    int64_t ia = p->sa[p->nd - 1], ib = p->sb[p->nd - 1];
    int64_t tasks = bcast_tasks(p, &per_row);
#pragma omp parallel for schedule(static) if (p->rows * n >= PAR_MIN && tasks > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t r, j0, j1, oa, ob;
        bcast_task(p, t, per_row, &r, &j0, &j1, &oa, &ob);
        const float *ar = a + oa, *br = b + ob;
        float *yr = y + r * n;
        // Inner strides are 0 or 1; spelled out so the compiler vectorizes.
        if (ia && ib) {
            if (kind == BIN_ADD) for (int64_t j = j0; j < j1; j++) yr[j] = ar[j] + br[j];
            else if (kind == BIN_SUB) for (int64_t j = j0; j < j1; j++) yr[j] = ar[j] - br[j];
            else for (int64_t j = j0; j < j1; j++) yr[j] = ar[j] * br[j];
        } else if (ia) {
            float s = br[0];
            if (kind == BIN_ADD) for (int64_t j = j0; j < j1; j++) yr[j] = ar[j] + s;
            else if (kind == BIN_SUB) for (int64_t j = j0; j < j1; j++) yr[j] = ar[j] - s;
            else for (int64_t j = j0; j < j1; j++) yr[j] = ar[j] * s;
        } else if (ib) {
            float s = ar[0];
            if (kind == BIN_ADD) for (int64_t j = j0; j < j1; j++) yr[j] = s + br[j];
            else if (kind == BIN_SUB) for (int64_t j = j0; j < j1; j++) yr[j] = s - br[j];
            else for (int64_t j = j0; j < j1; j++) yr[j] = s * br[j];
        } else {
            float v = kind == BIN_ADD ? ar[0] + br[0] : kind == BIN_SUB ? ar[0] - br[0]
                                                                       : ar[0] * br[0];
            for (int64_t j = j0; j < j1; j++) yr[j] = v;
        }
    }
}

// dst[idx_self(i)] += sign * g[i] * (other ? other[idx_other(i)] : 1) over all
// output elements i. self_is_a picks which operand dst belongs to. Every
// element of dst is written, so a fresh dst (tensor_grad_first) is stored
// into, 0.0f + v being the float of the += on zeros.
static void bcast_accum(const bcast *p, bool self_is_a, const float *g, const float *other,
                        float sign, float *dst, int64_t dst_numel, bool fresh) {
    int64_t n = p->shape[p->nd - 1], per_row;
    int64_t out_numel = p->rows * n;
    int64_t tasks = bcast_tasks(p, &per_row);
    int64_t is = self_is_a ? p->sa[p->nd - 1] : p->sb[p->nd - 1];
    int64_t io = self_is_a ? p->sb[p->nd - 1] : p->sa[p->nd - 1];
    bool par = out_numel >= PAR_MIN && tasks > 1;
    if (dst_numel == out_numel) {
        // Full operand: each output element has its own destination.
#pragma omp parallel for schedule(static) if (par)
        for (int64_t t = 0; t < tasks; t++) {
            int64_t r, j0, j1, oa, ob;
            bcast_task(p, t, per_row, &r, &j0, &j1, &oa, &ob);
            float *d = dst + (self_is_a ? oa : ob);
            const float *gr = g + r * n;
            if (!other && fresh) {
                for (int64_t j = j0; j < j1; j++) d[j] = 0.0f + sign * gr[j];
            } else if (!other) {
                for (int64_t j = j0; j < j1; j++) d[j] += sign * gr[j];
            } else if (fresh) {
                const float *o = other + (self_is_a ? ob : oa);
                if (io) for (int64_t j = j0; j < j1; j++) d[j] = 0.0f + sign * gr[j] * o[j];
                else for (int64_t j = j0; j < j1; j++) d[j] = 0.0f + sign * gr[j] * o[0];
            } else {
                const float *o = other + (self_is_a ? ob : oa);
                if (io) for (int64_t j = j0; j < j1; j++) d[j] += sign * gr[j] * o[j];
                else for (int64_t j = j0; j < j1; j++) d[j] += sign * gr[j] * o[0];
            }
        }
        return;
    }
    // Broadcast operand: per-thread double accumulators, summed at the end.
    int nt = par ? omp_get_max_threads() : 1;
    double *acc = arena_calloc((size_t)nt * (size_t)dst_numel * sizeof(double));
#pragma omp parallel num_threads(nt) if (par)
    {
        double *my = acc + (size_t)omp_get_thread_num() * (size_t)dst_numel;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            int64_t r, j0, j1, oa, ob;
            bcast_task(p, t, per_row, &r, &j0, &j1, &oa, &ob);
            double *d = my + (self_is_a ? oa : ob);
            const float *gr = g + r * n;
            const float *o = other ? other + (self_is_a ? ob : oa) : NULL;
            if (is) {
                if (!o) for (int64_t j = j0; j < j1; j++) d[j] += gr[j];
                else if (io) for (int64_t j = j0; j < j1; j++) d[j] += (double)gr[j] * o[j];
                else for (int64_t j = j0; j < j1; j++) d[j] += (double)gr[j] * o[0];
            } else {
                double s = 0;
                if (!o) for (int64_t j = j0; j < j1; j++) s += gr[j];
                else if (io) for (int64_t j = j0; j < j1; j++) s += (double)gr[j] * o[j];
                else for (int64_t j = j0; j < j1; j++) s += (double)gr[j] * o[0];
                d[0] += s;
            }
        }
    }
    for (int64_t i = 0; i < dst_numel; i++) {
        double s = 0;
        for (int t = 0; t < nt; t++) s += acc[(size_t)t * (size_t)dst_numel + i];
        if (fresh)
            dst[i] = 0.0f + sign * (float)s;
        else
            dst[i] += sign * (float)s;
    }
}

typedef struct binary_saved {
    bcast plan;
    int kind;
} binary_saved;

static void binary_backward(tape_entry *e) {
    binary_saved *s = e->saved;
    tensor *a = e->in[0], *b = e->in[1];
    const float *g = e->out->grad;
    // a and b may be the same tensor (x + x): b's call then finds a's buffer.
    bool fresh;
    if (a->requires_grad) {
        const float *other = s->kind == BIN_MUL ? b->data : NULL;
        float *ga = tensor_grad_first(a, &fresh);
        bcast_accum(&s->plan, true, g, other, 1.0f, ga, a->numel, fresh);
    }
    if (b->requires_grad) {
        const float *other = s->kind == BIN_MUL ? a->data : NULL;
        float sign = s->kind == BIN_SUB ? -1.0f : 1.0f;
        float *gb = tensor_grad_first(b, &fresh);
        bcast_accum(&s->plan, false, g, other, sign, gb, b->numel, fresh);
    }
}

static tensor *binary_op(tensor *a, tensor *b, int kind, const char *name) {
    bcast p = bcast_plan(a, b, name);
    tensor *y = tensor_new(p.out_ndim, p.out_shape);
    if (y->numel > 0) binary_forward(&p, kind, a->data, b->data, y->data);
    tensor *in[2] = {a, b};
    if (ag_needs_grad(2, in)) {
        binary_saved *s = arena_alloc(sizeof *s);
        s->plan = p;
        s->kind = kind;
        // Only mul reads operands: a's gradient needs b, b's needs a.
        unsigned need = kind != BIN_MUL ? 0
                        : (b->requires_grad ? AG_NEED_IN(0) : 0) |
                              (a->requires_grad ? AG_NEED_IN(1) : 0);
        ag_record_need(name, binary_backward, y, 2, in, s, need);
    }
    return y;
}

tensor *op_add(tensor *a, tensor *b) { return binary_op(a, b, BIN_ADD, "add"); }
tensor *op_sub(tensor *a, tensor *b) { return binary_op(a, b, BIN_SUB, "sub"); }
tensor *op_mul(tensor *a, tensor *b) { return binary_op(a, b, BIN_MUL, "mul"); }

// ---------------------------------------------------------------------------
// Unary elementwise: scale, relu, sigmoid, gelu

static void scale_backward(tape_entry *e) {
    float s = *(float *)e->saved;
    tensor *x = e->in[0];
    float *gx = tensor_grad(x);
    const float *g = e->out->grad;
    int64_t n = x->numel;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) gx[i] += s * g[i];
}

tensor *op_scale(tensor *a, float s) {
    tensor *y = tensor_like(a);
    int64_t n = a->numel;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) y->data[i] = a->data[i] * s;
    if (ag_needs_grad(1, &a)) {
        float *sv = arena_alloc(sizeof(float));
        *sv = s;
        ag_record_need("scale", scale_backward, y, 1, &a, sv, 0);
    }
    return y;
}

static void relu_forward(const float *x, float *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

// y > 0 exactly where x > 0 (NaN included: both are false), so the output is
// what backward keeps; the input can be freed.
static void relu_backward(tape_entry *e) {
    tensor *x = e->in[0];
    float *gx = tensor_grad(x);
    const float *g = e->out->grad, *yd = e->out->data;
    int64_t n = x->numel;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) gx[i] += yd[i] > 0 ? g[i] : 0.0f;
}

tensor *op_relu(tensor *x) {
    tensor *y = tensor_like(x);
    relu_forward(x->data, y->data, x->numel);
    if (ag_needs_grad(1, &x)) ag_record_need("relu", relu_backward, y, 1, &x, NULL, AG_NEED_OUT);
    return y;
}

static void sigmoid_forward(const float *x, float *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void sigmoid_backward(tape_entry *e) {
    tensor *x = e->in[0];
    float *gx = tensor_grad(x);
    const float *g = e->out->grad, *y = e->out->data;
    int64_t n = x->numel;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) gx[i] += g[i] * y[i] * (1.0f - y[i]);
}

tensor *op_sigmoid(tensor *x) {
    tensor *y = tensor_like(x);
    sigmoid_forward(x->data, y->data, x->numel);
    if (ag_needs_grad(1, &x)) ag_record_need("sigmoid", sigmoid_backward, y, 1, &x, NULL, AG_NEED_OUT);
    return y;
}

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

// glibc's libmvec (linked through libm) has vector erff and expf (AVX2: 8 at a
// time, within 1-2 ulp as the scalar ones); declaring them simd lets the GELU
// loops below call those. (gcc only: clang, used for the fuzz build, has no
// such attribute and calls the scalar ones.)
#if defined(__GNUC__) && !defined(__clang__)
float erff(float) __attribute__((simd("notinbranch")));
float expf(float) __attribute__((simd("notinbranch")));
#endif

static void gelu_forward(const float *x, float *y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= 4096)
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x)
#pragma omp declare simd
static inline float gelu_grad(float v, float g) {
    float cdf = 0.5f * (1.0f + erff(v * INV_SQRT2));
    float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);
    return g * (cdf + v * pdf);
}

static void gelu_backward(tape_entry *e) {
    tensor *x = e->in[0];
    bool fresh;   // every element of gx is written below
    float *gx = tensor_grad_first(x, &fresh);
    const float *g = e->out->grad, *xd = x->data;
    int64_t n = x->numel;
    if (fresh) {
#pragma omp parallel for simd schedule(static) if (n >= 4096)
        for (int64_t i = 0; i < n; i++) gx[i] = 0.0f + gelu_grad(xd[i], g[i]);
    } else {
#pragma omp parallel for simd schedule(static) if (n >= 4096)
        for (int64_t i = 0; i < n; i++) gx[i] += gelu_grad(xd[i], g[i]);
    }
}

tensor *op_gelu(tensor *x) {
    tensor *y = tensor_like(x);
    gelu_forward(x->data, y->data, x->numel);
    if (ag_needs_grad(1, &x)) ag_record_need("gelu", gelu_backward, y, 1, &x, NULL, AG_NEED_IN(0));
    return y;
}

// ---------------------------------------------------------------------------
// PReLU: x [B, C, ...], w [C]; y = x > 0 ? x : w[c] x

static void prelu_dims(const tensor *x, int *B, int *C, int64_t *S) {
    *B = x->shape[0];
    *C = x->shape[1];
    *S = 1;
    for (int i = 2; i < x->ndim; i++) *S *= x->shape[i];
}

// The select is written on two computed values (no branch, restrict rows) so
// the compiler vectorizes it: the branchy form compiled to scalar code with a
// mispredicted jump per element (8.7% of an eval forward's samples in perf).
static void prelu_row(const float *restrict xr, float a, float *restrict yr, int64_t S) {
#pragma omp simd
    for (int64_t j = 0; j < S; j++) {
        float v = xr[j], av = a * v;
        yr[j] = v > 0 ? v : av;
    }
}

static void prelu_forward(const float *x, const float *w, float *y, int B, int C,
                          int64_t S) {
#pragma omp parallel for schedule(static) if ((int64_t)B * C * S >= PAR_MIN)
    for (int64_t bc = 0; bc < (int64_t)B * C; bc++) prelu_row(x + bc * S, w[bc % C], y + bc * S, S);
}

static void prelu_grad_row(const float *restrict xr, const float *restrict gr, float a,
                           float *restrict d, int64_t S, bool fresh) {
    if (fresh) {
#pragma omp simd
        for (int64_t j = 0; j < S; j++) {
            float g = gr[j], ag = a * g;
            d[j] = 0.0f + (xr[j] > 0 ? g : ag);
        }
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < S; j++) {
        float g = gr[j], ag = a * g;
        d[j] += xr[j] > 0 ? g : ag;
    }
}

// One pass over (b, c) rows computes dx and a per-row partial of dw (race
// free); the partials are then summed per channel in double.
static void prelu_backward(tape_entry *e) {
    tensor *x = e->in[0], *w = e->in[1];
    int B, C;
    int64_t S;
    prelu_dims(x, &B, &C, &S);
    const float *g = e->out->grad, *xd = x->data, *wd = w->data;
    int64_t BC = (int64_t)B * C;
    bool fresh = false;   // every (b, c) row of gx is written below
    float *gx = x->requires_grad ? tensor_grad_first(x, &fresh) : NULL;
    double *part = w->requires_grad ? arena_alloc((size_t)BC * sizeof(double)) : NULL;
#pragma omp parallel for schedule(static) if (BC * S >= PAR_MIN && BC > 1)
    for (int64_t bc = 0; bc < BC; bc++) {
        float a = wd[bc % C];
        const float *xr = xd + bc * S, *gr = g + bc * S;
        if (gx) {
            prelu_grad_row(xr, gr, a, gx + bc * S, S, fresh);
        }
        if (part) {
            double s = 0;   // double: the sum must not depend on how it vectorizes
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < S; j++) s += xr[j] > 0 ? 0.0f : gr[j] * xr[j];
            part[bc] = s;
        }
    }
    if (part) {
        float *gw = tensor_grad(w);
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int b = 0; b < B; b++) s += part[(int64_t)b * C + c];
            gw[c] += (float)s;
        }
    }
}

static void prelu_recompute(tape_entry *e, float *out) {
    int B, C;
    int64_t S;
    prelu_dims(e->in[0], &B, &C, &S);
    prelu_forward(e->in[0]->data, e->in[1]->data, out, B, C, S);
}

tensor *op_prelu(tensor *x, tensor *w) {
    AG_ASSERT(x->ndim >= 2, "prelu: input needs a channel axis, got ndim %d", x->ndim);
    int B, C;
    int64_t S;
    prelu_dims(x, &B, &C, &S);
    AG_ASSERT(w->numel == C, "prelu: weight has %lld elements for %d channels",
              (long long)w->numel, C);
    tensor *y = tensor_like(x);
    prelu_forward(x->data, w->data, y->data, B, C, S);
    tensor *in[2] = {x, w};
    if (ag_needs_grad(2, in))
        ag_record_need("prelu", prelu_backward, y, 2, in, NULL, AG_NEED_INPUTS)->recompute =
            prelu_recompute;
    return y;
}

// ---------------------------------------------------------------------------
// Reshape: a view. It needs no tape entry: the view's gradient buffer is its
// base's (tensor_grad resolves to the root), so whatever flows into the view
// already sits in the base's gradient when the base's producer runs backward.

tensor *op_reshape(tensor *x, int ndim, const int *shape) {
    AG_ASSERT(ndim >= 0 && ndim <= T_MAXDIM, "reshape: ndim %d", ndim);
    int shp[T_MAXDIM], infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        shp[i] = shape[i];
        if (shape[i] == -1) {
            AG_ASSERT(infer < 0, "reshape: more than one -1");
            infer = i;
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        AG_ASSERT(known > 0 && x->numel % known == 0, "reshape: cannot infer -1 for %lld elements",
                  (long long)x->numel);
        shp[infer] = (int)(x->numel / known);
    }
    return tensor_view(x, ndim, shp);
}

// ---------------------------------------------------------------------------
// Permute (copy). Both directions walk the destination contiguously in rows
// of its last dim and gather from the source with permuted strides: forward
// writes y from x, backward accumulates into gx from g with the inverse
// permutation, so neither does strided read-modify-writes.

typedef struct permute_saved {
    int perm[T_MAXDIM];
} permute_saved;

static void contiguous_strides(int nd, const int *shape, int64_t *st) {
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= shape[i];
    }
}

// dst[d] (=|+=) src[sum_i idx_i * sst[i]] over dst of shape dshape.
static void gather_strided(int nd, const int *dshape, const int64_t *sst, const float *src,
                           float *dst, bool accumulate) {
    int64_t numel = shape_numel(nd, dshape);
    if (numel == 0) return;
    if (nd == 0) {
        dst[0] = accumulate ? dst[0] + src[0] : src[0];
        return;
    }
    int64_t n = dshape[nd - 1], inner = sst[nd - 1];
    int64_t rows = numel / n;
#pragma omp parallel for schedule(static) if (numel >= PAR_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = 0, rr = r;
        for (int d = nd - 2; d >= 0; d--) {
            off += (rr % dshape[d]) * sst[d];
            rr /= dshape[d];
        }
        const float *sr = src + off;
        float *dr = dst + r * n;
        if (accumulate) {
            if (inner == 1) for (int64_t j = 0; j < n; j++) dr[j] += sr[j];
            else for (int64_t j = 0; j < n; j++) dr[j] += sr[j * inner];
        } else {
            if (inner == 1) memcpy(dr, sr, (size_t)n * sizeof(float));
            else for (int64_t j = 0; j < n; j++) dr[j] = sr[j * inner];
        }
    }
}

static void permute_backward(tape_entry *e) {
    permute_saved *s = e->saved;
    tensor *x = e->in[0], *y = e->out;
    int64_t yst[T_MAXDIM], sst[T_MAXDIM];
    contiguous_strides(y->ndim, y->shape, yst);
    // x dim perm[j] is y dim j
    for (int j = 0; j < y->ndim; j++) sst[s->perm[j]] = yst[j];
    gather_strided(x->ndim, x->shape, sst, y->grad, tensor_grad(x), true);
}

tensor *op_permute(tensor *x, const int *perm) {
    int nd = x->ndim, oshape[T_MAXDIM];
    bool seen[T_MAXDIM] = {false};
    permute_saved *s = arena_alloc(sizeof *s);
    for (int i = 0; i < nd; i++) {
        AG_ASSERT(perm[i] >= 0 && perm[i] < nd && !seen[perm[i]],
                  "permute: bad permutation entry %d at %d for ndim %d", perm[i], i, nd);
        seen[perm[i]] = true;
        s->perm[i] = perm[i];
        oshape[i] = x->shape[perm[i]];
    }
    tensor *y = tensor_new(nd, oshape);
    int64_t xst[T_MAXDIM], sst[T_MAXDIM];
    contiguous_strides(nd, x->shape, xst);
    for (int i = 0; i < nd; i++) sst[i] = xst[perm[i]];
    gather_strided(nd, oshape, sst, x->data, y->data, false);
    if (ag_needs_grad(1, &x)) ag_record_need("permute", permute_backward, y, 1, &x, s, 0);
    return y;
}

tensor *op_transpose(tensor *x, int d0, int d1) {
    d0 = norm_axis(d0, x->ndim, "transpose");
    d1 = norm_axis(d1, x->ndim, "transpose");
    int perm[T_MAXDIM];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return op_permute(x, perm);
}

// ---------------------------------------------------------------------------
// Concat: seen as [outer, n_i * inner] blocks per input. The tape holds at
// most TAPE_MAX_IN inputs, so the full list lives in the saved struct.

typedef struct concat_saved {
    int n, axis;
    tensor **xs;
} concat_saved;

static void concat_geom(const tensor *y, int axis, int64_t *outer, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++) *outer *= y->shape[i];
    for (int i = axis + 1; i < y->ndim; i++) *inner *= y->shape[i];
}

static void concat_backward(tape_entry *e) {
    concat_saved *s = e->saved;
    int64_t outer, inner;
    concat_geom(e->out, s->axis, &outer, &inner);
    int64_t row = (int64_t)e->out->shape[s->axis] * inner;
    const float *g = e->out->grad;
    int64_t off = 0;
    for (int k = 0; k < s->n; k++) {
        tensor *x = s->xs[k];
        int64_t len = (int64_t)x->shape[s->axis] * inner;
        if (x->requires_grad) {
            float *gx = tensor_grad(x);
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN && outer > 1)
            for (int64_t o = 0; o < outer; o++)
                for (int64_t j = 0; j < len; j++) gx[o * len + j] += g[o * row + off + j];
        }
        off += len;
    }
}

tensor *op_concat(tensor *const *xs, int n, int axis) {
    AG_ASSERT(n >= 1, "concat: no inputs");
    int nd = xs[0]->ndim;
    axis = norm_axis(axis, nd, "concat");
    int oshape[T_MAXDIM];
    for (int i = 0; i < nd; i++) oshape[i] = xs[0]->shape[i];
    oshape[axis] = 0;
    for (int k = 0; k < n; k++) {
        AG_ASSERT(xs[k]->ndim == nd, "concat: input %d has ndim %d, expected %d", k,
                  xs[k]->ndim, nd);
        for (int i = 0; i < nd; i++)
            AG_ASSERT(i == axis || xs[k]->shape[i] == xs[0]->shape[i],
                      "concat: input %d dim %d is %d, expected %d", k, i, xs[k]->shape[i],
                      xs[0]->shape[i]);
        oshape[axis] += xs[k]->shape[axis];
    }
    tensor *y = tensor_new(nd, oshape);
    int64_t outer, inner;
    concat_geom(y, axis, &outer, &inner);
    int64_t row = (int64_t)oshape[axis] * inner, off = 0;
    for (int k = 0; k < n; k++) {
        int64_t len = (int64_t)xs[k]->shape[axis] * inner;
        const float *x = xs[k]->data;
#pragma omp parallel for schedule(static) if (xs[k]->numel >= PAR_MIN && outer > 1)
        for (int64_t o = 0; o < outer; o++)
            memcpy(y->data + o * row + off, x + o * len, (size_t)len * sizeof(float));
        off += len;
    }
    if (ag_needs_grad(n, xs)) {
        concat_saved *s = arena_alloc(sizeof *s);
        s->n = n;
        s->axis = axis;
        s->xs = arena_alloc((size_t)n * sizeof(tensor *));
        memcpy(s->xs, xs, (size_t)n * sizeof(tensor *));
        ag_record_need("concat", concat_backward, y, n < TAPE_MAX_IN ? n : TAPE_MAX_IN, xs, s, 0);
    }
    return y;
}

// ---------------------------------------------------------------------------
// Slice along one axis, [start, end)

typedef struct slice_saved {
    int axis, start;
} slice_saved;

static void slice_backward(tape_entry *e) {
    slice_saved *s = e->saved;
    tensor *x = e->in[0];
    float *gx = tensor_grad(x);
    const float *g = e->out->grad;
    int64_t outer, inner;
    concat_geom(x, s->axis, &outer, &inner);
    int64_t xrow = (int64_t)x->shape[s->axis] * inner;
    int64_t len = (int64_t)e->out->shape[s->axis] * inner, off = (int64_t)s->start * inner;
#pragma omp parallel for schedule(static) if (e->out->numel >= PAR_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < len; j++) gx[o * xrow + off + j] += g[o * len + j];
}

tensor *op_slice(tensor *x, int axis, int start, int end) {
    axis = norm_axis(axis, x->ndim, "slice");
    AG_ASSERT(0 <= start && start <= end && end <= x->shape[axis],
              "slice: [%d, %d) out of range for dim %d of size %d", start, end, axis,
              x->shape[axis]);
    int oshape[T_MAXDIM];
    for (int i = 0; i < x->ndim; i++) oshape[i] = x->shape[i];
    oshape[axis] = end - start;
    tensor *y = tensor_new(x->ndim, oshape);
    int64_t outer, inner;
    concat_geom(x, axis, &outer, &inner);
    int64_t xrow = (int64_t)x->shape[axis] * inner;
    int64_t len = (int64_t)(end - start) * inner, off = (int64_t)start * inner;
#pragma omp parallel for schedule(static) if (y->numel >= PAR_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        memcpy(y->data + o * len, x->data + o * xrow + off, (size_t)len * sizeof(float));
    if (ag_needs_grad(1, &x)) {
        slice_saved *s = arena_alloc(sizeof *s);
        s->axis = axis;
        s->start = start;
        ag_record_need("slice", slice_backward, y, 1, &x, s, 0);
    }
    return y;
}

// ---------------------------------------------------------------------------
// Mean over one axis: x seen as [outer, n, inner] -> [outer, inner]

typedef struct mean_saved {
    int axis;
} mean_saved;

static void mean_forward(const float *x, float *y, int64_t outer, int n, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * n * inner >= PAR_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++) {
        float *yr = y + o * inner;
        const float *xo = x + o * n * inner;
        for (int64_t j = 0; j < inner; j++) yr[j] = 0;
        for (int k = 0; k < n; k++)
            for (int64_t j = 0; j < inner; j++) yr[j] += xo[k * inner + j];
        float inv = 1.0f / (float)n;
        for (int64_t j = 0; j < inner; j++) yr[j] *= inv;
    }
}

static void mean_backward(tape_entry *e) {
    mean_saved *s = e->saved;
    tensor *x = e->in[0];
    float *gx = tensor_grad(x);
    const float *g = e->out->grad;
    int64_t outer, inner;
    concat_geom(x, s->axis, &outer, &inner);
    int n = x->shape[s->axis];
    float inv = 1.0f / (float)n;
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++)
        for (int k = 0; k < n; k++)
            for (int64_t j = 0; j < inner; j++)
                gx[(o * n + k) * inner + j] += g[o * inner + j] * inv;
}

tensor *op_mean(tensor *x, int axis, bool keepdim) {
    axis = norm_axis(axis, x->ndim, "mean");
    AG_ASSERT(x->shape[axis] > 0, "mean: empty axis %d", axis);
    int oshape[T_MAXDIM] = {0}, k = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i == axis) {
            if (keepdim) oshape[k++] = 1;
        } else {
            oshape[k++] = x->shape[i];
        }
    }
    tensor *y = tensor_new(k, oshape);
    int64_t outer, inner;
    concat_geom(x, axis, &outer, &inner);
    mean_forward(x->data, y->data, outer, x->shape[axis], inner);
    if (ag_needs_grad(1, &x)) {
        mean_saved *s = arena_alloc(sizeof *s);
        s->axis = axis;
        ag_record_need("mean", mean_backward, y, 1, &x, s, 0);
    }
    return y;
}

// ---------------------------------------------------------------------------
// Subsample: x[:, :, ::s, ::s] on [B, C, H, W] -> [B, C, ceil(H/s), ceil(W/s)].
// For H = 2 Ho, F.interpolate(x, size=Ho) (nearest) picks source pixel 2i, so
// it is exactly stride-2 subsampling.

static void subsample_backward(tape_entry *e) {
    int s = *(int *)e->saved;
    tensor *x = e->in[0];
    float *gx = tensor_grad(x);
    const float *g = e->out->grad;
    int64_t BC = (int64_t)x->shape[0] * x->shape[1];
    int H = x->shape[2], W = x->shape[3], Ho = e->out->shape[2], Wo = e->out->shape[3];
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN && BC > 1)
    for (int64_t bc = 0; bc < BC; bc++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++)
                gx[(bc * H + (int64_t)i * s) * W + (int64_t)j * s] +=
                    g[(bc * Ho + i) * Wo + j];
}

tensor *op_subsample(tensor *x, int stride) {
    AG_ASSERT(x->ndim == 4, "subsample: expected [B, C, H, W], got ndim %d", x->ndim);
    AG_ASSERT(stride >= 1, "subsample: stride %d", stride);
    int H = x->shape[2], W = x->shape[3];
    int Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride;
    tensor *y = tensor_new(T_SHAPE(x->shape[0], x->shape[1], Ho, Wo));
    int64_t BC = (int64_t)x->shape[0] * x->shape[1];
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN && BC > 1)
    for (int64_t bc = 0; bc < BC; bc++)
        for (int i = 0; i < Ho; i++) {
            const float *xr = x->data + (bc * H + (int64_t)i * stride) * W;
            float *yr = y->data + (bc * Ho + i) * Wo;
            for (int j = 0; j < Wo; j++) yr[j] = xr[(int64_t)j * stride];
        }
    if (ag_needs_grad(1, &x)) {
        int *s = arena_alloc(sizeof(int));
        *s = stride;
        ag_record_need("subsample", subsample_backward, y, 1, &x, s, 0);
    }
    return y;
}
