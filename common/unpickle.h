// A restricted Python unpickler for PyTorch checkpoints: it builds plain values
// (ints, floats, strings, tuples, lists, dicts), recognizes the few torch
// functions a state dict is rebuilt with (OrderedDict, _rebuild_tensor_v2,
// _rebuild_parameter, torch.Size) and turns every other class into an opaque
// object with a note. Nothing is ever executed or imported.
//
// Safety: every length is checked against the bytes left before anything is
// allocated; all values live in one arena whose size is capped relative to the
// pickle's size, so memory is bounded by the input; there is no recursion over
// values (pickles can be cyclic through the memo).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UP_MAXDIM 8          // tensors with more dimensions are rejected

typedef enum {
    UP_NONE, UP_BOOL, UP_INT, UP_BIGINT, UP_FLOAT, UP_STR, UP_BYTES,
    UP_TUPLE, UP_LIST, UP_DICT, UP_GLOBAL, UP_STORAGE, UP_TENSOR, UP_OBJECT,
} up_kind;

typedef struct up_value up_value;

typedef struct up_tensor {
    up_value *storage;             // UP_STORAGE
    int64_t offset;                // in elements
    int ndim;
    int64_t shape[UP_MAXDIM];
    int64_t stride[UP_MAXDIM];     // in elements, >= 0
    int64_t numel;
    int64_t extent;                // 1 + max element index touched (0 if numel == 0)
} up_tensor;

struct up_value {
    up_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *s; size_t len; } str;  // STR (UTF-8), BYTES, BIGINT (LE bytes); NUL-terminated
        struct { up_value **items; size_t n, cap; } seq;  // TUPLE, LIST; DICT: key,value,key,value...
        struct { const char *module, *name; } global;
        struct { int index; int dtype; int64_t numel; } storage;  // owned by the persistent_load callback
        up_tensor *tensor;
        struct { const char *module, *name; up_value *state; } object;
    };
};

typedef struct up_arena up_arena;
// budget: the most bytes the arena may hand out (the caller scales it to the input).
up_arena *up_arena_new(size_t budget);
void up_arena_free(up_arena *a);
void *up_alloc(up_arena *a, size_t bytes);   // zeroed; NULL past the budget
up_value *up_new(up_arena *a, up_kind kind);
const char *up_strdup(up_arena *a, const char *s, size_t len);

// Notes about what was skipped (deduplicated, truncated when full).
typedef struct up_notes {
    char text[4096];
    int count;
} up_notes;
void up_note(up_notes *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Called for BINPERSID/PERSID with the persistent id; returns the value it stands
// for (a UP_STORAGE for torch) or NULL with a message in err.
typedef up_value *(*up_persid_fn)(void *ctx, up_arena *a, up_value *pid, char *err,
                                  size_t errlen);

// Unpickles one pickle from buf[0..n) up to its STOP. *used: bytes consumed.
// Returns NULL with a message (naming the opcode and byte offset) on error.
up_value *up_load(up_arena *a, const uint8_t *buf, size_t n, size_t *used, up_persid_fn fn,
                  void *ctx, up_notes *notes, char *err, size_t errlen);

// The value stored under a string key (the last one, like Python), or NULL.
up_value *up_dict_get(const up_value *d, const char *key);
const char *up_kind_name(up_kind k);
bool up_is_str(const up_value *v, const char *s);
