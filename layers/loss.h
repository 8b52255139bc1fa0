// Training losses built from op_cross_entropy:
//   loss = ls_weight * LSCE(logits, y, smoothing) + ce_weight * CE(logits, y)
// official POSTER: 2 * LSCE(0.2) + CE  (ls_weight 2, smoothing 0.2, ce_weight 1);
// plain CE: ls_weight 0; plain LSCE: ce_weight 0, ls_weight 1.
#pragma once
#include <stdint.h>

#include "autograd/tensor.h"
#include "common/config.h"

typedef struct loss_opts {
    float ls_weight;   // weight of the label-smoothed term
    float smoothing;   // its smoothing
    float ce_weight;   // weight of the plain cross-entropy term
} loss_opts;

// Registers loss.* (ls_weight, smoothing, ce_weight).
void loss_config_register(config *c);
void loss_opts_default(loss_opts *o);   // official
int loss_opts_from_config(const config *c, loss_opts *o, char *err, size_t errlen);
// logits [B, K], target [B] -> scalar (mean over the batch), on the tape.
tensor *loss_compute(const loss_opts *o, tensor *logits, const int64_t *target);
