// Datasets and the prefetching loader: files on disk -> normalized batches.
// See docs/POSTER.md, "Input pipeline" and "Datasets on disk".
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/check.h"
#include "common/config.h"
#include "common/rng.h"

// Registers the data.* keys: data.format (rafdb|ferplus|affectnet|folder|csv),
// data.root, data.num_classes, data.channel_order (bgr|rgb|auto), data.skip_bad,
// data.cache (HDF5 file from `poster data prepare`), data.workers,
// data.sampler (auto|shuffle|balanced|sequential), data.augment (on|off),
// data.image_size (224 or 112: the fast path computing only the pixels the
// network reads), ...
void data_config_register(config *c);
// Whether the configured dataset's tensors are BGR: data.channel_order = bgr,
// or auto and the format's official order is BGR (RAF-DB). For images read
// outside a dataset (poster predict) in the order the model was trained on.
bool data_format_bgr(const config *c);

typedef struct dataset dataset;

// Opens a split ("train", "val", "test"; datasets map their own names onto
// these). Errors name the file and line.
int dataset_open(const config *c, const char *split, dataset **out, char *err,
                 size_t errlen);
void dataset_close(dataset *d);
int dataset_size(const dataset *d);
int dataset_num_classes(const dataset *d);
const char *dataset_class_name(const dataset *d, int k);
int dataset_label(const dataset *d, int i);
const char *dataset_source(const dataset *d, int i);   // file name (for messages)
void dataset_print_counts(const dataset *d, FILE *f);   // per-class counts

typedef struct loader_opts {
    int batch_size;
    bool train_aug;          // the official training augmentations
    bool shuffle;            // seeded shuffling sampler
    bool balanced;           // class-balanced sampler with replacement (AffectNet)
    bool drop_last;
    int workers;             // decoding threads; 0 = decode in the caller
    int prefetch;            // batches decoded ahead (default 2)
    int image_size;          // 224, or 112 for the fast path (same values)
    uint64_t seed;
    FILE *log;               // skipped bad samples are named here (skip_bad)
} loader_opts;

typedef struct loader loader;
loader *loader_create(dataset *d, const loader_opts *o, char *err, size_t errlen);
void loader_free(loader *l);
// Starts epoch `epoch` (the order and augmentations depend on seed and epoch
// only, so a resumed run draws the same batches).
void loader_start_epoch(loader *l, int epoch);
// Fills images [n,3,S,S] (float32, normalized) and labels [n]; returns n
// (< batch_size only for the last batch when !drop_last), 0 at the end of the
// epoch, < 0 on a bad sample when skip_bad is off (err names it).
int loader_next(loader *l, float *images, int64_t *labels, char *err, size_t errlen);
int loader_batches_per_epoch(const loader *l);
// Resume: position within the epoch, in batches already handed out.
int loader_position(const loader *l);
void loader_seek(loader *l, int epoch, int batches_done);
int loader_skipped(const loader *l);   // bad samples skipped so far
