// Basic modules (linear, convolutions, batch/layer norm, PReLU, MLP) and the
// registration context that names, lays out and initializes their tensors.
#include "layers/layers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Registration

void lb_init(layer_builder *b, param_store *s) {
    memset(b, 0, sizeof(*b));
    b->s = s;
    b->kind = PARAM_TRAINABLE;
}

void lb_free(layer_builder *b) {
    free(b->init);
    b->init = NULL;
    b->cap = 0;
}

const char *lb_name(char *buf, size_t n, const char *prefix, const char *leaf) {
    int k = prefix && prefix[0] ? snprintf(buf, n, "%s.%s", prefix, leaf)
                                : snprintf(buf, n, "%s", leaf);
    AG_ASSERT(k >= 0 && (size_t)k < n, "name too long: %s.%s", prefix, leaf);
    return buf;
}

int lb_add(layer_builder *b, const char *prefix, const char *leaf, enum param_kind kind,
           int ndim, const int *shape, enum init_rule rule, float a, enum param_role role) {
    char name[160];
    lb_name(name, sizeof name, prefix, leaf);
    int idx = store_add(b->s, name, kind, ndim, shape);
    if (idx >= b->cap) {
        int cap = b->cap ? b->cap * 2 : 512;
        while (cap <= idx) cap *= 2;
        b->init = realloc(b->init, (size_t)cap * sizeof(param_init));
        AG_ASSERT(b->init != NULL, "out of memory");
        b->cap = cap;
    }
    b->init[idx] = (param_init){(uint8_t)rule, (uint8_t)role, a};
    return idx;
}

void lb_apply_init(const layer_builder *b, rng *r) {
    param_store *s = b->s;
    AG_ASSERT(s->finalized, "lb_apply_init before store_finalize");
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        const param_init *pi = &b->init[i];
        if (p->kind == PARAM_COUNTER) {
            *p->counter = 0;
            continue;
        }
        float *d = p->t.data;
        switch (pi->rule) {
        case INIT_UNIFORM:
            for (int64_t j = 0; j < p->numel; j++)
                d[j] = (float)((2.0 * rng_uniform(r) - 1.0) * pi->a);
            break;
        case INIT_NORMAL:
            for (int64_t j = 0; j < p->numel; j++) d[j] = (float)(rng_normal(r) * pi->a);
            break;
        default:
            for (int64_t j = 0; j < p->numel; j++) d[j] = pi->a;
        }
    }
}

// ---------------------------------------------------------------------------
// Linear

void nn_linear_init(linear *m, layer_builder *b, const char *prefix, int in, int out, bool bias) {
    m->in = in;
    m->out = out;
    float bound = (float)(1.0 / sqrt((double)in));
    if (b->kaiming_fan_out)   // MobileFaceNet's _initialize_weights: fan_out = out
        m->w = lb_add(b, prefix, "weight", b->kind, 2, (int[]){out, in}, INIT_NORMAL,
                      (float)sqrt(2.0 / out), ROLE_WEIGHT);
    else   // kaiming_uniform(a = sqrt 5): bound = 1 / sqrt(fan_in)
        m->w = lb_add(b, prefix, "weight", b->kind, 2, (int[]){out, in}, INIT_UNIFORM, bound,
                      ROLE_WEIGHT);
    m->b = bias ? lb_add(b, prefix, "bias", b->kind, 1, (int[]){out},
                         b->kaiming_fan_out ? INIT_CONST : INIT_UNIFORM,
                         b->kaiming_fan_out ? 0.0f : bound, ROLE_BIAS)
                : -1;
}

tensor *nn_linear_forward(const linear *m, param_store *s, tensor *x) {
    return op_linear(x, lb_t(s, m->w), lb_t(s, m->b));
}

// ---------------------------------------------------------------------------
// Convolutions

void nn_conv2d_init(conv2d *m, layer_builder *b, const char *prefix, int cin, int cout, int k,
                 int stride, int pad, int groups, bool bias) {
    AG_ASSERT(cin % groups == 0 && cout % groups == 0, "conv2d %s: groups %d", prefix, groups);
    *m = (conv2d){.cin = cin, .cout = cout, .k = k, .stride = stride, .pad = pad,
                  .groups = groups};
    int fan_in = cin / groups * k * k;
    float bound = (float)(1.0 / sqrt((double)fan_in));
    int shape[4] = {cout, cin / groups, k, k};
    if (b->kaiming_fan_out)   // kaiming_normal_(mode='fan_out'): fan_out = cout * k * k
        m->w = lb_add(b, prefix, "weight", b->kind, 4, shape, INIT_NORMAL,
                      (float)sqrt(2.0 / ((double)cout * k * k)), ROLE_WEIGHT);
    else
        m->w = lb_add(b, prefix, "weight", b->kind, 4, shape, INIT_UNIFORM, bound, ROLE_WEIGHT);
    m->b = bias ? lb_add(b, prefix, "bias", b->kind, 1, (int[]){cout},
                         b->kaiming_fan_out ? INIT_CONST : INIT_UNIFORM,
                         b->kaiming_fan_out ? 0.0f : bound, ROLE_BIAS)
                : -1;
}

tensor *nn_conv2d_forward(const conv2d *m, param_store *s, tensor *x) {
    return op_conv2d(x, lb_t(s, m->w), lb_t(s, m->b), m->stride, m->pad, m->groups);
}

void nn_conv1d_init(conv1d *m, layer_builder *b, const char *prefix, int cin, int cout, int k,
                 int stride, bool transposed) {
    *m = (conv1d){.cin = cin, .cout = cout, .k = k, .stride = stride, .transposed = transposed};
    // PyTorch's fan_in is weight.size(1) * k: cin * k, or cout * k for the
    // transposed weight [cin, cout, k].
    int fan_in = (transposed ? cout : cin) * k;
    float bound = (float)(1.0 / sqrt((double)fan_in));
    int shape[3] = {transposed ? cin : cout, transposed ? cout : cin, k};
    m->w = lb_add(b, prefix, "weight", b->kind, 3, shape, INIT_UNIFORM, bound, ROLE_WEIGHT);
    m->b = lb_add(b, prefix, "bias", b->kind, 1, (int[]){cout}, INIT_UNIFORM, bound, ROLE_BIAS);
}

tensor *nn_conv1d_forward(const conv1d *m, param_store *s, tensor *x) {
    if (m->transposed)
        return op_conv_transpose1d(x, lb_t(s, m->w), lb_t(s, m->b), m->stride);
    return op_conv1d(x, lb_t(s, m->w), lb_t(s, m->b), m->stride);
}

// ---------------------------------------------------------------------------
// Normalization and activations

void nn_batchnorm_init(batchnorm *m, layer_builder *b, const char *prefix, int c) {
    m->c = c;
    int sh[1] = {c};
    m->w = lb_add(b, prefix, "weight", b->kind, 1, sh, INIT_CONST, 1.0f, ROLE_NORM_WEIGHT);
    m->b = lb_add(b, prefix, "bias", b->kind, 1, sh, INIT_CONST, 0.0f, ROLE_BIAS);
    m->rm = lb_add(b, prefix, "running_mean", PARAM_BUFFER, 1, sh, INIT_CONST, 0.0f,
                   ROLE_RUNNING_MEAN);
    m->rv = lb_add(b, prefix, "running_var", PARAM_BUFFER, 1, sh, INIT_CONST, 1.0f,
                   ROLE_RUNNING_VAR);
    m->nbt = lb_add(b, prefix, "num_batches_tracked", PARAM_COUNTER, 0, NULL, INIT_CONST, 0.0f,
                    ROLE_COUNT);
}

static bn_args batchnorm_args(const batchnorm *m, param_store *s, bool training) {
    bn_args a = {
        .weight = lb_t(s, m->w),
        .bias = lb_t(s, m->b),
        .running_mean = lb_t(s, m->rm),
        .running_var = lb_t(s, m->rv),
        .num_batches_tracked = s->params[m->nbt].counter,
        .training = training,
        .momentum = 0.1f,
        .eps = 1e-5f,
    };
    return a;
}

tensor *nn_batchnorm_forward(const batchnorm *m, param_store *s, tensor *x, bool training) {
    bn_args a = batchnorm_args(m, s, training);
    return op_batchnorm(x, &a);
}

tensor *nn_batchnorm_forward_traced(const batchnorm *m, param_store *s, tensor *x,
                                    bool training, bn_trace *t) {
    bn_args a = batchnorm_args(m, s, training);
    if (!t || !training) return op_batchnorm(x, &a);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->bn = realloc(t->bn, (size_t)t->cap * sizeof *t->bn);
        t->count = realloc(t->count, (size_t)t->cap * sizeof *t->count);
        t->stats = realloc(t->stats, (size_t)t->cap * sizeof *t->stats);
        AG_ASSERT(t->bn && t->count && t->stats, "out of memory");
    }
    a.batch_stats = malloc(2 * (size_t)m->c * sizeof(double));
    AG_ASSERT(a.batch_stats != NULL, "out of memory");
    t->bn[t->n] = m;
    t->count[t->n] = x->numel / m->c;
    t->stats[t->n] = a.batch_stats;
    t->n++;
    return op_batchnorm(x, &a);
}

void bn_trace_replay(const bn_trace *t, param_store *s) {
    for (int i = 0; i < t->n; i++) {
        bn_args a = batchnorm_args(t->bn[i], s, true);
        op_batchnorm_update_running(&a, t->bn[i]->c, t->stats[i], t->stats[i] + t->bn[i]->c,
                                    t->count[i]);
    }
}

void bn_trace_clear(bn_trace *t) {
    for (int i = 0; i < t->n; i++) free(t->stats[i]);
    free(t->bn);
    free(t->count);
    free(t->stats);
    memset(t, 0, sizeof *t);
}

void nn_prelu_init(prelu *m, layer_builder *b, const char *prefix, int c) {
    m->c = c;
    m->w = lb_add(b, prefix, "weight", b->kind, 1, (int[]){c}, INIT_CONST, 0.25f,
                  ROLE_PRELU_WEIGHT);
}

tensor *nn_prelu_forward(const prelu *m, param_store *s, tensor *x) {
    return op_prelu(x, lb_t(s, m->w));
}

static bool g_infer_fusion = true;
void nn_set_infer_fusion(bool on) { g_infer_fusion = on; }
bool nn_infer_fusion(bool bn_training) {
    return g_infer_fusion && !bn_training && !ag_grad_enabled();
}

const float *nn_batchnorm_affine(const batchnorm *m, param_store *s) {
    bn_args a = batchnorm_args(m, s, false);
    float *ko = arena_alloc(2 * (size_t)m->c * sizeof(float));
    op_batchnorm_affine(&a, m->c, ko, ko + m->c);
    return ko;
}

tensor *nn_conv2d_fused(const conv2d *m, param_store *s, tensor *x, const conv_fuse *f) {
    return op_conv2d_fused(x, lb_t(s, m->w), lb_t(s, m->b), m->stride, m->pad, m->groups, f);
}

void nn_layernorm_init(layernorm *m, layer_builder *b, const char *prefix, int d, float eps) {
    m->d = d;
    m->eps = eps;
    m->w = lb_add(b, prefix, "weight", b->kind, 1, (int[]){d}, INIT_CONST, 1.0f,
                  ROLE_NORM_WEIGHT);
    m->b = lb_add(b, prefix, "bias", b->kind, 1, (int[]){d}, INIT_CONST, 0.0f, ROLE_BIAS);
}

tensor *nn_layernorm_forward(const layernorm *m, param_store *s, tensor *x) {
    return op_layernorm(x, lb_t(s, m->w), lb_t(s, m->b), m->eps);
}

void nn_mlp_init(mlp *m, layer_builder *b, const char *prefix, int dim, int hidden) {
    char n[160];
    nn_linear_init(&m->fc1, b, lb_name(n, sizeof n, prefix, "fc1"), dim, hidden, true);
    nn_linear_init(&m->fc2, b, lb_name(n, sizeof n, prefix, "fc2"), hidden, dim, true);
}

tensor *nn_mlp_forward(const mlp *m, param_store *s, tensor *x) {
    int mark = ag_scope_begin();
    tensor *y = nn_linear_forward(&m->fc2, s, op_gelu(nn_linear_forward(&m->fc1, s, x)));
    return ag_scope_keep(mark, y);
}
