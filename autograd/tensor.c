// Tensors, the step arena, grad mode and the eager tape.
#include "tensor.h"
#include "profile.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ag_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: internal error: assertion `%s' failed", file, line, cond);
    if (fmt && fmt[0]) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    abort();
}

// ---------------------------------------------------------------------------
// Arena: a list of blocks while warming up. At reset, when more than one block
// was needed, they are replaced by a single block of the total size, so from
// the second step on a step of the same shape allocates nothing.

typedef struct arena_block {
    char *mem;
    size_t cap, used;
} arena_block;

#define ARENA_MAX_BLOCKS 256
#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK ((size_t)64 << 20)

static struct {
    arena_block blocks[ARENA_MAX_BLOCKS];
    int n;
    size_t high_water;   // total bytes used by the largest step so far
} g_arena;

static void *aligned_malloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN) != 0) p = NULL;
    AG_ASSERT(p != NULL, "out of memory allocating %zu bytes", bytes);
    return p;
}

static size_t arena_total_used(void) {
    size_t u = 0;
    for (int i = 0; i < g_arena.n; i++) u += g_arena.blocks[i].used;
    return u;
}

void *arena_alloc(size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0) need = ARENA_ALIGN;
    if (g_arena.n > 0) {
        arena_block *b = &g_arena.blocks[g_arena.n - 1];
        if (b->used + need <= b->cap) {
            void *p = b->mem + b->used;
            b->used += need;
            return p;
        }
    }
    AG_ASSERT(g_arena.n < ARENA_MAX_BLOCKS, "arena: too many blocks");
    size_t cap = need > ARENA_MIN_BLOCK ? need : ARENA_MIN_BLOCK;
    if (g_arena.n > 0 && cap < g_arena.blocks[g_arena.n - 1].cap * 2 && need < cap)
        cap = g_arena.blocks[g_arena.n - 1].cap * 2;
    arena_block *b = &g_arena.blocks[g_arena.n++];
    b->mem = aligned_malloc(cap);
    b->cap = cap;
    b->used = need;
    return b->mem;
}

void *arena_calloc(size_t bytes) {
    void *p = arena_alloc(bytes);
    memset(p, 0, bytes);
    return p;
}

size_t arena_used(void) { return arena_total_used(); }

size_t arena_capacity(void) {
    size_t c = 0;
    for (int i = 0; i < g_arena.n; i++) c += g_arena.blocks[i].cap;
    return c;
}

int arena_block_count(void) { return g_arena.n; }

static struct {
    tape_entry *entries;
    int n, cap;
} g_tape;

void ag_step_reset(void) {
    size_t used = arena_total_used();
    if (used > g_arena.high_water) g_arena.high_water = used;
    if (g_arena.n > 1) {
        // Consolidate into one block big enough for the largest step seen.
        size_t cap = arena_capacity();
        if (cap < g_arena.high_water) cap = g_arena.high_water;
        for (int i = 0; i < g_arena.n; i++) free(g_arena.blocks[i].mem);
        g_arena.n = 1;
        g_arena.blocks[0].mem = aligned_malloc(cap);
        g_arena.blocks[0].cap = cap;
    }
    if (g_arena.n == 1) g_arena.blocks[0].used = 0;
    g_tape.n = 0;
}

void ag_shutdown(void) {
    for (int i = 0; i < g_arena.n; i++) free(g_arena.blocks[i].mem);
    g_arena.n = 0;
    g_arena.high_water = 0;
    free(g_tape.entries);
    g_tape.entries = NULL;
    g_tape.n = g_tape.cap = 0;
}

// ---------------------------------------------------------------------------
// Tensors

int64_t shape_numel(int ndim, const int *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        AG_ASSERT(shape[i] >= 0, "negative dimension %d", shape[i]);
        n *= shape[i];
    }
    return n;
}

static tensor *tensor_header(int ndim, const int *shape) {
    AG_ASSERT(ndim >= 0 && ndim <= T_MAXDIM, "ndim %d", ndim);
    tensor *t = arena_calloc(sizeof(tensor));
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = shape_numel(ndim, shape);
    return t;
}

tensor *tensor_new(int ndim, const int *shape) {
    tensor *t = tensor_header(ndim, shape);
    t->data = arena_alloc((size_t)t->numel * sizeof(float));
    return t;
}

tensor *tensor_zeros(int ndim, const int *shape) {
    tensor *t = tensor_header(ndim, shape);
    t->data = arena_calloc((size_t)t->numel * sizeof(float));
    return t;
}

tensor *tensor_like(const tensor *t) { return tensor_new(t->ndim, t->shape); }

tensor *tensor_from(int ndim, const int *shape, const float *src) {
    tensor *t = tensor_new(ndim, shape);
    memcpy(t->data, src, (size_t)t->numel * sizeof(float));
    return t;
}

static tensor *tensor_root(tensor *t) {
    while (t->base) t = t->base;
    return t;
}

tensor *tensor_view(tensor *t, int ndim, const int *shape) {
    tensor *v = tensor_header(ndim, shape);
    AG_ASSERT(v->numel == t->numel, "view of %lld elements as %lld", (long long)t->numel,
              (long long)v->numel);
    tensor *root = tensor_root(t);
    v->base = root;
    v->data = t->data;
    v->grad = root->grad;
    v->requires_grad = t->requires_grad;
    v->param = t->param;
    return v;
}

float *tensor_grad(tensor *t) {
    tensor *root = tensor_root(t);
    if (!root->grad) {
        // Parameters get their grad pointer at store_finalize; frozen ones have none
        // and must never be asked for one.
        AG_ASSERT(root->param == NULL, "tensor_grad on a parameter without a gradient");
        root->grad = arena_calloc((size_t)root->numel * sizeof(float));
    }
    t->grad = root->grad;
    return root->grad;
}

bool tensor_same_shape(const tensor *a, const tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *tensor_shape_str(const tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %d" : "%d", t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

// ---------------------------------------------------------------------------
// Grad mode

static bool g_grad_enabled = true;

bool ag_grad_enabled(void) { return g_grad_enabled; }
void ag_set_grad_enabled(bool on) { g_grad_enabled = on; }
bool ag_no_grad_begin(void) {
    bool prev = g_grad_enabled;
    g_grad_enabled = false;
    return prev;
}
void ag_no_grad_end(bool prev) { g_grad_enabled = prev; }

// ---------------------------------------------------------------------------
// Tape

bool ag_needs_grad(int n, tensor *const *in) {
    if (!g_grad_enabled) return false;
    for (int i = 0; i < n; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

tape_entry *ag_record(const char *op, backward_fn fn, tensor *out, int n,
                      tensor *const *in, void *saved) {
    AG_ASSERT(fn != NULL, "op %s has no backward and cannot be recorded", op);
    AG_ASSERT(n >= 0 && n <= TAPE_MAX_IN, "op %s: %d inputs", op, n);
    if (g_tape.n == g_tape.cap) {
        // The tape grows during the first step only; it is reused after reset.
        int cap = g_tape.cap ? g_tape.cap * 2 : 1024;
        tape_entry *e = realloc(g_tape.entries, (size_t)cap * sizeof(tape_entry));
        AG_ASSERT(e != NULL, "out of memory growing the tape");
        g_tape.entries = e;
        g_tape.cap = cap;
    }
    tape_entry *e = &g_tape.entries[g_tape.n++];
    e->op = op;
    e->backward = fn;
    e->out = out;
    e->n_in = n;
    for (int i = 0; i < TAPE_MAX_IN; i++) e->in[i] = i < n ? in[i] : NULL;
    e->saved = saved;
    e->section = prof_current();
    out->requires_grad = true;
    return e;
}

int ag_tape_len(void) { return g_tape.n; }

void ag_backward_seed(tensor *out, const float *seed) {
    AG_ASSERT(out->requires_grad, "backward on a tensor that does not require grad");
    float *g = tensor_grad(out);
    for (int64_t i = 0; i < out->numel; i++) g[i] += seed[i];
    for (int i = g_tape.n - 1; i >= 0; i--) {
        tape_entry *e = &g_tape.entries[i];
        tensor *root = tensor_root(e->out);
        if (!root->grad) continue;   // nothing flowed into this output
        e->out->grad = root->grad;
        if (prof_enabled()) prof_backward_switch(e->section);
        e->backward(e);
    }
    if (prof_enabled()) prof_backward_end();
    // The graph is consumed, as in PyTorch: a second backward needs a new forward.
    g_tape.n = 0;
}

void ag_backward(tensor *loss) {
    AG_ASSERT(loss->numel == 1, "backward needs a scalar loss, got %lld elements",
              (long long)loss->numel);
    float one = 1.0f;
    ag_backward_seed(loss, &one);
}
