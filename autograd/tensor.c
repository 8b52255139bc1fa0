// Tensors, the step arena, grad mode and the eager tape.
#include "tensor.h"
#include "profile.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Step arena: bump allocation over a list of blocks. The blocks are kept at
// reset (only their fill levels go back to 0), so memory taken once stays
// resident: freeing big blocks would hand them back to the kernel and the next
// step would fault every page in again.

typedef struct arena_block {
    char *mem;
    size_t cap, used;
} arena_block;

#define ARENA_MAX_BLOCKS 256
#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK ((size_t)16 << 20)

static struct {
    arena_block blocks[ARENA_MAX_BLOCKS];
    int n;
    int cur;             // the block being filled
} g_arena;

static void *aligned_malloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN) != 0) p = NULL;
    AG_ASSERT(p != NULL, "out of memory allocating %zu bytes", bytes);
    return p;
}

static size_t round_align(size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    return need ? need : ARENA_ALIGN;
}

void *arena_alloc(size_t bytes) {
    size_t need = round_align(bytes);
    // Kept blocks first, in order (the same order every step).
    for (; g_arena.cur < g_arena.n; g_arena.cur++) {
        arena_block *b = &g_arena.blocks[g_arena.cur];
        if (b->used + need <= b->cap) {
            void *p = b->mem + b->used;
            b->used += need;
            return p;
        }
    }
    AG_ASSERT(g_arena.n < ARENA_MAX_BLOCKS, "arena: too many blocks");
    size_t cap = need > ARENA_MIN_BLOCK ? need : ARENA_MIN_BLOCK;
    if (g_arena.n > 0 && need < g_arena.blocks[g_arena.n - 1].cap * 2)
        cap = g_arena.blocks[g_arena.n - 1].cap * 2;
    arena_block *b = &g_arena.blocks[g_arena.n];
    g_arena.cur = g_arena.n++;
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

size_t arena_used(void) {
    size_t u = 0;
    for (int i = 0; i < g_arena.n; i++) u += g_arena.blocks[i].used;
    return u;
}

size_t arena_capacity(void) {
    size_t c = 0;
    for (int i = 0; i < g_arena.n; i++) c += g_arena.blocks[i].cap;
    return c;
}

int arena_block_count(void) { return g_arena.n; }

static void arena_reset(void) {
    for (int i = 0; i < g_arena.n; i++) g_arena.blocks[i].used = 0;
    g_arena.cur = 0;
}

static void arena_release(void) {
    for (int i = 0; i < g_arena.n; i++) free(g_arena.blocks[i].mem);
    g_arena.n = 0;
    g_arena.cur = 0;
}

// ---------------------------------------------------------------------------
// Buffer pool: chunks from the system, kept until ag_shutdown, and a list of
// free ranges sorted by address. Allocation is best fit (the smallest range
// that holds the request, lowest address on ties), cut from the range's start;
// a freed buffer merges with free neighbours of its chunk. Each buffer has a
// 64-byte header in front holding its size. A step allocates and frees in the
// same order every time, so once warm it lands on the same addresses.

#define POOL_HDR 64
#define POOL_MAGIC 0x706f6f6cu
#define POOL_MAX_CHUNKS 1024
#define POOL_MIN_CHUNK ((size_t)64 << 20)

typedef struct pool_hdr {
    size_t size;         // bytes of the block, header included
    uint32_t magic;
    int chunk;
} pool_hdr;

typedef struct free_range {
    char *p;
    size_t n;
    int chunk;
} free_range;

static struct {
    char *chunk_mem[POOL_MAX_CHUNKS];
    size_t chunk_cap[POOL_MAX_CHUNKS];
    int n_chunks;
    free_range *fr;      // sorted by address
    int n_fr, cap_fr;
    size_t capacity, in_use, peak, handed_out;
    int64_t grows;
    int poison;          // -1: not read from the environment yet
} g_pool = {.poison = -1};

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POOL_ASAN_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define POOL_ASAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POOL_ASAN_POISON(p, n) ((void)(p), (void)(n))
#define POOL_ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

static bool pool_poison_on(void) {
    if (g_pool.poison < 0) {
        const char *e = getenv("AG_POISON_FREED");
        g_pool.poison = e && e[0] && strcmp(e, "0") != 0;
    }
    return g_pool.poison > 0;
}

void pool_set_poison(bool on) { g_pool.poison = on; }

static void fr_insert_at(int i, free_range r) {
    if (g_pool.n_fr == g_pool.cap_fr) {
        int cap = g_pool.cap_fr ? 2 * g_pool.cap_fr : 256;
        free_range *f = realloc(g_pool.fr, (size_t)cap * sizeof(free_range));
        AG_ASSERT(f != NULL, "out of memory growing the pool's free list");
        g_pool.fr = f;
        g_pool.cap_fr = cap;
    }
    memmove(&g_pool.fr[i + 1], &g_pool.fr[i], (size_t)(g_pool.n_fr - i) * sizeof(free_range));
    g_pool.fr[i] = r;
    g_pool.n_fr++;
}

static void fr_remove_at(int i) {
    memmove(&g_pool.fr[i], &g_pool.fr[i + 1], (size_t)(g_pool.n_fr - i - 1) * sizeof(free_range));
    g_pool.n_fr--;
}

// First index whose range starts above p.
static int fr_upper(const char *p) {
    int lo = 0, hi = g_pool.n_fr;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (g_pool.fr[mid].p <= p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void pool_grow(size_t need) {
    AG_ASSERT(g_pool.n_chunks < POOL_MAX_CHUNKS, "pool: too many chunks");
    size_t cap = need > POOL_MIN_CHUNK ? need : POOL_MIN_CHUNK;
    if (cap < g_pool.capacity / 4) cap = g_pool.capacity / 4;
    cap = (cap + 4095) & ~(size_t)4095;
    int c = g_pool.n_chunks++;
    g_pool.chunk_mem[c] = aligned_malloc(cap);
    g_pool.chunk_cap[c] = cap;
    g_pool.capacity += cap;
    g_pool.grows++;
    POOL_ASAN_POISON(g_pool.chunk_mem[c], cap);
    free_range r = {g_pool.chunk_mem[c], cap, c};
    fr_insert_at(fr_upper(r.p), r);
}

void *pool_alloc(size_t bytes) {
    size_t need = POOL_HDR + round_align(bytes);
    int best = -1;
    for (int i = 0; i < g_pool.n_fr; i++)
        if (g_pool.fr[i].n >= need && (best < 0 || g_pool.fr[i].n < g_pool.fr[best].n)) {
            best = i;
            if (g_pool.fr[i].n == need) break;
        }
    if (best < 0) {
        pool_grow(need);
        return pool_alloc(bytes);
    }
    free_range *r = &g_pool.fr[best];
    char *h = r->p;
    int chunk = r->chunk;
    r->p += need;
    r->n -= need;
    if (r->n == 0) fr_remove_at(best);
    POOL_ASAN_UNPOISON(h, need);
    pool_hdr *hd = (pool_hdr *)h;
    hd->size = need;
    hd->magic = POOL_MAGIC;
    hd->chunk = chunk;
    g_pool.in_use += need;
    g_pool.handed_out += need;
    if (g_pool.in_use > g_pool.peak) g_pool.peak = g_pool.in_use;
    return h + POOL_HDR;
}

void pool_free(void *ptr) {
    if (!ptr) return;
    char *h = (char *)ptr - POOL_HDR;
    pool_hdr *hd = (pool_hdr *)h;
    AG_ASSERT(hd->magic == POOL_MAGIC, "pool_free of a pointer the pool did not give out");
    size_t n = hd->size;
    int chunk = hd->chunk;
    hd->magic = 0;
    g_pool.in_use -= n;
    if (pool_poison_on()) {
        // Quarantined until the reset: NaN (all bits set) makes stale reads visible.
        memset(h, 0xff, n);
        POOL_ASAN_POISON(h, n);
        return;
    }
    POOL_ASAN_POISON(h, n);
    int i = fr_upper(h);
    bool prev = i > 0 && g_pool.fr[i - 1].chunk == chunk &&
                g_pool.fr[i - 1].p + g_pool.fr[i - 1].n == h;
    bool next = i < g_pool.n_fr && g_pool.fr[i].chunk == chunk && h + n == g_pool.fr[i].p;
    if (prev && next) {
        g_pool.fr[i - 1].n += n + g_pool.fr[i].n;
        fr_remove_at(i);
    } else if (prev) {
        g_pool.fr[i - 1].n += n;
    } else if (next) {
        g_pool.fr[i].p = h;
        g_pool.fr[i].n += n;
    } else {
        fr_insert_at(i, (free_range){h, n, chunk});
    }
}

static void pool_reset(void) {
    g_pool.n_fr = 0;
    for (int c = 0; c < g_pool.n_chunks; c++) {
        POOL_ASAN_POISON(g_pool.chunk_mem[c], g_pool.chunk_cap[c]);
        // Chunks are allocated in no particular address order.
        free_range r = {g_pool.chunk_mem[c], g_pool.chunk_cap[c], c};
        fr_insert_at(fr_upper(r.p), r);
    }
    g_pool.in_use = 0;
}

static void pool_release(void) {
    for (int c = 0; c < g_pool.n_chunks; c++) {
        POOL_ASAN_UNPOISON(g_pool.chunk_mem[c], g_pool.chunk_cap[c]);
        free(g_pool.chunk_mem[c]);
    }
    free(g_pool.fr);
    int poison = g_pool.poison;
    memset(&g_pool, 0, sizeof g_pool);
    g_pool.poison = poison;
}

pool_stats pool_get_stats(void) {
    pool_stats st = {g_pool.capacity, g_pool.in_use, g_pool.peak, g_pool.handed_out,
                     g_pool.n_chunks, g_pool.grows};
    return st;
}

void pool_reset_peak(void) {
    g_pool.peak = g_pool.in_use;
    g_pool.handed_out = 0;
}

// ---------------------------------------------------------------------------
// Tensors created this step (roots owning pool memory), for scopes.

static struct {
    tensor **t;
    int n, cap;
} g_created;

static void created_push(tensor *t) {
    if (g_created.n == g_created.cap) {
        int cap = g_created.cap ? 2 * g_created.cap : 4096;
        tensor **p = realloc(g_created.t, (size_t)cap * sizeof(tensor *));
        AG_ASSERT(p != NULL, "out of memory");
        g_created.t = p;
        g_created.cap = cap;
    }
    g_created.t[g_created.n++] = t;
}

static struct {
    tape_entry *entries;
    int n, cap;
} g_tape;

void ag_step_reset(void) {
    arena_reset();
    pool_reset();
    g_created.n = 0;
    g_tape.n = 0;
}

void ag_shutdown(void) {
    arena_release();
    pool_release();
    free(g_created.t);
    g_created.t = NULL;
    g_created.n = g_created.cap = 0;
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

static tensor *tensor_pooled(int ndim, const int *shape, bool zero) {
    tensor *t = tensor_header(ndim, shape);
    size_t bytes = (size_t)t->numel * sizeof(float);
    t->data = pool_alloc(bytes);
    if (zero) memset(t->data, 0, bytes);
    t->pooled = true;
    created_push(t);
    return t;
}

tensor *tensor_new(int ndim, const int *shape) { return tensor_pooled(ndim, shape, false); }

tensor *tensor_zeros(int ndim, const int *shape) { return tensor_pooled(ndim, shape, true); }

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

// Gradient buffers of the transformer's and trunk's activations are MBs: one
// thread zeroing them was 4% of a training pass (the other core idle).
static void zero_floats(float *p, int64_t n) {
    const int64_t chunk = (int64_t)1 << 16;
    if (n < 4 * chunk || omp_in_parallel()) {
        memset(p, 0, (size_t)n * sizeof(float));
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += chunk)
        memset(p + i, 0, (size_t)(n - i < chunk ? n - i : chunk) * sizeof(float));
}

// t's gradient buffer; a new one is zeroed, or with zero = false left as it is
// (NaN under poisoning) and *fresh set.
static float *grad_get(tensor *t, bool zero, bool *fresh) {
    tensor *root = tensor_root(t);
    if (!root->grad) {
        // Parameters get their grad pointer at store_finalize; frozen ones have none
        // and must never be asked for one.
        AG_ASSERT(root->param == NULL, "tensor_grad on a parameter without a gradient");
        root->grad = pool_alloc((size_t)root->numel * sizeof(float));
        if (zero)
            zero_floats(root->grad, root->numel);
        else if (pool_poison_on())
            memset(root->grad, 0xff, (size_t)root->numel * sizeof(float));
        if (fresh) *fresh = !zero;
    }
    t->grad = root->grad;
    return root->grad;
}

float *tensor_grad(tensor *t) { return grad_get(t, true, NULL); }

float *tensor_grad_first(tensor *t, bool *fresh) {
    *fresh = false;
    return grad_get(t, false, fresh);
}

// ---------------------------------------------------------------------------
// Lifetimes: drops, pins, scopes

static void release_data(tensor *r) {
    pool_free(r->data);
    r->data = NULL;
}

static tape_entry *producer_of(const tensor *r) {
    return r->producer > 0 && r->producer <= g_tape.n ? &g_tape.entries[r->producer - 1] : NULL;
}

// The producer can regenerate r when each of its inputs is alive and pinned by
// it (so alive until its backward, after every reader of r) or not pool memory.
static bool can_recompute(const tensor *r) {
    const tape_entry *p = producer_of(r);
    if (!p || !p->recompute || (p->need & AG_NEED_OUT) || r->recompute_deps > 0) return false;
    for (int k = 0; k < p->n_in; k++) {
        const tensor *in = p->in[k] ? tensor_root(p->in[k]) : NULL;
        if (!in || !in->pooled) continue;
        if (!(p->need & AG_NEED_IN(k)) || !in->data) return false;
    }
    return true;
}

static void recompute_deps_add(tape_entry *p, int d) {
    for (int k = 0; k < p->n_in; k++)
        if (p->in[k] && tensor_root(p->in[k])->pooled) tensor_root(p->in[k])->recompute_deps += d;
}

void tensor_drop(tensor *t) {
    tensor *r = tensor_root(t);
    if (!r->pooled || r->dropped) return;
    r->dropped = true;
    if (r->pins == 0) {
        release_data(r);
    } else if (can_recompute(r)) {
        release_data(r);
        r->recompute = true;
        recompute_deps_add(producer_of(r), 1);
    }
}

// Before a backward reads t: regenerate it if it was freed for recomputation.
static void ensure_data(tensor *t) {
    tensor *r = tensor_root(t);
    if (r->recompute) {
        tape_entry *p = producer_of(r);
        AG_ASSERT(p != NULL, "recomputed tensor without a producer");
        r->data = pool_alloc((size_t)r->numel * sizeof(float));
        p->recompute(p, r->data);
        r->recompute = false;
        recompute_deps_add(p, -1);
    }
    t->data = r->data;   // views hold a copy of the pointer
}

static void pin(tensor *t) {
    tensor *r = tensor_root(t);
    if (r->pooled) r->pins++;
}

static void unpin(tensor *t) {
    tensor *r = tensor_root(t);
    if (!r->pooled) return;
    AG_ASSERT(r->pins > 0, "unpin of a tensor that is not pinned");
    if (--r->pins == 0 && r->dropped && r->data) release_data(r);
}

int ag_scope_begin(void) { return g_created.n; }

void ag_scope_end(int mark, int nkeep, tensor *const *keep) {
    AG_ASSERT(mark >= 0 && mark <= g_created.n, "scope mark %d of %d tensors (a step reset "
              "inside a scope?)", mark, g_created.n);
    enum { MAX_KEEP = 8 };
    AG_ASSERT(nkeep >= 0 && nkeep <= MAX_KEEP, "scope: %d kept tensors", nkeep);
    tensor *kr[MAX_KEEP];
    for (int k = 0; k < nkeep; k++) kr[k] = keep[k] ? tensor_root(keep[k]) : NULL;
    int end = g_created.n;
    g_created.n = mark;
    for (int i = mark; i < end; i++) {
        tensor *t = g_created.t[i];
        bool kept = false;
        for (int k = 0; k < nkeep; k++) kept |= kr[k] == t;
        // Kept tensors stay listed, so an enclosing scope can still drop them.
        if (kept) g_created.t[g_created.n++] = t;
        else tensor_drop(t);
    }
}

tensor *ag_scope_keep(int mark, tensor *keep) {
    ag_scope_end(mark, 1, &keep);
    return keep;
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

tape_entry *ag_record_need(const char *op, backward_fn fn, tensor *out, int n,
                           tensor *const *in, void *saved, unsigned need) {
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
    e->need = need & (AG_NEED_OUT | ((1u << n) - 1));
    for (int i = 0; i < TAPE_MAX_IN; i++) {
        e->in[i] = i < n ? in[i] : NULL;
        if (!e->in[i]) e->need &= ~AG_NEED_IN(i);
        if (e->need & AG_NEED_IN(i)) pin(e->in[i]);
    }
    if (e->need & AG_NEED_OUT) pin(out);
    e->saved = saved;
    e->section = prof_current();
    e->recompute = NULL;
    out->requires_grad = true;
    tensor *ro = tensor_root(out);
    if (!ro->producer) ro->producer = g_tape.n;
    return e;
}

tape_entry *ag_record(const char *op, backward_fn fn, tensor *out, int n,
                      tensor *const *in, void *saved) {
    return ag_record_need(op, fn, out, n, in, saved, AG_NEED_ALL);
}

int ag_tape_len(void) { return g_tape.n; }

void ag_backward_seed(tensor *out, const float *seed) {
    AG_ASSERT(out->requires_grad, "backward on a tensor that does not require grad");
    float *g = tensor_grad(out);
    for (int64_t i = 0; i < out->numel; i++) g[i] += seed[i];
    for (int i = g_tape.n - 1; i >= 0; i--) {
        tape_entry *e = &g_tape.entries[i];
        tensor *root = tensor_root(e->out);
        if (root->grad) {   // else nothing flowed into this output
            e->out->grad = root->grad;
            for (int k = 0; k < e->n_in; k++)
                if (e->need & AG_NEED_IN(k)) ensure_data(e->in[k]);
            if (e->need & AG_NEED_OUT) ensure_data(e->out);
            if (prof_enabled()) prof_backward_switch(e->section);
            e->backward(e);
        }
        // Every reader of this entry's output ran before it: what the caller
        // dropped dies here (its gradient too), and so do this entry's pins.
        for (int k = 0; k < e->n_in; k++)
            if (e->need & AG_NEED_IN(k)) unpin(e->in[k]);
        if (e->need & AG_NEED_OUT) unpin(e->out);
        if (root->dropped && root->grad) {
            pool_free(root->grad);
            root->grad = NULL;
            e->out->grad = NULL;
        }
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

