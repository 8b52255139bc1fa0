// Learning-rate schedules (see sched.h).
#include "sched.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const config_key k_sched[] = {
    {"sched.name", CK_ENUM, "exponential", 0, 0, "exponential|cosine|step|none",
     "learning-rate schedule, stepped once per epoch"},
    {"sched.gamma", CK_FLOAT, "0.98", 0, 1, NULL, "decay factor (exponential, step)"},
    {"sched.step_size", CK_INT, "30", 1, 100000, NULL, "step: epochs between decays"},
    {"sched.min_lr", CK_FLOAT, "0", 0, 10, NULL, "cosine: final learning rate"},
    {"sched.warmup_epochs", CK_FLOAT, "0", 0, 10000, NULL,
     "linear warmup length in epochs (per step; 0 = none)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void sched_config_register(config *c) { config_register(c, k_sched); }

const char *sched_name(int kind) {
    switch (kind) {
    case SCHED_NONE: return "none";
    case SCHED_EXPONENTIAL: return "exponential";
    case SCHED_COSINE: return "cosine";
    case SCHED_STEP: return "step";
    }
    return "?";
}

int sched_opts_from_config(const config *c, sched_opts *o, char *err, size_t errlen) {
    memset(o, 0, sizeof(*o));
    const char *n = config_str(c, "sched.name");
    if (!strcmp(n, "none")) o->kind = SCHED_NONE;
    else if (!strcmp(n, "exponential")) o->kind = SCHED_EXPONENTIAL;
    else if (!strcmp(n, "cosine")) o->kind = SCHED_COSINE;
    else if (!strcmp(n, "step")) o->kind = SCHED_STEP;
    else {
        snprintf(err, errlen, "sched.name: '%s' is not one of exponential|cosine|step|none", n);
        return -1;
    }
    o->gamma = config_float(c, "sched.gamma");
    o->step_size = (int)config_int(c, "sched.step_size");
    o->min_lr = config_float(c, "sched.min_lr");
    o->warmup_epochs = config_float(c, "sched.warmup_epochs");
    o->epochs = 1;
    if (config_find_key(c, "train.epochs")) o->epochs = (int)config_int(c, "train.epochs");
    return 0;
}

double sched_lr(const sched_opts *o, double base_lr, int epoch, int step, int steps_per_epoch) {
    double lr = base_lr;
    switch (o->kind) {
    case SCHED_NONE: break;
    case SCHED_EXPONENTIAL:
        for (int e = 0; e < epoch; e++) lr *= o->gamma;
        break;
    case SCHED_COSINE: {
        int T = o->epochs > 0 ? o->epochs : 1;
        lr = o->min_lr + (base_lr - o->min_lr) * (1 + cos(M_PI * epoch / T)) / 2;
        break;
    }
    case SCHED_STEP:
        for (int e = 0; e < epoch / o->step_size; e++) lr *= o->gamma;
        break;
    }
    if (o->warmup_epochs > 0 && steps_per_epoch > 0) {
        double total = o->warmup_epochs * steps_per_epoch;
        double done = (double)epoch * steps_per_epoch + step + 1;
        if (done < total) lr *= done / total;
    }
    return lr;
}
