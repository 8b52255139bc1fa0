// Reading PyTorch checkpoints (torch.save files) in C, without Python:
//   - the zip format (torch >= 1.6 default): <name>/data.pkl + <name>/data/<key>
//     raw little-endian storages, read with libzip;
//   - the legacy format (_use_new_zipfile_serialization=False): magic number,
//     protocol and sys_info pickles, the main pickle, the sorted storage keys,
//     then each storage as an int64 element count and its raw bytes;
//   - our own HDF5 state files (datasets under group `state_dict`).
// The pickle is read by a restricted unpickler (common/unpickle.h) that never
// executes anything. The state dict is found as the top-level dict or under
// 'state_dict', 'model_state_dict' or 'model'; a 'module.' prefix (DataParallel)
// is stripped. Float tensors (float32/16, bfloat16, float64) come out as float32,
// integer and bool tensors as int64, non-contiguous ones materialized.
//
// Bad input is an error naming the problem; memory stays bounded by the file size
// (at most 2 elements per file byte + 1M; the environment variable
// POSTER_PTH_ELEM_LIMIT=N replaces that bound by N elements, for files whose
// tensors are views sharing small storages).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>


#define PTH_MAXDIM 8

typedef struct pth_tensor {
    char *name;            // dotted name, 'module.' stripped
    int ndim;              // 0 for scalars
    int shape[PTH_MAXDIM];
    int64_t numel;
    bool is_int;           // int64 data (integer/bool tensors) instead of float32
    float *f32;            // numel floats when !is_int
    int64_t *i64;          // numel ints when is_int
} pth_tensor;

typedef struct pth_state {
    pth_tensor *t;         // in the file's order
    int n;
    char format[16];       // "zip", "legacy" or "hdf5"
    char where[64];        // where the state dict was: "top level", "['state_dict']", ...
    int stripped;          // names whose 'module.' prefix was removed
    int renamed;           // official MobileFaceNet names mapped (pth_map_official_name)
    char notes[4096];      // skipped objects and entries, one per line
} pth_state;

// Loads a .pth/.pth.tar/.pt (zip or legacy) or one of our HDF5 state files.
// NULL with a message naming the file and the problem on error.
pth_state *pth_load(const char *path, char *err, size_t errlen);
// Same for a torch.save file in memory (zip or legacy; not HDF5). label names it
// in messages.
pth_state *pth_load_mem(const void *buf, size_t n, const char *label, char *err,
                        size_t errlen);
void pth_free(pth_state *st);
// Official names -> ours, in place (the name only gets shorter): the official
// MobileFaceNet's `conv_{3,4,5}.model.<k>.` becomes `conv_{3,4,5}.<k>.`, with or
// without a leading `face_landback.`. Applied to every tensor of a torch.save
// file by pth_load (counted in pth_state.renamed), so layers/weights.c and
// `poster import` see our names. Returns how many replacements were made.
int pth_map_official_name(char *name);
const pth_tensor *pth_find(const pth_state *st, const char *name);
int64_t pth_numel(const pth_state *st);     // all elements of all tensors
// "[2, 3]" into buf (scalars "[]"); returns buf.
const char *pth_shape_str(const pth_tensor *t, char *buf, size_t n);
