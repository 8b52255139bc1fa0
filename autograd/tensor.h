// Tensors, the activation arena, the parameter store and the eager tape.
//
// Memory by lifetime:
//   - parameters, their gradients and optimizer state live in one param_store:
//     contiguous, identically laid-out float buffers; trainable tensors come
//     first so one loop over [0, n_train) zeroes, clips or steps them all;
//   - tensor data and gradients live in the buffer pool: big chunks taken from
//     the system once and never given back before ag_shutdown, carved by a
//     best-fit free list. A buffer returns to the pool as soon as it is provably
//     dead (below), and everything returns at ag_step_reset; since shapes repeat
//     every step, a warm step reuses the same memory and neither mallocs nor
//     page-faults;
//   - tensor headers, saved structs and small temporaries live in the step
//     arena (bump allocation over blocks that are kept across steps), reset by
//     ag_step_reset; the tape is one array reused every step.
//
// When a buffer dies: a tensor's data is freed once the caller has dropped it
// (tensor_drop, or the end of the ag_scope it was created in) and no pending
// tape entry needs it for backward (each op declares which of its inputs and
// its output its backward reads: the "pins"). After an entry's backward its
// output's gradient is freed too if the output was dropped: every op that
// could add to it was recorded later and has already run. Tensors never
// dropped (inputs the caller made, logits, the loss) live until the reset.
// A dropped tensor that is still pinned is freed anyway when its producer can
// recompute it exactly from inputs that stay alive for the producer's own
// backward (batch norm, PReLU): the backward that needs it regenerates it.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/check.h"
#include "common/rng.h"

#define T_MAXDIM 5


struct param;

typedef struct tensor {
    float *data;            // contiguous, row-major, numel floats
    float *grad;            // NULL until something flows into it (see tensor_grad)
    struct tensor *base;    // reshape views share data/grad with their base
    int ndim;
    int shape[T_MAXDIM];
    int64_t numel;
    bool requires_grad;
    bool pooled;            // data (and grad) are pool buffers this tensor owns
    bool dropped;           // the caller no longer reads it (root only)
    bool recompute;         // data freed early; its producer regenerates it for backward
    int pins;               // pending tape entries whose backward reads the data
    int recompute_deps;     // freed tensors whose regeneration reads this one
    int producer;           // 1 + index of the tape entry that made it, 0: none
    struct param *param;    // non-NULL for tensors owned by a param_store
} tensor;

// ---- tensors (all allocated in the arena unless owned by a param_store) ----
tensor *tensor_new(int ndim, const int *shape);          // uninitialized data
tensor *tensor_zeros(int ndim, const int *shape);
tensor *tensor_like(const tensor *t);                     // same shape, uninitialized
tensor *tensor_from(int ndim, const int *shape, const float *src);  // copies src
tensor *tensor_view(tensor *t, int ndim, const int *shape);  // reshape view, shares grad
// The gradient buffer of t (of its base for views), allocated zeroed on first use.
float *tensor_grad(tensor *t);
// For a backward that writes every element of t's gradient in one pass: when
// nothing has flowed into it yet, a new buffer that is NOT zeroed and *fresh =
// true, and the caller must then store (0.0f + v: the floats of += on zeros,
// signed zeros included) instead of adding, before anything else reads it;
// otherwise tensor_grad's buffer and *fresh = false. Saves the zeroing pass and
// the read of the += (the trunk's gradients are tens of MB per step). With
// pool poisoning on, the new buffer is NaN, so a missed element shows.
float *tensor_grad_first(tensor *t, bool *fresh);
int64_t shape_numel(int ndim, const int *shape);
bool tensor_same_shape(const tensor *a, const tensor *b);
// "[2, 3, 4]" into buf; returns buf.
const char *tensor_shape_str(const tensor *t, char *buf, size_t n);
// The caller will not read t, nor any view sharing its storage, again. Its data
// returns to the pool now, or when the last tape entry needing it has run its
// backward. No-op for parameters, views of tensors that are not dropped and
// tensors whose memory the pool does not own.
void tensor_drop(tensor *t);
// Scopes: every tensor created after ag_scope_begin and not kept is dropped by
// ag_scope_end. Layer code wraps its intermediates so that what no backward
// needs is freed during the forward (all of it in no-grad mode).
int ag_scope_begin(void);
void ag_scope_end(int mark, int nkeep, tensor *const *keep);
// One kept tensor; returns it: `return ag_scope_keep(mark, y);`
tensor *ag_scope_keep(int mark, tensor *keep);
// Shorthand for literal shapes: T_SHAPE(2, 3) -> 2, (int[]){2, 3}
#define T_NARGS_(_1, _2, _3, _4, _5, N, ...) N
#define T_NARGS(...) T_NARGS_(__VA_ARGS__, 5, 4, 3, 2, 1)
#define T_SHAPE(...) T_NARGS(__VA_ARGS__), (int[]){__VA_ARGS__}

// ---- step arena (small things: headers, saved structs, temporaries) ----
void *arena_alloc(size_t bytes);       // 64-byte aligned, lives until ag_step_reset
void *arena_calloc(size_t bytes);
size_t arena_used(void);
size_t arena_capacity(void);
int arena_block_count(void);           // blocks are kept: constant once warm
void ag_step_reset(void);              // frees every activation and the tape
void ag_shutdown(void);                // releases arena and pool (tests, end of program)

// ---- buffer pool (tensor data and gradients) ----
void *pool_alloc(size_t bytes);        // 64-byte aligned, until pool_free or the reset
void pool_free(void *p);
typedef struct pool_stats {
    size_t capacity;     // bytes taken from the system (never returned before shutdown)
    size_t in_use;       // bytes of live buffers now
    size_t peak;         // largest in_use since the last pool_reset_peak
    size_t handed_out;   // bytes allocated since then (what would be live without frees)
    int chunks;          // system allocations
    int64_t grows;       // times the pool had to grow (0 per step once warm)
} pool_stats;
pool_stats pool_get_stats(void);
void pool_reset_peak(void);
// Debug: freed buffers are filled with NaN and not reused until the reset, so a
// read of a dead buffer shows up as a NaN in a result. Also on when the
// environment has AG_POISON_FREED=1 (tests/run_tests.sh sets it).
void pool_set_poison(bool on);

// ---- grad mode ----
bool ag_grad_enabled(void);
void ag_set_grad_enabled(bool on);     // returns nothing; use the pair below to nest
bool ag_no_grad_begin(void);           // returns previous state
void ag_no_grad_end(bool prev);

// ---- the tape ----
typedef struct tape_entry tape_entry;
typedef void (*backward_fn)(tape_entry *e);
// Writes e's output again from its inputs and saved state, bit for bit as the
// forward did (cheap elementwise ops: batch norm, PReLU).
typedef void (*recompute_fn)(tape_entry *e, float *out);
#define TAPE_MAX_IN 4
struct tape_entry {
    const char *op;          // op name, for error messages
    backward_fn backward;
    tensor *out;
    tensor *in[TAPE_MAX_IN];
    int n_in;
    unsigned need;           // AG_NEED_* bits: whose data the backward reads (pinned)
    void *saved;             // op-specific struct in the arena
    int section;             // profiler section it was recorded in (autograd/profile.h)
    recompute_fn recompute;  // or NULL; set by the op after recording
};
// Bits of tape_entry.need: input i, the output.
#define AG_NEED_IN(i) (1u << (i))
#define AG_NEED_OUT (1u << TAPE_MAX_IN)
#define AG_NEED_INPUTS ((1u << TAPE_MAX_IN) - 1)
#define AG_NEED_ALL (AG_NEED_INPUTS | AG_NEED_OUT)
// True when an op on these inputs must record (grad mode on, some input needs grad).
bool ag_needs_grad(int n, tensor *const *in);
// Records an op. Marks out->requires_grad. An op without backward cannot record.
// ag_record pins all inputs and the output (safe for any backward);
// ag_record_need pins only the tensors in `need` (AG_NEED_* bits), so what the
// backward does not read can be freed during the forward.
tape_entry *ag_record(const char *op, backward_fn fn, tensor *out, int n,
                      tensor *const *in, void *saved);
tape_entry *ag_record_need(const char *op, backward_fn fn, tensor *out, int n,
                           tensor *const *in, void *saved, unsigned need);
int ag_tape_len(void);
// Seeds d(loss)/d(loss) = 1 (loss must have one element) and runs the tape in
// reverse. Gradients accumulate (+=) into parameters' grad buffers.
void ag_backward(tensor *loss);
// Like ag_backward but seeds the output gradient with `seed` (numel of out).
void ag_backward_seed(tensor *out, const float *seed);

// ---- parameter store ----
enum param_kind {
    PARAM_TRAINABLE,   // gets a gradient and optimizer state
    PARAM_FROZEN,      // a parameter that never changes (landmark stream, freeze=)
    PARAM_UNUSED,      // declared and counted as trainable, never computed with
    PARAM_BUFFER,      // BatchNorm running statistics
    PARAM_COUNTER,     // int64 num_batches_tracked (scalar)
};

typedef struct param {
    char name[160];          // official dotted name, e.g. ir_back.body.3.res_layer.1.weight
    enum param_kind kind;
    int ndim;                // 0 for scalars (counters)
    int shape[T_MAXDIM];
    int64_t numel;
    int64_t offset;          // into store->data (floats) or store->counters (int64)
    tensor t;                // data/grad point into the store once finalized
    int64_t *counter;        // PARAM_COUNTER only
} param;

typedef struct param_store {
    param *params;
    int n, cap;
    // Floats: [ trainable (n_train) | frozen, unused, buffers ]. grad covers the
    // trainable prefix only, so data[0..n_train) and grad[0..n_train) line up.
    float *data;
    float *grad;
    int64_t n_train;         // floats that get gradients
    int64_t n_float;         // all float state
    int64_t *counters;
    int n_counters;
    bool finalized;
} param_store;

void store_init(param_store *s);
void store_free(param_store *s);
// Declares a tensor. Returns its index; pointers are valid after store_finalize.
int store_add(param_store *s, const char *name, enum param_kind kind, int ndim,
              const int *shape);
// Lays out and allocates all buffers (zeroed); tensors become usable.
void store_finalize(param_store *s);
param *store_get(param_store *s, int idx);
param *store_find(param_store *s, const char *name);   // NULL if absent
tensor *store_tensor(param_store *s, int idx);
void store_zero_grad(param_store *s);
// Counts floats by kind; "trainable" in PyTorch's sense is TRAINABLE + UNUSED.
int64_t store_count(const param_store *s, enum param_kind kind);

