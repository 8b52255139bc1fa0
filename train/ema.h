// Exponential moving average of the weights (train.ema = decay, timm's ModelEmaV2):
// a shadow copy of the model made when training starts; after every optimizer
// step each trainable float becomes decay * ema + (1 - decay) * w (float32, as
// torch computes ema.mul(decay) + w * (1 - decay)), while the BatchNorm buffers,
// frozen tensors and counters are copied. Saved in checkpoints (group "ema"),
// restored on resume, evaluated alongside the raw weights every epoch; best.h5
// holds whichever of the two scored better and records which one.
#pragma once
#include <hdf5.h>
#include <stdint.h>

#include "autograd/tensor.h"
#include "data/dataset.h"
#include "eval/metrics.h"
#include "layers/poster.h"
#include "common/config.h"

typedef struct ema {
    double decay;
    int64_t n_float, n_train;   // the store's layout
    float *data;                // [n_float], as store->data
    int64_t *counters;          // [n_counters]
    int n_counters;
    int64_t updates;            // optimizer steps averaged so far
} ema;

// Registers train.ema (0 = off).
void ema_config_register(config *c);
// NULL when train.ema is 0; otherwise a copy of the store's current state.
ema *ema_create_from_config(const config *c, const param_store *s);
ema *ema_create(const param_store *s, double decay);
void ema_free(ema *e);
// After an optimizer step (the weights in s are the new ones).
void ema_update(ema *e, const param_store *s);
// Exchanges the EMA state with the store's (twice restores both exactly): to
// evaluate or save the averaged weights through the ordinary code paths.
void ema_swap(ema *e, param_store *s);
// Group `group` of an open file: the EMA tensors under their official names
// (a state_dict) and attributes decay, updates.
int ema_write(const ema *e, const param_store *s, hid_t f, const char *group, char *err,
              size_t errlen);
// Reads them back (strict names and shapes). Returns 1 when the file has no such
// group (a checkpoint of a run without EMA), 0 when read, -1 on error.
int ema_read(ema *e, param_store *s, hid_t f, const char *group, char *err, size_t errlen);
// Loads the EMA of checkpoint PATH; a checkpoint without one starts the average
// at the current weights of s (message on log). 0 or -1.
int ema_load_ckpt(ema *e, param_store *s, const char *path, FILE *log, char *err,
                  size_t errlen);
// Writes the row "epoch,val_loss,val_acc,val_f1,val_score" of the EMA weights'
// evaluation to DIR/ema.csv (header on the first row).
void ema_log_row(const char *dir, int epoch, double loss, const metrics *mt);
