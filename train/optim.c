// SGD, Adam, AdamW and SAM with PyTorch 1.13's update rules, over the trainable
// prefix of a param_store. Arithmetic is float32 elementwise in the order the
// torch kernels use (scalars computed in double, then rounded to float), so a
// few steps agree with torch to float rounding.
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/h5io.h"

static const config_key k_optim[] = {
    {"optim.name", CK_ENUM, "adam", 0, 0, "adam|adamw|sgd", "base optimizer"},
    {"optim.lr", CK_FLOAT, "4e-5", 0, 10, NULL, "base learning rate (RAF-DB 4e-5, AffectNet 2e-6)"},
    {"optim.beta1", CK_FLOAT, "0.9", 0, 0.999999, NULL, "Adam beta1"},
    {"optim.beta2", CK_FLOAT, "0.999", 0, 0.999999999, NULL, "Adam beta2"},
    {"optim.eps", CK_FLOAT, "1e-8", 0, 1, NULL, "Adam epsilon (added after sqrt)"},
    {"optim.weight_decay", CK_FLOAT, "0", 0, 10, NULL,
     "weight decay (L2 in the gradient for sgd/adam, decoupled for adamw)"},
    {"optim.momentum", CK_FLOAT, "0.9", 0, 0.999999, NULL, "SGD momentum"},
    {"optim.dampening", CK_FLOAT, "0", 0, 1, NULL, "SGD dampening"},
    {"optim.nesterov", CK_BOOL, "off", 0, 0, NULL, "SGD Nesterov momentum"},
    {"optim.sam", CK_BOOL, "on", 0, 0, NULL, "sharpness-aware minimization around the optimizer"},
    {"optim.rho", CK_FLOAT, "0.05", 0, 10, NULL, "SAM neighbourhood radius"},
    {"optim.adaptive", CK_BOOL, "off", 0, 0, NULL, "ASAM: perturbation scaled by |w|"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void optim_config_register(config *c) { config_register(c, k_optim); }

void optim_opts_default(optim_opts *o) {
    memset(o, 0, sizeof(*o));
    o->kind = OPTIM_ADAM;
    o->lr = 4e-5;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->momentum = 0.9;
    o->sam = true;
    o->rho = 0.05;
}

const char *optim_name(int kind) {
    switch (kind) {
    case OPTIM_SGD: return "sgd";
    case OPTIM_ADAM: return "adam";
    case OPTIM_ADAMW: return "adamw";
    }
    return "?";
}

int optim_opts_from_config(const config *c, optim_opts *o, char *err, size_t errlen) {
    optim_opts_default(o);
    const char *name = config_str(c, "optim.name");
    if (!strcmp(name, "sgd")) o->kind = OPTIM_SGD;
    else if (!strcmp(name, "adam")) o->kind = OPTIM_ADAM;
    else if (!strcmp(name, "adamw")) o->kind = OPTIM_ADAMW;
    else {
        snprintf(err, errlen, "optim.name: '%s' is not one of adam|adamw|sgd", name);
        return -1;
    }
    o->lr = config_float(c, "optim.lr");
    o->beta1 = config_float(c, "optim.beta1");
    o->beta2 = config_float(c, "optim.beta2");
    o->eps = config_float(c, "optim.eps");
    o->weight_decay = config_float(c, "optim.weight_decay");
    o->momentum = config_float(c, "optim.momentum");
    o->dampening = config_float(c, "optim.dampening");
    o->nesterov = config_bool(c, "optim.nesterov");
    o->sam = config_bool(c, "optim.sam");
    o->rho = config_float(c, "optim.rho");
    o->adaptive = config_bool(c, "optim.adaptive");
    if (o->kind == OPTIM_SGD && o->nesterov && (o->momentum <= 0 || o->dampening != 0)) {
        snprintf(err, errlen,
                 "optim.nesterov = on needs optim.momentum > 0 and optim.dampening = 0 "
                 "(as torch.optim.SGD)");
        return -1;
    }
    return 0;
}

static float *alloc_zeroed(int64_t n) {
    float *p = calloc((size_t)(n ? n : 1), sizeof(float));
    AG_ASSERT(p != NULL, "out of memory for %lld optimizer floats", (long long)n);
    return p;
}

optimizer *optim_create(param_store *s, const optim_opts *o) {
    AG_ASSERT(s->finalized, "optim_create on a store that is not finalized");
    optimizer *opt = calloc(1, sizeof(*opt));
    AG_ASSERT(opt != NULL, "out of memory");
    opt->o = *o;
    opt->s = s;
    opt->n = s->n_train;
    opt->lr = o->lr;
    if (o->kind == OPTIM_SGD) {
        if (o->momentum != 0) opt->buf1 = alloc_zeroed(opt->n);
    } else {
        opt->buf1 = alloc_zeroed(opt->n);
        opt->buf2 = alloc_zeroed(opt->n);
    }
    if (o->sam) opt->old_w = alloc_zeroed(opt->n);
    return opt;
}

void optim_free(optimizer *opt) {
    if (!opt) return;
    free(opt->buf1);
    free(opt->buf2);
    free(opt->old_w);
    free(opt);
}

void optim_set_lr(optimizer *opt, double lr) { opt->lr = lr; }

static void step_sgd(optimizer *opt) {
    const optim_opts *o = &opt->o;
    float *w = opt->s->data, *g = opt->s->grad, *buf = opt->buf1;
    const int64_t n = opt->n;
    const float wd = (float)o->weight_decay, mom = (float)o->momentum;
    const float damp1 = (float)(1.0 - o->dampening), neg_lr = (float)(-opt->lr);
    const bool use_wd = o->weight_decay != 0, use_mom = o->momentum != 0;
    const bool first = !opt->buf1_init, nesterov = o->nesterov;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (use_wd) d = d + wd * w[i];
        if (use_mom) {
            float b = first ? d : buf[i] * mom + damp1 * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        w[i] = w[i] + neg_lr * d;
    }
    if (use_mom) opt->buf1_init = true;
}

static void step_adam(optimizer *opt, bool decoupled) {
    const optim_opts *o = &opt->o;
    float *w = opt->s->data, *g = opt->s->grad, *m = opt->buf1, *v = opt->buf2;
    const int64_t n = opt->n;
    opt->step++;
    const double bc1 = 1.0 - pow(o->beta1, (double)opt->step);
    const double bc2 = 1.0 - pow(o->beta2, (double)opt->step);
    const float b1 = (float)o->beta1, b2 = (float)o->beta2;
    const float one_b1 = (float)(1.0 - o->beta1), one_b2 = (float)(1.0 - o->beta2);
    const float neg_step = (float)(-(opt->lr / bc1));
    const float bc2_sqrt = (float)sqrt(bc2), eps = (float)o->eps;
    const bool l2 = !decoupled && o->weight_decay != 0;
    const bool dw = decoupled && o->weight_decay != 0;
    const float wd = (float)o->weight_decay;
    const float shrink = (float)(1.0 - opt->lr * o->weight_decay);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        if (dw) w[i] = w[i] * shrink;             // AdamW: param.mul_(1 - lr * wd)
        if (l2) gi = gi + wd * w[i];              // Adam: grad.add(param, alpha=wd)
        float mi = m[i] * b1 + one_b1 * gi;       // exp_avg.mul_(b1).add_(g, 1-b1)
        float vi = v[i] * b2 + one_b2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = w[i] + neg_step * (mi / denom);    // addcdiv_(m, denom, -step_size)
    }
}

void optim_step(optimizer *opt) {
    AG_ASSERT(!opt->perturbed, "optim_step while SAM perturbation is applied "
                               "(call optim_sam_restore first)");
    AG_ASSERT(opt->s->n_train == opt->n, "store changed under the optimizer");
    switch (opt->o.kind) {
    case OPTIM_SGD: step_sgd(opt); break;
    case OPTIM_ADAM: step_adam(opt, false); break;
    case OPTIM_ADAMW: step_adam(opt, true); break;
    default: AG_ASSERT(0, "unknown optimizer kind %d", opt->o.kind);
    }
}

double optim_grad_norm(const param_store *s) {
    const float *g = s->grad;
    double acc = 0;
    const int64_t n = s->n_train;
#pragma omp parallel for reduction(+ : acc) schedule(static)
    for (int64_t i = 0; i < n; i++) acc += (double)g[i] * g[i];
    return sqrt(acc);
}

double optim_sam_perturb(optimizer *opt) {
    AG_ASSERT(opt->o.sam && opt->old_w, "optim_sam_perturb without optim.sam");
    AG_ASSERT(!opt->perturbed, "optim_sam_perturb twice without restore");
    float *w = opt->s->data, *g = opt->s->grad, *old = opt->old_w;
    const int64_t n = opt->n;
    const bool adaptive = opt->o.adaptive;
    double acc = 0;
    // The official SAM takes the norm of per-tensor norms: the same number as
    // the norm over all elements; double accumulation makes it order-robust.
#pragma omp parallel for reduction(+ : acc) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double gi = adaptive ? fabs((double)w[i]) * g[i] : (double)g[i];
        acc += gi * gi;
    }
    const double norm = sqrt(acc);
    const float scale = (float)(opt->o.rho / (norm + 1e-12));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        old[i] = w[i];
        float e = adaptive ? (w[i] * w[i]) * g[i] * scale : g[i] * scale;
        w[i] = w[i] + e;
    }
    opt->perturbed = true;
    return norm;
}

void optim_sam_restore(optimizer *opt) {
    AG_ASSERT(opt->perturbed, "optim_sam_restore without a perturbation");
    // By chunks over the threads: one thread copying the ~230 MB of the large
    // model's weights left the other core idle for tens of milliseconds.
    float *w = opt->s->data;
    const float *old = opt->old_w;
    const int64_t n = opt->n, chunk = (int64_t)1 << 16;
#pragma omp parallel for schedule(static) if (n >= 4 * chunk)
    for (int64_t i = 0; i < n; i += chunk)
        memcpy(w + i, old + i, (size_t)(n - i < chunk ? n - i : chunk) * sizeof(float));
    opt->perturbed = false;
}

// ---------------------------------------------------------------------------
// State I/O

static const char *buf1_name(int kind) {
    return kind == OPTIM_SGD ? "momentum_buffer" : "exp_avg";
}

static int write_buffer(hid_t f, const char *group, const char *bufname, param_store *s,
                        const float *buf, char *err, size_t errlen) {
    char path[512];
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (p->kind != PARAM_TRAINABLE) continue;
        snprintf(path, sizeof path, "%s/%s/%s", group, bufname, p->name);
        if (h5_write_floats(f, path, buf + p->offset, p->ndim, p->shape, err, errlen))
            return -1;
    }
    return 0;
}

static int read_buffer(hid_t f, const char *group, const char *bufname, param_store *s,
                       float *buf, char *err, size_t errlen) {
    char path[512];
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (p->kind != PARAM_TRAINABLE) continue;
        snprintf(path, sizeof path, "%s/%s/%s", group, bufname, p->name);
        float *data = NULL;
        int nd, shape[T_MAXDIM];
        if (h5_read_floats(f, path, &data, &nd, shape, err, errlen)) return -1;
        bool same = nd == p->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == p->shape[d];
        if (!same) {
            free(data);
            snprintf(err, errlen, "optimizer state %s: shape differs from the parameter's",
                     path);
            return -1;
        }
        memcpy(buf + p->offset, data, (size_t)p->numel * sizeof(float));
        free(data);
    }
    return 0;
}

int optim_write(const optimizer *opt, hid_t f, const char *group, char *err, size_t errlen) {
    // The step counter dataset creates the group the attributes hang on.
    char path[512];
    snprintf(path, sizeof path, "%s/step", group);
    if (h5_write_int64s(f, path, &opt->step, 0, NULL, err, errlen)) return -1;
    if (h5_write_attr_str(f, group, "optimizer", optim_name(opt->o.kind)) ||
        h5_write_attr_i64(f, group, "buf1_init", opt->buf1_init) ||
        h5_write_attr_i64(f, group, "sam", opt->o.sam)) {
        snprintf(err, errlen, "cannot write optimizer attributes under %s", group);
        return -1;
    }
    if (opt->buf1 &&
        write_buffer(f, group, buf1_name(opt->o.kind), opt->s, opt->buf1, err, errlen))
        return -1;
    if (opt->buf2 && write_buffer(f, group, "exp_avg_sq", opt->s, opt->buf2, err, errlen))
        return -1;
    return 0;
}

int optim_read(optimizer *opt, hid_t f, const char *group, char *err, size_t errlen) {
    char kind[64] = "";
    if (h5_read_attr_str(f, group, "optimizer", kind, sizeof kind)) {
        snprintf(err, errlen, "no optimizer state under '%s'", group);
        return -1;
    }
    if (strcmp(kind, optim_name(opt->o.kind))) {
        snprintf(err, errlen, "optimizer state is for %s, the run uses %s", kind,
                 optim_name(opt->o.kind));
        return -1;
    }
    int64_t b1 = 0;
    if (h5_read_attr_i64(f, group, "buf1_init", &b1)) {
        snprintf(err, errlen, "optimizer state '%s' lacks buf1_init", group);
        return -1;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/step", group);
    if (h5_read_int64_scalar(f, path, &opt->step, err, errlen)) return -1;
    opt->buf1_init = b1 != 0;
    if (opt->buf1 &&
        read_buffer(f, group, buf1_name(opt->o.kind), opt->s, opt->buf1, err, errlen))
        return -1;
    if (opt->buf2 && read_buffer(f, group, "exp_avg_sq", opt->s, opt->buf2, err, errlen))
        return -1;
    return 0;
}
