// A model's state (parameters, buffers, counters) in HDF5: one dataset per tensor
// named by its official dotted name in a group (default "state_dict"); float32,
// int64 for num_batches_tracked. Opens in h5py and maps 1:1 onto a PyTorch
// state_dict. Format attributes: format = "poster-state", version = 1.
#pragma once
#include <hdf5.h>
#include <stdbool.h>
#include <stdio.h>

#include "autograd/tensor.h"

// The file formats (the `format` and `version` attributes of the root group).
// A training checkpoint (train/checkpoint.h) holds a state in the same
// `state_dict` group, so state_load reads the weights of both.
#define STATE_FORMAT "poster-state"
#define STATE_VERSION 1
#define STATE_CHECKPOINT_FORMAT "poster-checkpoint"

typedef struct state_report {
    int matched, missing, unexpected, misshaped;
    char first_problem[512];     // names the first missing/unexpected/misshaped tensor
} state_report;

// Writes every tensor of s under `group` of an open file.
int state_write(hid_t f, const char *group, const param_store *s, char *err, size_t errlen);
// Reads tensors by name. strict: any missing, unexpected or misshaped tensor is
// an error naming it, and nothing is changed. Not strict: loads what matches
// (name and shape), lists the rest on `log` (may be NULL) and fills rep.
int state_read(hid_t f, const char *group, param_store *s, bool strict, state_report *rep,
               FILE *log, char *err, size_t errlen);
// Whole-file helpers; state_save writes PATH.tmp then renames (atomic).
int state_save(const char *path, const param_store *s, const char *model_options,
               char *err, size_t errlen);
int state_load(const char *path, param_store *s, bool strict, state_report *rep, FILE *log,
               char *err, size_t errlen);
