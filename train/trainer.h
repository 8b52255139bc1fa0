// The training loop (official POSTER recipe, docs/POSTER.md):
// batches from the loader, split into micro-batches (BatchNorm statistics per
// micro-batch: batch 200 with micro_batch 100 reproduces the official 2 replicas
// of 100) whose gradients accumulate as the gradient of the mean loss over the
// whole batch; SAM takes a second forward/backward over the same micro-batches
// at w + e. Per epoch: evaluation, CSV and JSON-lines log rows, last.h5 (and
// best.h5 on a better validation accuracy), curves and confusion PNGs.
// Deterministic for a given seed and thread count; a resumed run continues
// bit-identically. SIGINT/SIGTERM: the step finishes, last.h5 records the
// position inside the epoch, train_run returns -1 saying how to resume.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "data/dataset.h"
#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "layers/poster.h"
#include "common/config.h"
#include "layers/loss.h"

enum { NONFINITE_STOP = 0, NONFINITE_SKIP = 1 };

typedef struct train_opts {
    int epochs;
    int batch_size;
    int micro_batch;        // 0: the whole batch at once
    uint64_t seed;
    int threads;            // 0: all cores
    char out_dir[512];
    int on_nonfinite;       // NONFINITE_*
    int max_batches;        // per epoch, 0 = all (smoke tests)
    int64_t max_steps;      // optimizer steps in all (resumed ones count), 0 = no limit
    char init[1024];        // comma-separated weight files loaded before training
    int progress;           // 1: progress line on stderr, 0: quiet
    // eval.*
    char eval_split[32];
    int eval_batch_size;
    int eval_every;         // epochs between evaluations (the last epoch always evaluates)
    bool plots;
} train_opts;

// Registers every key `poster train` reads: model.*, data.*, train.*, eval.*,
// optim.*, sched.*, loss.*.
void train_config_register(config *c);
int train_opts_from_config(const config *c, train_opts *o, char *err, size_t errlen);

typedef struct train_args {
    const char *resume;     // checkpoint to continue from (NULL: fresh run)
    const char *init;       // weights to start from (fine-tuning), NULL: none
    FILE *log;              // messages (stderr when NULL)
} train_args;

typedef struct train_result {
    int epochs_done;
    int64_t steps;
    int64_t skipped_steps;     // non-finite steps skipped (on_nonfinite = skip)
    double first_train_loss, last_train_loss;   // epoch means
    double first_train_acc, last_train_acc;
    double last_val_acc, best_val_acc;
    int best_epoch;
    // A copy of every float and counter of the model at the end (tests).
    float *params;
    int64_t n_params;
    int64_t *counters;
    int n_counters;
} train_result;
void train_result_free(train_result *r);

// Runs training as configured. c must be validated. 0 on success; on failure
// err says why (a non-finite step names the step and the tensor).
int train_run(config *c, const train_args *a, train_result *res, char *err, size_t errlen);

// Fills loader options from the data.* keys that dataset.h describes.
void train_loader_opts(const config *c, loader_opts *lo, int batch_size, bool train);
// Model options with model.num_classes following the dataset when not set.
int train_model_opts(const config *c, int dataset_classes, poster_opts *po, char *err,
                     size_t errlen);

// Finds the first non-finite value among the trainable gradients; returns its
// tensor's name or NULL when all are finite.
const char *train_first_nonfinite_grad(const param_store *s);

// Creates dir and its parents (like mkdir -p); an error names the folder.
int train_mkdir_p(const char *dir, char *err, size_t errlen);
