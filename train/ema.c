// Exponential moving average of the weights (see ema.h).
#include "train/ema.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/h5io.h"
#include "layers/state_io.h"

static const config_key k_ema[] = {
    {"train.ema", CK_FLOAT, "0", 0, 0.99999, NULL,
     "decay of an exponential moving average of the weights (timm ModelEmaV2; e.g. 0.9998), "
     "evaluated alongside them; 0 = off"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void ema_config_register(config *c) { config_register(c, k_ema); }

ema *ema_create(const param_store *s, double decay) {
    AG_ASSERT(s->finalized, "ema_create before store_finalize");
    ema *e = calloc(1, sizeof *e);
    AG_ASSERT(e != NULL, "out of memory");
    e->decay = decay;
    e->n_float = s->n_float;
    e->n_train = s->n_train;
    e->n_counters = s->n_counters;
    e->data = malloc((size_t)(s->n_float ? s->n_float : 1) * sizeof(float));
    e->counters = malloc((size_t)(s->n_counters ? s->n_counters : 1) * sizeof(int64_t));
    AG_ASSERT(e->data && e->counters, "out of memory for the EMA weights");
    memcpy(e->data, s->data, (size_t)s->n_float * sizeof(float));
    memcpy(e->counters, s->counters, (size_t)s->n_counters * sizeof(int64_t));
    return e;
}

ema *ema_create_from_config(const config *c, const param_store *s) {
    double d = config_float(c, "train.ema");
    return d > 0 ? ema_create(s, d) : NULL;
}

void ema_free(ema *e) {
    if (!e) return;
    free(e->data);
    free(e->counters);
    free(e);
}

void ema_update(ema *e, const param_store *s) {
    AG_ASSERT(e->n_float == s->n_float && e->n_train == s->n_train, "EMA of another store");
    // torch: ema_v.copy_(ema_v * decay + (1. - decay) * model_v), float32 with the
    // Python scalars rounded to float.
    const float d = (float)e->decay, a = (float)(1.0 - e->decay);
    float *restrict ev = e->data;
    const float *restrict w = s->data;
    const int64_t nt = e->n_train;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nt; i++) ev[i] = ev[i] * d + a * w[i];
    memcpy(ev + nt, w + nt, (size_t)(e->n_float - nt) * sizeof(float));
    memcpy(e->counters, s->counters, (size_t)e->n_counters * sizeof(int64_t));
    e->updates++;
}

void ema_swap(ema *e, param_store *s) {
    AG_ASSERT(e->n_float == s->n_float && e->n_counters == s->n_counters, "EMA of another store");
    float *a = e->data, *b = s->data;
    const int64_t n = e->n_float;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float t = a[i];
        a[i] = b[i];
        b[i] = t;
    }
    for (int i = 0; i < e->n_counters; i++) {
        int64_t t = e->counters[i];
        e->counters[i] = s->counters[i];
        s->counters[i] = t;
    }
}

int ema_write(const ema *e, const param_store *s, hid_t f, const char *group, char *err,
              size_t errlen) {
    AG_ASSERT(e->n_float == s->n_float && e->n_counters == s->n_counters, "EMA of another store");
    hid_t g = H5Gcreate2(f, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return snprintf(err, errlen, "cannot create group '%s'", group), -1;
    int rc = 0;
    for (int i = 0; i < s->n && !rc; i++) {   // a state_dict, as layers/state_io.c writes one
        const param *p = &s->params[i];
        if (p->kind == PARAM_COUNTER)
            rc = h5_write_int64s(g, p->name, e->counters + p->offset, 0, NULL, err, errlen);
        else
            rc = h5_write_floats(g, p->name, e->data + p->offset, p->ndim, p->shape, err, errlen);
    }
    H5Gclose(g);
    if (rc) return -1;
    char dec[64];
    snprintf(dec, sizeof dec, "%.17g", e->decay);
    if (h5_write_attr_str(f, group, "decay", dec) ||
        h5_write_attr_i64(f, group, "updates", e->updates)) {
        snprintf(err, errlen, "cannot write the attributes of '%s'", group);
        return -1;
    }
    return 0;
}

int ema_read(ema *e, param_store *s, hid_t f, const char *group, char *err, size_t errlen) {
    if (!h5_exists(f, group)) return 1;
    state_report rep;
    char e2[1024] = "";
    ema_swap(e, s);   // read into the EMA's buffers through the store's tensors
    int rc = state_read(f, group, s, true, &rep, NULL, e2, sizeof e2);
    ema_swap(e, s);
    if (rc) {
        snprintf(err, errlen, "EMA weights ('%s'): %s", group, e2);
        return -1;
    }
    int64_t u = 0;
    if (h5_read_attr_i64(f, group, "updates", &u) == 0) e->updates = u;
    return 0;
}

int ema_load_ckpt(ema *e, param_store *s, const char *path, FILE *log, char *err,
                  size_t errlen) {
    h5_quiet();
    hid_t f = h5_open_read(path, err, errlen);
    if (f < 0) return -1;
    char e2[1200] = "";
    int rc = ema_read(e, s, f, "ema", e2, sizeof e2);
    h5_close(f);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, e2);
        return -1;
    }
    if (rc == 1) {
        memcpy(e->data, s->data, (size_t)s->n_float * sizeof(float));
        memcpy(e->counters, s->counters, (size_t)s->n_counters * sizeof(int64_t));
        e->updates = 0;
        if (log)
            fprintf(log, "%s has no EMA weights: the average (train.ema %g) starts from the "
                    "resumed weights\n", path, e->decay);
    }
    return 0;
}

void ema_log_row(const char *dir, int epoch, double loss, const metrics *mt) {
    char path[1100];
    snprintf(path, sizeof path, "%s/ema.csv", dir);
    bool header = access(path, F_OK) != 0;
    FILE *f = fopen(path, "a");
    if (!f) return;
    if (header) fprintf(f, "epoch,val_loss,val_acc,val_f1,val_score\n");
    fprintf(f, "%d,%.6f,%.6f,%.6f,%.6f\n", epoch, loss, mt->accuracy, mt->macro_f1, mt->score);
    fclose(f);
}
