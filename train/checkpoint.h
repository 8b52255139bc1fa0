// Training checkpoints in HDF5 (format "poster-checkpoint", version 2; version 1
// files, without the optional parts of 2, still load):
//   /                 attrs format, version
//   /state_dict/...   the model state (layers/state_io.h: one dataset per tensor)
//   /optimizer/...    optimizer state (train/optim.h)
//   /progress/...     epoch, batches_done (sampler position), global_step,
//                     best_acc, best_epoch, last_lr (float64 / int64 scalars);
//                     epoch_partial float64 [3] (optional, written inside an
//                     epoch): the interrupted epoch's loss sum, correct count and
//                     samples so far, so its logged means cover the whole epoch
//   /rng/<name>       every RNG state: int64 [6] = s[0..3], has_spare, spare bits
//   /history          float64 [epochs, CKPT_HIST_COLS] per-epoch log (curves)
//   /config           the resolved configuration text (uint8, INI)
//   /class_names      class names in label order, one per line (uint8 text)
//   /ema/...          (version 2, train.ema on) the EMA weights as a state_dict,
//                     attributes decay, updates (train/ema.h)
//   / attr best_weights  (version 2) "raw" or "ema": the weights of best.h5's
//                     state_dict (which of the two won the model selection)
// Writes are atomic: PATH.tmp is written, flushed, fsync'ed, closed and renamed
// over PATH, so a crash at any point leaves the previous PATH intact.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "autograd/tensor.h"
#include "layers/state_io.h"
#include "train/optim.h"

#define CKPT_FORMAT STATE_CHECKPOINT_FORMAT   // "poster-checkpoint"
#define CKPT_VERSION 2
#define CKPT_MAX_RNG 8

// Columns of a history row.
enum {
    HIST_EPOCH, HIST_LR, HIST_TRAIN_LOSS, HIST_TRAIN_ACC, HIST_VAL_LOSS, HIST_VAL_ACC,
    HIST_VAL_F1, HIST_VAL_SCORE, HIST_SECONDS, CKPT_HIST_COLS
};

typedef struct ckpt_info {
    int epoch;                 // epochs completed
    int batches_done;          // batches of the next epoch already trained (0 at epoch end)
    int64_t global_step;       // optimizer steps
    double best_acc;           // best validation accuracy so far (-1: none)
    int best_epoch;            // its epoch (1-based), 0 if none
    double last_lr;
    double epoch_partial[3];   // loss sum, correct, samples of the batches_done batches
    int n_rng;
    char rng_name[CKPT_MAX_RNG][32];
    rng rngs[CKPT_MAX_RNG];
    int n_hist;                // history rows
    double *hist;              // [n_hist, CKPT_HIST_COLS], malloc'ed (ckpt_info_free)
    char *config_text;         // malloc'ed
    char *class_names;         // malloc'ed, one name per line, or NULL
    const struct ema *ema;     // written as /ema when non-NULL (borrowed; not read back:
                               // ema_load_ckpt does that)
    char best_weights[8];      // "raw"/"ema" when set ("" = not recorded)
} ckpt_info;

void ckpt_info_init(ckpt_info *ci);
void ckpt_info_free(ckpt_info *ci);
void ckpt_info_add_rng(ckpt_info *ci, const char *name, const rng *r);
// Copies the saved state of `name` into r; -1 when absent.
int ckpt_info_get_rng(const ckpt_info *ci, const char *name, rng *r);
void ckpt_info_push_hist(ckpt_info *ci, const double *row);

// opt may be NULL (weights-only file that still carries progress and config).
int ckpt_save(const char *path, const param_store *s, const optimizer *opt,
              const ckpt_info *ci, char *err, size_t errlen);
// Strict load of the model state; the optimizer state when opt != NULL; the
// progress, RNGs, history and config into ci when ci != NULL.
int ckpt_load(const char *path, param_store *s, optimizer *opt, ckpt_info *ci, char *err,
              size_t errlen);
// The resolved configuration text stored in a checkpoint (malloc'ed).
int ckpt_read_config(const char *path, char **text, char *err, size_t errlen);
// The class names stored in a checkpoint, one per line (malloc'ed); -1 if none.
int ckpt_read_class_names(const char *path, char **text, char *err, size_t errlen);
// Fine-tuning / pretrained weights: loads every tensor of PATH's state_dict (a
// checkpoint or a poster-state file) whose name and shape match; the others keep
// their initialization. Reports what was loaded on `log`.
int ckpt_load_weights(const char *path, param_store *s, state_report *rep, FILE *log,
                      char *err, size_t errlen);

#ifdef POSTER_TEST_HOOKS
// Test hook (only in test builds, -DPOSTER_TEST_HOOKS: libposter_hooks.a): when
// non-zero, ckpt_save raises SIGKILL on itself after writing the model state
// (simulates a crash in the middle of a write).
extern volatile int ckpt_fault_inject;
#endif
