// The POSTER model (../shared/POSTER_SPEC.md): MobileFaceNet landmark stream
// (frozen), IR-50 image trunk (first three stages), the cross-fusion pyramid
// transformer, the SE block and the head. Every tensor lives in one
// param_store under its official dotted name.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/tensor.h"
#include "train/config.h"

enum { LANDMARK_BN_BATCH = 0, LANDMARK_BN_FROZEN = 1 };
enum { STREAMS_BOTH = 0, STREAMS_IMAGE_ONLY = 1 };

typedef struct poster_opts {
    int depth;               // pyramid blocks: small 4, base 6, large 8
    int pyramid_levels;      // 1 (l), 2 (l, m), 3 (l, m, s)
    bool token_mix;          // the Conv1d(100,100,1) after each Block
    int landmark_bn;         // LANDMARK_BN_*
    int streams;             // STREAMS_*
    int num_classes;
    float drop_path_rate;    // 0.1
    int ir_units[3];         // 3, 4, 14
    char freeze[512];        // comma-separated name prefixes made PARAM_FROZEN
} poster_opts;

// Registers the model.* keys (depth, pyramid_levels, token_mix, landmark_bn,
// streams, num_classes, drop_path_rate, ir_units, freeze).
void poster_config_register(config *c);
int poster_opts_from_config(const config *c, poster_opts *o, char *err, size_t errlen);
void poster_opts_default(poster_opts *o);   // the official large 7-class model

typedef struct poster_model poster_model;   // defined in layers/poster.c

// Builds the model, lays out its store and initializes it as PyTorch does
// (spec: "Initialization"), from a generator seeded with `seed`.
poster_model *poster_create(const poster_opts *o, uint64_t seed, char *err, size_t errlen);
void poster_free(poster_model *m);
param_store *poster_store(poster_model *m);
const poster_opts *poster_options(const poster_model *m);

// x: [B,3,224,224] (subsampled to 112 inside, as F.interpolate nearest does)
// or [B,3,112,112] already subsampled by the loader. Returns logits [B,K].
// training: batch statistics in BatchNorms (the landmark stream's follow
// landmark_bn) and drop path drawing from r (r may be NULL when drop path is off).
tensor *poster_forward(poster_model *m, tensor *x, bool training, rng *r);
// The drop path rate used by poster_forward in training (tools set it to 0).
void poster_set_drop_path(poster_model *m, float rate);

// Architecture summary and parameter counts (trainable in PyTorch's sense,
// frozen, total) printed to f.
void poster_print_summary(poster_model *m, FILE *f);
