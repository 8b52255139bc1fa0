// Softmax, log-softmax, layer norm, batch norm, drop path and cross entropy.
//
// Row statistics (max, sums, mean, variance) accumulate in double: rows are
// up to a few thousand long and the fixtures compare against float64 PyTorch.
// Rows (or channels, for batch norm) are independent, so OpenMP splits them
// and no reduction crosses threads except the affine parameter gradients of
// layer norm, which use per-thread buffers.
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops.h"

#define PAR_MIN 32768

static void last_axis_dims(const tensor *x, int64_t *rows, int *D, const char *op) {
    AG_ASSERT(x->ndim >= 1, "%s: needs at least one dim", op);
    *D = x->shape[x->ndim - 1];
    *rows = *D > 0 ? x->numel / *D : 0;
}

// ---------------------------------------------------------------------------
// Softmax / log-softmax over the last axis

static void softmax_forward(const float *x, float *y, int64_t rows, int D, bool log_out) {
#pragma omp parallel for schedule(static) if (rows * D >= PAR_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        float m = xr[0];
        for (int j = 1; j < D; j++) m = xr[j] > m ? xr[j] : m;
        // exp in float (as PyTorch), the sum in double.
        double s = 0;
        if (log_out) {
            for (int j = 0; j < D; j++) s += expf(xr[j] - m);
            float lse = (float)(m + log(s));
            for (int j = 0; j < D; j++) yr[j] = xr[j] - lse;
        } else {
            for (int j = 0; j < D; j++) {
                yr[j] = expf(xr[j] - m);
                s += yr[j];
            }
            float inv = (float)(1.0 / s);
            for (int j = 0; j < D; j++) yr[j] *= inv;
        }
    }
}

// gx += y * (g - sum(g y))
static void softmax_backward(tape_entry *e) {
    tensor *x = e->in[0];
    int64_t rows;
    int D;
    last_axis_dims(x, &rows, &D, "softmax");
    float *gx = tensor_grad(x);
    const float *g = e->out->grad, *y = e->out->data;
#pragma omp parallel for schedule(static) if (rows * D >= PAR_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * D, *yr = y + r * D;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < D; j++) dot += (double)gr[j] * yr[j];
        float fd = (float)dot;
        float *d = gx + r * D;
        for (int j = 0; j < D; j++) d[j] += yr[j] * (gr[j] - fd);
    }
}

// gx += g - exp(y) * sum(g)
static void log_softmax_backward(tape_entry *e) {
    tensor *x = e->in[0];
    int64_t rows;
    int D;
    last_axis_dims(x, &rows, &D, "log_softmax");
    float *gx = tensor_grad(x);
    const float *g = e->out->grad, *y = e->out->data;
#pragma omp parallel for schedule(static) if (rows * D >= PAR_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * D, *yr = y + r * D;
        double sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < D; j++) sum += gr[j];
        float fs = (float)sum;
        float *d = gx + r * D;
        for (int j = 0; j < D; j++) d[j] += gr[j] - expf(yr[j]) * fs;
    }
}

static tensor *softmax_op(tensor *x, bool log_out) {
    int64_t rows;
    int D;
    last_axis_dims(x, &rows, &D, log_out ? "log_softmax" : "softmax");
    tensor *y = tensor_like(x);
    if (D > 0) softmax_forward(x->data, y->data, rows, D, log_out);
    if (ag_needs_grad(1, &x)) {
        if (log_out) ag_record_need("log_softmax", log_softmax_backward, y, 1, &x, NULL, AG_NEED_OUT);
        else ag_record_need("softmax", softmax_backward, y, 1, &x, NULL, AG_NEED_OUT);
    }
    return y;
}

tensor *op_softmax(tensor *x) { return softmax_op(x, false); }
tensor *op_log_softmax(tensor *x) { return softmax_op(x, true); }

// ---------------------------------------------------------------------------
// Layer norm over the last axis: y = (x - mean) * rstd * w + b

typedef struct layernorm_saved {
    float *mean, *rstd;   // [rows]
} layernorm_saved;

static void layernorm_forward(const float *x, const float *w, const float *b, float *y,
                              float *mean, float *rstd, int64_t rows, int D, float eps) {
#pragma omp parallel for schedule(static) if (rows * D >= PAR_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < D; j++) s += xr[j];
        double mu = s / D, v = 0;
#pragma omp simd reduction(+ : v)
        for (int j = 0; j < D; j++) {
            double d = xr[j] - mu;
            v += d * d;
        }
        float m = (float)mu, rs = (float)(1.0 / sqrt(v / D + eps));
        mean[r] = m;
        rstd[r] = rs;
        for (int j = 0; j < D; j++) {
            float h = (xr[j] - m) * rs;
            yr[j] = h * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
        }
    }
}

// gx = rstd * (gh - mean(gh) - h * mean(gh h)), gh = g w, h = (x - mean) rstd
static void layernorm_backward(tape_entry *e) {
    layernorm_saved *s = e->saved;
    tensor *x = e->in[0], *w = e->in[1], *b = e->in[2];
    int64_t rows;
    int D;
    last_axis_dims(x, &rows, &D, "layernorm");
    const float *g = e->out->grad, *xd = x->data, *wd = w ? w->data : NULL;
    bool par = rows * D >= PAR_MIN && rows > 1;
    bool need_w = w && w->requires_grad, need_b = b && b->requires_grad;
    bool fresh = false;   // every row of gx is written below
    float *gx = x->requires_grad ? tensor_grad_first(x, &fresh) : NULL;
    int nt = par ? omp_get_max_threads() : 1;
    double *acc = NULL;   // per thread: [D] for w, then [D] for b
    if (need_w || need_b) acc = arena_calloc((size_t)nt * 2 * (size_t)D * sizeof(double));
#pragma omp parallel num_threads(nt) if (par)
    {
        double *aw = acc ? acc + (size_t)omp_get_thread_num() * 2 * (size_t)D : NULL;
        double *ab = aw ? aw + D : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = xd + r * D, *gr = g + r * D;
            float m = s->mean[r], rs = s->rstd[r];
            if (aw) {
                for (int j = 0; j < D; j++) {
                    aw[j] += (double)gr[j] * ((xr[j] - m) * rs);
                    ab[j] += gr[j];
                }
            }
            if (gx) {
                double sg = 0, sgh = 0;
#pragma omp simd reduction(+ : sg, sgh)
                for (int j = 0; j < D; j++) {
                    double gh = (double)gr[j] * (wd ? wd[j] : 1.0f);
                    sg += gh;
                    sgh += gh * ((xr[j] - m) * rs);
                }
                float mg = (float)(sg / D), mgh = (float)(sgh / D);
                float *d = gx + r * D;
                if (fresh)
                    for (int j = 0; j < D; j++) {
                        float gh = gr[j] * (wd ? wd[j] : 1.0f);
                        float h = (xr[j] - m) * rs;
                        d[j] = 0.0f + rs * (gh - mg - h * mgh);
                    }
                else
                    for (int j = 0; j < D; j++) {
                        float gh = gr[j] * (wd ? wd[j] : 1.0f);
                        float h = (xr[j] - m) * rs;
                        d[j] += rs * (gh - mg - h * mgh);
                    }
            }
        }
    }
    if (need_w || need_b) {
        float *gw = need_w ? tensor_grad(w) : NULL, *gb = need_b ? tensor_grad(b) : NULL;
        for (int j = 0; j < D; j++) {
            double sw = 0, sb = 0;
            for (int t = 0; t < nt; t++) {
                sw += acc[(size_t)t * 2 * D + j];
                sb += acc[(size_t)t * 2 * D + D + j];
            }
            if (gw) gw[j] += (float)sw;
            if (gb) gb[j] += (float)sb;
        }
    }
}

tensor *op_layernorm(tensor *x, tensor *weight, tensor *bias, float eps) {
    int64_t rows;
    int D;
    last_axis_dims(x, &rows, &D, "layernorm");
    AG_ASSERT(D > 0, "layernorm: empty last axis");
    AG_ASSERT(!weight || weight->numel == D, "layernorm: weight has %lld elements, D = %d",
              (long long)weight->numel, D);
    AG_ASSERT(!bias || bias->numel == D, "layernorm: bias has %lld elements, D = %d",
              (long long)bias->numel, D);
    tensor *y = tensor_like(x);
    layernorm_saved *s = arena_alloc(sizeof *s);
    s->mean = arena_alloc((size_t)rows * sizeof(float));
    s->rstd = arena_alloc((size_t)rows * sizeof(float));
    layernorm_forward(x->data, weight ? weight->data : NULL, bias ? bias->data : NULL,
                      y->data, s->mean, s->rstd, rows, D, eps);
    tensor *in[3] = {x, weight, bias};
    if (ag_needs_grad(3, in)) ag_record_need("layernorm", layernorm_backward, y, 3, in, s, AG_NEED_IN(0) | AG_NEED_IN(1));
    return y;
}

// ---------------------------------------------------------------------------
// Batch norm: x seen as [B, C, S] (S = 1 for [B, C]); statistics per channel.

typedef struct batchnorm_saved {
    float *mean, *rstd;   // [C]: batch statistics (training) or running ones (eval)
    bool training;
} batchnorm_saved;

static void bn_dims(const tensor *x, int *B, int *C, int64_t *S) {
    AG_ASSERT(x->ndim >= 2, "batchnorm: expected [B, C, ...], got ndim %d", x->ndim);
    *B = x->shape[0];
    *C = x->shape[1];
    *S = 1;
    for (int i = 2; i < x->ndim; i++) *S *= x->shape[i];
}

// Batch mean and biased variance per channel (two passes), summed in double.
// With a float accumulator the sum depended on whether the compiler split the
// loop into vector lanes (the sanitizer build does not), and one float running
// sum over a 56x56 row is the least accurate order there is.
static void bn_stats(const float *x, int B, int C, int64_t S, double *mean, double *var) {
#pragma omp parallel for schedule(static) if ((int64_t)B * C * S >= PAR_MIN && C > 1)
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int b = 0; b < B; b++) {
            const float *xr = x + ((int64_t)b * C + c) * S;
            double rs = 0;
#pragma omp simd reduction(+ : rs)
            for (int64_t j = 0; j < S; j++) rs += xr[j];
            s += rs;
        }
        double n = (double)B * S, mu = s / n, v = 0;
        float fm = (float)mu;
        for (int b = 0; b < B; b++) {
            const float *xr = x + ((int64_t)b * C + c) * S;
            double rv = 0;
#pragma omp simd reduction(+ : rv)
            for (int64_t j = 0; j < S; j++) {
                float d = xr[j] - fm;
                rv += d * d;
            }
            v += rv;
        }
        mean[c] = mu;
        var[c] = v / n;
    }
}

// y = x * k + o with k = rstd w, o = bias - mean k: one function for bn_apply
// and op_batchnorm_affine, so a fused consumer computes the same floats.
static inline void bn_coef(const float *mean, const float *rstd, const float *w,
                           const float *bias, int c, float *k, float *o) {
    *k = rstd[c] * (w ? w[c] : 1.0f);
    *o = (bias ? bias[c] : 0.0f) - mean[c] * *k;
}

static void bn_apply(const float *x, const float *mean, const float *rstd, const float *w,
                     const float *bias, float *y, int B, int C, int64_t S) {
#pragma omp parallel for schedule(static) if ((int64_t)B * C * S >= PAR_MIN)
    for (int64_t bc = 0; bc < (int64_t)B * C; bc++) {
        int c = (int)(bc % C);
        float k, o;
        bn_coef(mean, rstd, w, bias, c, &k, &o);
        const float *xr = x + bc * S;
        float *yr = y + bc * S;
        for (int64_t j = 0; j < S; j++) yr[j] = xr[j] * k + o;
    }
}

static void batchnorm_backward(tape_entry *e) {
    batchnorm_saved *s = e->saved;
    tensor *x = e->in[0], *w = e->in[1], *bias = e->in[2];
    int B, C;
    int64_t S;
    bn_dims(x, &B, &C, &S);
    const float *g = e->out->grad, *xd = x->data;
    bool fresh = false;   // gx is written whole below (every channel, sample, element)
    float *gx = x->requires_grad ? tensor_grad_first(x, &fresh) : NULL;
    float *gw = w && w->requires_grad ? tensor_grad(w) : NULL;
    float *gb = bias && bias->requires_grad ? tensor_grad(bias) : NULL;
    double n = (double)B * S;
#pragma omp parallel for schedule(static) if ((int64_t)B * C * S >= PAR_MIN && C > 1)
    for (int c = 0; c < C; c++) {
        float m = s->mean[c], rs = s->rstd[c], wc = w ? w->data[c] : 1.0f;
        // sum g and sum g h over the channel, h = (x - mean) rstd
        double sg = 0, sgh = 0;
        for (int b = 0; b < B; b++) {
            const float *xr = xd + ((int64_t)b * C + c) * S, *gr = g + ((int64_t)b * C + c) * S;
            double rg = 0, rgh = 0;   // double, as in bn_stats
#pragma omp simd reduction(+ : rg, rgh)
            for (int64_t j = 0; j < S; j++) {
                rg += gr[j];
                rgh += gr[j] * ((xr[j] - m) * rs);
            }
            sg += rg;
            sgh += rgh;
        }
        if (gw) gw[c] += (float)sgh;
        if (gb) gb[c] += (float)sg;
        if (!gx) continue;
        float k = rs * wc;
        // Training: the batch statistics depend on x too, which subtracts the
        // mean of the gradient and its projection on h.
        float mg = s->training ? (float)(sg / n) : 0.0f;
        float mgh = s->training ? (float)(sgh / n) : 0.0f;
        for (int b = 0; b < B; b++) {
            const float *xr = xd + ((int64_t)b * C + c) * S, *gr = g + ((int64_t)b * C + c) * S;
            float *d = gx + ((int64_t)b * C + c) * S;
            if (s->training && fresh)
                for (int64_t j = 0; j < S; j++)
                    d[j] = 0.0f + k * (gr[j] - mg - ((xr[j] - m) * rs) * mgh);
            else if (s->training)
                for (int64_t j = 0; j < S; j++)
                    d[j] += k * (gr[j] - mg - ((xr[j] - m) * rs) * mgh);
            else if (fresh)
                for (int64_t j = 0; j < S; j++) d[j] = 0.0f + k * gr[j];
            else
                for (int64_t j = 0; j < S; j++) d[j] += k * gr[j];
        }
    }
}

// The output again, exactly as the forward wrote it (same statistics, same kernel).
static void batchnorm_recompute(tape_entry *e, float *out) {
    const batchnorm_saved *s = e->saved;
    tensor *x = e->in[0], *w = e->in[1], *bias = e->in[2];
    int B, C;
    int64_t S;
    bn_dims(x, &B, &C, &S);
    bn_apply(x->data, s->mean, s->rstd, w ? w->data : NULL, bias ? bias->data : NULL, out, B,
             C, S);
}

void op_batchnorm_update_running(const bn_args *a, int C, const double *mean, const double *var,
                                 int64_t n) {
    if (a->running_mean) {
        float mom = a->momentum;
        float *rm = a->running_mean->data, *rv = a->running_var->data;
        for (int c = 0; c < C; c++) {
            double unbiased = var[c] * (double)n / (double)(n - 1);
            rm[c] = (float)((1.0 - mom) * rm[c] + mom * mean[c]);
            rv[c] = (float)((1.0 - mom) * rv[c] + mom * unbiased);
        }
    }
    if (a->num_batches_tracked) ++*a->num_batches_tracked;
}

static void bn_running_stats(const bn_args *a, int C, float *mean, float *rstd) {
    for (int c = 0; c < C; c++) {
        mean[c] = a->running_mean->data[c];
        rstd[c] = (float)(1.0 / sqrt((double)a->running_var->data[c] + a->eps));
    }
}

void op_batchnorm_affine(const bn_args *a, int C, float *k, float *o) {
    AG_ASSERT(!a->training && a->running_mean && a->running_var &&
                  a->running_mean->numel == C && a->running_var->numel == C &&
                  (!a->weight || a->weight->numel == C) && (!a->bias || a->bias->numel == C),
              "batchnorm affine: eval mode with running statistics of %d channels", C);
    float *mean = arena_alloc((size_t)C * sizeof(float));
    float *rstd = arena_alloc((size_t)C * sizeof(float));
    bn_running_stats(a, C, mean, rstd);
    for (int c = 0; c < C; c++)
        bn_coef(mean, rstd, a->weight ? a->weight->data : NULL, a->bias ? a->bias->data : NULL,
                c, &k[c], &o[c]);
}

tensor *op_batchnorm(tensor *x, const bn_args *a) {
    int B, C;
    int64_t S;
    bn_dims(x, &B, &C, &S);
    AG_ASSERT(!a->weight || a->weight->numel == C, "batchnorm: weight size != C = %d", C);
    AG_ASSERT(!a->bias || a->bias->numel == C, "batchnorm: bias size != C = %d", C);
    AG_ASSERT((a->running_mean == NULL) == (a->running_var == NULL),
              "batchnorm: running_mean and running_var must both be given or both NULL");
    AG_ASSERT(!a->running_mean || (a->running_mean->numel == C && a->running_var->numel == C),
              "batchnorm: running stats size != C = %d", C);
    bool use_batch = a->training || !a->running_mean;
    batchnorm_saved *s = arena_alloc(sizeof *s);
    s->mean = arena_alloc((size_t)C * sizeof(float));
    s->rstd = arena_alloc((size_t)C * sizeof(float));
    s->training = use_batch;
    if (use_batch) {
        int64_t n = (int64_t)B * S;
        AG_ASSERT(n > 1, "batchnorm: expected more than 1 value per channel when training, "
                         "got input [%d, %d, ...] (%lld per channel)", B, C, (long long)n);
        double *mean = arena_alloc((size_t)C * sizeof(double));
        double *var = arena_alloc((size_t)C * sizeof(double));
        bn_stats(x->data, B, C, S, mean, var);
        for (int c = 0; c < C; c++) {
            s->mean[c] = (float)mean[c];
            s->rstd[c] = (float)(1.0 / sqrt(var[c] + a->eps));
        }
        if (a->training) op_batchnorm_update_running(a, C, mean, var, n);
        if (a->training && a->batch_stats) {
            memcpy(a->batch_stats, mean, (size_t)C * sizeof(double));
            memcpy(a->batch_stats + C, var, (size_t)C * sizeof(double));
        }
    } else {
        bn_running_stats(a, C, s->mean, s->rstd);
    }
    tensor *y = tensor_like(x);
    bn_apply(x->data, s->mean, s->rstd, a->weight ? a->weight->data : NULL,
             a->bias ? a->bias->data : NULL, y->data, B, C, S);
    tensor *in[3] = {x, a->weight, a->bias};
    if (ag_needs_grad(3, in))
        ag_record_need("batchnorm", batchnorm_backward, y, 3, in, s,
                       AG_NEED_IN(0) | AG_NEED_IN(1))->recompute = batchnorm_recompute;
    return y;
}

// ---------------------------------------------------------------------------
// Drop path: per-sample keep mask, kept samples scaled by 1 / (1 - rate).
// As timm: keep iff floor(keep + u) == 1, i.e. u >= rate, u ~ U[0, 1).

typedef struct drop_path_saved {
    float *factor;   // [B]: 0 or 1 / (1 - rate)
} drop_path_saved;

static void drop_path_backward(tape_entry *e) {
    drop_path_saved *s = e->saved;
    tensor *x = e->in[0];
    bool fresh;   // every sample's row of gx is written below
    float *gx = tensor_grad_first(x, &fresh);
    const float *g = e->out->grad;
    int B = x->shape[0];
    int64_t per = B > 0 ? x->numel / B : 0;
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN && B > 1)
    for (int b = 0; b < B; b++) {
        float f = s->factor[b];
        if (fresh)
            for (int64_t j = 0; j < per; j++) gx[b * per + j] = 0.0f + f * g[b * per + j];
        else
            for (int64_t j = 0; j < per; j++) gx[b * per + j] += f * g[b * per + j];
    }
}

tensor *op_drop_path(tensor *x, float rate, bool training, rng *r) {
    if (!training || rate == 0.0f) return x;
    AG_ASSERT(rate > 0.0f && rate < 1.0f, "drop_path: rate %g outside [0, 1)", (double)rate);
    AG_ASSERT(x->ndim >= 1 && r != NULL, "drop_path: needs a batch axis and an rng");
    int B = x->shape[0];
    int64_t per = B > 0 ? x->numel / B : 0;
    drop_path_saved *s = arena_alloc(sizeof *s);
    s->factor = arena_alloc((size_t)(B > 0 ? B : 1) * sizeof(float));
    float keep = 1.0f - rate;
    for (int b = 0; b < B; b++) s->factor[b] = rng_uniform(r) >= rate ? 1.0f / keep : 0.0f;
    tensor *y = tensor_like(x);
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN && B > 1)
    for (int b = 0; b < B; b++) {
        float f = s->factor[b];
        for (int64_t j = 0; j < per; j++) y->data[b * per + j] = f * x->data[b * per + j];
    }
    if (ag_needs_grad(1, &x)) ag_record_need("drop_path", drop_path_backward, y, 1, &x, s, 0);
    return y;
}

// ---------------------------------------------------------------------------
// Cross entropy with label smoothing, fused with log-softmax.
// loss = mean_i [(1-s)(lse_i - x_iy) + s (lse_i - mean_k x_ik)]
// dloss/dx_ik = (p_ik - (1-s)[k == y_i] - s/K) / B

typedef struct ce_saved {
    double *lse;       // [B]
    int64_t *target;   // [B], copied: the caller's buffer may not outlive the step
    float smoothing;
} ce_saved;

static void ce_backward(tape_entry *e) {
    ce_saved *s = e->saved;
    tensor *x = e->in[0];
    int B = x->shape[0], K = x->shape[1];
    float *gx = tensor_grad(x);
    float g = e->out->grad[0] / (float)B;
    float sk = s->smoothing / (float)K, on = 1.0f - s->smoothing;
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN && B > 1)
    for (int b = 0; b < B; b++) {
        const float *xr = x->data + (int64_t)b * K;
        float *d = gx + (int64_t)b * K;
        double lse = s->lse[b];
        for (int k = 0; k < K; k++) {
            float p = (float)exp((double)xr[k] - lse);
            d[k] += g * (p - sk - (k == s->target[b] ? on : 0.0f));
        }
    }
}

tensor *op_cross_entropy(tensor *logits, const int64_t *target, float smoothing) {
    AG_ASSERT(logits->ndim == 2, "cross_entropy: logits must be [B, K], got ndim %d",
              logits->ndim);
    int B = logits->shape[0], K = logits->shape[1];
    AG_ASSERT(B > 0 && K > 0, "cross_entropy: empty logits [%d, %d]", B, K);
    ce_saved *s = arena_alloc(sizeof *s);
    s->lse = arena_alloc((size_t)B * sizeof(double));
    s->target = arena_alloc((size_t)B * sizeof(int64_t));
    s->smoothing = smoothing;
    double total = 0;
    for (int b = 0; b < B; b++) {
        int64_t t = target[b];
        AG_ASSERT(t >= 0 && t < K, "cross_entropy: target[%d] = %lld out of range [0, %d)", b,
                  (long long)t, K);
        s->target[b] = t;
        const float *xr = logits->data + (int64_t)b * K;
        float m = xr[0];
        for (int k = 1; k < K; k++) m = xr[k] > m ? xr[k] : m;
        double se = 0, sx = 0;
        for (int k = 0; k < K; k++) {
            se += exp((double)xr[k] - m);
            sx += xr[k];
        }
        double lse = m + log(se);
        s->lse[b] = lse;
        total += (1.0 - smoothing) * (lse - xr[t]) + smoothing * (lse - sx / K);
    }
    tensor *y = tensor_new(0, NULL);
    y->data[0] = (float)(total / B);
    if (ag_needs_grad(1, &logits))
        ag_record_need("cross_entropy", ce_backward, y, 1, &logits, s, AG_NEED_IN(0));
    return y;
}
