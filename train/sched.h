// Learning-rate schedules, as a pure function of (epoch, position in the
// epoch): a resumed run recomputes the same rate without scheduler state.
// exponential: torch ExponentialLR, lr = base * gamma^epoch (stepped per epoch;
//   computed by repeated multiplication in double, as the chainable form does);
// cosine: CosineAnnealingLR closed form with T_max = train.epochs, eta_min = min_lr;
// step: StepLR, lr = base * gamma^(epoch / step_size); none: constant.
// Optional linear warmup over the first warmup_epochs (per step, from
// base/warmup_steps up to the scheduled rate).
#pragma once
#include <stdbool.h>

#include "common/config.h"

enum sched_kind { SCHED_NONE = 0, SCHED_EXPONENTIAL, SCHED_COSINE, SCHED_STEP };

typedef struct sched_opts {
    int kind;
    double gamma;          // exponential / step
    int step_size;         // step: epochs between decays
    double min_lr;         // cosine floor
    double warmup_epochs;  // 0: none
    int epochs;            // cosine period (train.epochs)
} sched_opts;

// Registers sched.* (name, gamma, step_size, min_lr, warmup_epochs).
void sched_config_register(config *c);
int sched_opts_from_config(const config *c, sched_opts *o, char *err, size_t errlen);
const char *sched_name(int kind);
// Rate for 0-based `epoch`, `step` batches into an epoch of `steps_per_epoch`.
double sched_lr(const sched_opts *o, double base_lr, int epoch, int step, int steps_per_epoch);
