// Evaluating a model on a dataset: one loop for training's per-epoch
// evaluation, `poster eval` and the tests. Several MPI ranks (common/dist.h)
// each evaluate a block of whole batches and the results are reduced, so every
// rank gets what one process computes.
#pragma once
#include <stddef.h>

#include "data/dataset.h"
#include "eval/metrics.h"
#include "layers/loss.h"
#include "layers/poster.h"

// Evaluation of a model on a dataset (eval mode, no gradients): confusion
// matrix and the mean loss. `logits_out` (may be NULL) receives [n, K] logits
// (malloc'ed). Returns 0 or -1 with err.
typedef struct eval_args {
    int batch_size;
    int image_size;
    int workers;
    const loss_opts *loss;     // NULL: no loss
    int max_batches;           // 0 = all
    int tta;                   // eval/tta.h TTA_*: 0 = plain logits
} eval_args;
int eval_model(poster_model *m, dataset *d, const eval_args *ea, confusion *cm,
              double *mean_loss, float **logits_out, char *err, size_t errlen);
