// The parameter store (contiguous parameters, gradients, counters) and the RNG.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

void store_init(param_store *s) { memset(s, 0, sizeof(*s)); }

void store_free(param_store *s) {
    free(s->params);
    free(s->data);
    free(s->grad);
    free(s->counters);
    memset(s, 0, sizeof(*s));
}

int store_add(param_store *s, const char *name, enum param_kind kind, int ndim,
              const int *shape) {
    AG_ASSERT(!s->finalized, "store_add(%s) after store_finalize", name);
    AG_ASSERT(strlen(name) < sizeof(s->params[0].name), "name too long: %s", name);
    AG_ASSERT(store_find(s, name) == NULL, "duplicate parameter name %s", name);
    AG_ASSERT(kind != PARAM_COUNTER || ndim == 0, "counter %s must be a scalar", name);
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->params = realloc(s->params, (size_t)s->cap * sizeof(param));
        AG_ASSERT(s->params != NULL, "out of memory");
    }
    param *p = &s->params[s->n];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->kind = kind;
    p->ndim = ndim;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i];
    p->numel = shape_numel(ndim, shape);
    return s->n++;
}

void store_finalize(param_store *s) {
    AG_ASSERT(!s->finalized, "store finalized twice");
    int64_t off = 0;
    // Trainable first: the optimizer region is one contiguous prefix.
    for (int i = 0; i < s->n; i++)
        if (s->params[i].kind == PARAM_TRAINABLE) {
            s->params[i].offset = off;
            off += s->params[i].numel;
        }
    s->n_train = off;
    int nc = 0;
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        if (p->kind == PARAM_TRAINABLE) continue;
        if (p->kind == PARAM_COUNTER) {
            p->offset = nc++;
        } else {
            p->offset = off;
            off += p->numel;
        }
    }
    s->n_float = off;
    s->n_counters = nc;
    s->data = calloc((size_t)(off ? off : 1), sizeof(float));
    s->grad = calloc((size_t)(s->n_train ? s->n_train : 1), sizeof(float));
    s->counters = calloc((size_t)(nc ? nc : 1), sizeof(int64_t));
    AG_ASSERT(s->data && s->grad && s->counters, "out of memory for %lld parameters",
              (long long)off);
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        tensor *t = &p->t;
        memset(t, 0, sizeof(*t));
        t->ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) t->shape[d] = p->shape[d];
        t->numel = p->numel;
        t->param = p;
        if (p->kind == PARAM_COUNTER) {
            p->counter = &s->counters[p->offset];
            continue;
        }
        t->data = s->data + p->offset;
        if (p->kind == PARAM_TRAINABLE) {
            t->grad = s->grad + p->offset;
            t->requires_grad = true;
        }
    }
    s->finalized = true;
}

param *store_get(param_store *s, int idx) {
    AG_ASSERT(idx >= 0 && idx < s->n, "param index %d of %d", idx, s->n);
    return &s->params[idx];
}

param *store_find(param_store *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->params[i].name, name) == 0) return &s->params[i];
    return NULL;
}

tensor *store_tensor(param_store *s, int idx) {
    AG_ASSERT(s->finalized, "store_tensor before store_finalize");
    return &store_get(s, idx)->t;
}

void store_zero_grad(param_store *s) {
    memset(s->grad, 0, (size_t)s->n_train * sizeof(float));
}

int64_t store_count(const param_store *s, enum param_kind kind) {
    int64_t n = 0;
    for (int i = 0; i < s->n; i++)
        if (s->params[i].kind == kind) n += s->params[i].numel;
    return n;
}

