// The POSTER model (docs/POSTER.md): MobileFaceNet landmark stream
// (frozen), IR-50 image trunk (first three stages), the cross-fusion pyramid
// transformer, the SE block and the head. Every tensor lives in one
// param_store under its official dotted name.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "autograd/tensor.h"
#include "common/config.h"

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
// SAM's two passes run the frozen landmark stream on the same images with the
// same weights; with landmark_bn = batch, the second pass's stream output and
// BatchNorm batch statistics are the first's. After POSTER_LM_RECORD the
// training forwards keep them; after POSTER_LM_REPLAY the next forwards take
// them in the same order, each only if its input, batch size, thread count and
// the stream's weights are those recorded (else the stream runs), and apply the
// recorded running-statistics updates once more: the outputs and the model's
// state are bit-identical to running the stream again. POSTER_LM_OFF stops
// both (the buffers stay with the model for the next step).
enum { POSTER_LM_OFF, POSTER_LM_RECORD, POSTER_LM_REPLAY };
void poster_landmark_reuse(poster_model *m, int mode);
int poster_landmark_reuse_hits(const poster_model *m);   // replayed forwards since RECORD
// The drop path rate used by poster_forward in training (tools set it to 0).
void poster_set_drop_path(poster_model *m, float rate);

// Architecture summary and parameter counts (trainable in PyTorch's sense,
// frozen, total) printed to f.
void poster_print_summary(poster_model *m, FILE *f);

// ---- additions (layers/poster.c) ----
// Options as one line of text, "depth=8 pyramid_levels=3 token_mix=on
// landmark_bn=batch streams=both num_classes=7 ir_units=3,4,14
// drop_path_rate=0.1" [+ " freeze=..."]: the `model_options` attribute of a
// state file, readable by tests/reference/poster_ref.py (PosterOptions.from_text;
// streams=image_only is written "image" as there). from_text starts from the
// defaults, accepts any subset of the keys and validates.
void poster_opts_text(const poster_opts *o, char *buf, size_t n);
int poster_opts_from_text(const char *text, poster_opts *o, char *err, size_t errlen);
// 70843151 -> "70,843,151"
const char *poster_fmt_count(int64_t v, char *buf, size_t n);
// The role (layers/layers.h enum param_role) a tensor was declared with.
int poster_param_role(const poster_model *m, int idx);

// Deterministic weights shared with tests/reference/poster_ref.py (no weights
// are stored anywhere; docs/POSTER.md, "Deterministic test weights"): every float tensor N
// gets value[i] from u_i = ((splitmix64(fnv1a64(N) + i) >> 40) / 2^24) * 2 - 1
// scaled by its role; counters are 0.
void poster_fill_deterministic(param_store *s);
double poster_contract_u(const char *name, int64_t i);
// The role poster_fill_deterministic gives a tensor, decided by its name.
int poster_contract_role(const char *name, int ndim);
// value[i] = (float)(scale * u_i(name)), e.g. the test input ("input", 1.5).
void poster_contract_input(float *out, int64_t n, const char *name, float scale);
void poster_contract_fill(const char *name, int role, float scale, float *out, int64_t n,
                          double fan_in);
// The drop path rate of pyramid block i (linspace(0, rate, depth)[i]).
float poster_block_drop_rate(const poster_model *m, int i);

// Loads model.pretrained_ir50 / model.pretrained_mobilefacenet (layers/pretrained.h,
// declared here too so the trainer needs no other header). rep may be NULL.
struct state_report;
int poster_load_pretrained(poster_model *m, const config *c, struct state_report *rep,
                           FILE *log, char *err, size_t errlen);
