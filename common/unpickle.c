// Restricted unpickler (see unpickle.h): a stack machine over the opcodes that
// torch.save emits (protocol 2, plus the protocol 4 ones Python 3.8+ may use),
// building inert values. Callables are never called: a GLOBAL is only a name,
// and REDUCE/NEWOBJ on a name we do not know yields an opaque object.
#include "common/unpickle.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Arena: bump allocation in blocks, one free at the end, a hard byte budget.

typedef struct up_block {
    struct up_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} up_block;

struct up_arena {
    up_block *head;
    size_t total, budget;
};

up_arena *up_arena_new(size_t budget) {
    up_arena *a = calloc(1, sizeof *a);
    if (a) a->budget = budget;
    return a;
}

void up_arena_free(up_arena *a) {
    if (!a) return;
    for (up_block *b = a->head, *nx; b; b = nx) {
        nx = b->next;
        free(b);
    }
    free(a);
}

void *up_alloc(up_arena *a, size_t bytes) {
    bytes = (bytes + 15) & ~(size_t)15;
    if (bytes == 0) bytes = 16;
    if (bytes > a->budget - a->total || a->total > a->budget) return NULL;
    up_block *b = a->head;
    if (!b || b->cap - b->used < bytes) {
        size_t cap = bytes > 65536 ? bytes : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += bytes;
    a->total += bytes;
    memset(p, 0, bytes);
    return p;
}

up_value *up_new(up_arena *a, up_kind kind) {
    up_value *v = up_alloc(a, sizeof *v);
    if (v) v->kind = kind;
    return v;
}

const char *up_strdup(up_arena *a, const char *s, size_t len) {
    if (len > SIZE_MAX - 1) return NULL;
    char *p = up_alloc(a, len + 1);
    if (!p) return NULL;
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return p;
}

void up_note(up_notes *n, const char *fmt, ...) {
    if (!n) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (strstr(n->text, line)) return;
    size_t used = strlen(n->text), len = strlen(line);
    n->count++;
    if (used + len + 2 >= sizeof n->text) {
        if (used + 5 < sizeof n->text && !strstr(n->text, "...\n")) strcat(n->text, "...\n");
        return;
    }
    memcpy(n->text + used, line, len);
    n->text[used + len] = '\n';
    n->text[used + len + 1] = 0;
}

const char *up_kind_name(up_kind k) {
    static const char *names[] = {"None",  "bool",   "int",    "big int", "float",
                                  "str",   "bytes",  "tuple",  "list",    "dict",
                                  "class", "storage", "tensor", "object"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

bool up_is_str(const up_value *v, const char *s) {
    return v && v->kind == UP_STR && v->str.len == strlen(s) && !memcmp(v->str.s, s, v->str.len);
}

up_value *up_dict_get(const up_value *d, const char *key) {
    if (!d || d->kind != UP_DICT) return NULL;
    for (size_t i = d->seq.n; i >= 2; i -= 2)
        if (up_is_str(d->seq.items[i - 2], key)) return d->seq.items[i - 1];
    return NULL;
}

// ---------------------------------------------------------------------------
// The machine.

typedef struct {
    up_arena *a;
    const uint8_t *buf;
    size_t n, pos, op_pos;
    uint8_t op;
    up_value **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    // memo: open addressing, key -> value (keys are u32 indices)
    uint32_t *mkeys;
    up_value **mvals;
    size_t mcap_, mlen;
    up_persid_fn persid;
    void *ctx;
    up_notes *notes;
    char *err;
    size_t errlen;
} up_vm;

__attribute__((format(printf, 2, 3))) static int vm_fail(up_vm *m, const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (m->op >= 0x20 && m->op < 0x7f)
        snprintf(m->err, m->errlen, "pickle byte %zu, opcode '%c' (0x%02x): %s", m->op_pos,
                 m->op, m->op, msg);
    else
        snprintf(m->err, m->errlen, "pickle byte %zu, opcode 0x%02x: %s", m->op_pos, m->op, msg);
    return -1;
}

static int oom(up_vm *m) {
    return vm_fail(m, "the pickle needs more memory than its size allows (malformed or hostile)");
}

static int need(up_vm *m, size_t k) {
    if (k > m->n - m->pos)
        return vm_fail(m, "truncated: needs %zu more bytes, %zu left", k, m->n - m->pos);
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int k) {
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int push(up_vm *m, up_value *v) {
    if (!v) return oom(m);
    if (m->sp == m->scap) {
        size_t cap = m->scap ? m->scap * 2 : 64;
        if (cap * sizeof(up_value *) > (m->n + 64) * 16) return oom(m);
        up_value **s = realloc(m->stack, cap * sizeof *s);
        if (!s) return oom(m);
        m->stack = s;
        m->scap = cap;
    }
    m->stack[m->sp++] = v;
    return 0;
}

static size_t stack_floor(const up_vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

static up_value *pop(up_vm *m) {
    if (m->sp <= stack_floor(m)) {
        vm_fail(m, "stack underflow");
        return NULL;
    }
    return m->stack[--m->sp];
}

static up_value *top(up_vm *m) {
    if (m->sp <= stack_floor(m)) {
        vm_fail(m, "stack underflow");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

// Pops the mark; items above it are m->stack[*first .. m->sp).
static int pop_mark(up_vm *m, size_t *first) {
    if (!m->nmarks) return vm_fail(m, "no MARK on the stack");
    *first = m->marks[--m->nmarks];
    return 0;
}

static int seq_push(up_vm *m, up_value *seq, up_value *item) {
    if (seq->seq.n == seq->seq.cap) {
        size_t cap = seq->seq.cap ? seq->seq.cap * 2 : 4;
        up_value **items = up_alloc(m->a, cap * sizeof *items);
        if (!items) return oom(m);
        if (seq->seq.n) memcpy(items, seq->seq.items, seq->seq.n * sizeof *items);
        seq->seq.items = items;
        seq->seq.cap = cap;
    }
    seq->seq.items[seq->seq.n++] = item;
    return 0;
}

static up_value *make_seq(up_vm *m, up_kind kind, up_value **items, size_t n) {
    up_value *v = up_new(m->a, kind);
    if (!v) return NULL;
    if (n) {
        v->seq.items = up_alloc(m->a, n * sizeof *items);
        if (!v->seq.items) return NULL;
        memcpy(v->seq.items, items, n * sizeof *items);
    }
    v->seq.n = v->seq.cap = n;
    return v;
}

static up_value *make_int(up_vm *m, int64_t i) {
    up_value *v = up_new(m->a, UP_INT);
    if (v) v->i = i;
    return v;
}

static up_value *make_str(up_vm *m, up_kind kind, size_t len) {
    if (need(m, len)) return NULL;
    up_value *v = up_new(m->a, kind);
    if (!v) {
        oom(m);
        return NULL;
    }
    v->str.s = up_strdup(m->a, (const char *)m->buf + m->pos, len);
    if (!v->str.s) {
        oom(m);
        return NULL;
    }
    v->str.len = len;
    m->pos += len;
    return v;
}

// ---- memo ----
static int memo_put(up_vm *m, uint64_t key, up_value *v) {
    if (key > UINT32_MAX) return vm_fail(m, "memo index %llu out of range", (unsigned long long)key);
    if ((m->mlen + 1) * 2 > m->mcap_) {
        size_t cap = m->mcap_ ? m->mcap_ * 2 : 256;
        uint32_t *keys = up_alloc(m->a, cap * sizeof *keys);
        up_value **vals = up_alloc(m->a, cap * sizeof *vals);
        if (!keys || !vals) return oom(m);
        for (size_t i = 0; i < m->mcap_; i++) {
            if (!m->mvals[i]) continue;
            size_t h = (m->mkeys[i] * 2654435761u) & (cap - 1);
            while (vals[h]) h = (h + 1) & (cap - 1);
            keys[h] = m->mkeys[i];
            vals[h] = m->mvals[i];
        }
        m->mkeys = keys;
        m->mvals = vals;
        m->mcap_ = cap;
    }
    size_t h = ((uint32_t)key * 2654435761u) & (m->mcap_ - 1);
    while (m->mvals[h] && m->mkeys[h] != key) h = (h + 1) & (m->mcap_ - 1);
    if (!m->mvals[h]) m->mlen++;
    m->mkeys[h] = (uint32_t)key;
    m->mvals[h] = v;
    return 0;
}

static up_value *memo_get(up_vm *m, uint64_t key) {
    if (m->mcap_ && key <= UINT32_MAX) {
        size_t h = ((uint32_t)key * 2654435761u) & (m->mcap_ - 1);
        while (m->mvals[h]) {
            if (m->mkeys[h] == key) return m->mvals[h];
            h = (h + 1) & (m->mcap_ - 1);
        }
    }
    vm_fail(m, "memo index %llu was never stored", (unsigned long long)key);
    return NULL;
}

// ---- torch's rebuild functions ----

static bool global_is(const up_value *g, const char *module, const char *name) {
    return !strcmp(g->global.module, module) && !strcmp(g->global.name, name);
}

static int int_arg(up_vm *m, const up_value *v, const char *what, int64_t *out) {
    if (!v || v->kind != UP_INT)
        return vm_fail(m, "tensor %s is a %s, expected an int", what, v ? up_kind_name(v->kind) : "nothing");
    *out = v->i;
    return 0;
}

static int int_tuple(up_vm *m, const up_value *v, const char *what, int64_t *out, int *nd) {
    if (!v || (v->kind != UP_TUPLE && v->kind != UP_LIST))
        return vm_fail(m, "tensor %s is a %s, expected a tuple", what, v ? up_kind_name(v->kind) : "nothing");
    if (v->seq.n > UP_MAXDIM)
        return vm_fail(m, "tensor with %zu dimensions (at most %d supported)", v->seq.n, UP_MAXDIM);
    for (size_t i = 0; i < v->seq.n; i++)
        if (int_arg(m, v->seq.items[i], what, &out[i])) return -1;
    *nd = (int)v->seq.n;
    return 0;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
// backward_hooks, [metadata]) and the older _rebuild_tensor (first four).
static up_value *rebuild_tensor(up_vm *m, const up_value *args) {
    if (args->seq.n < 4) {
        vm_fail(m, "_rebuild_tensor: %zu arguments, expected at least 4", args->seq.n);
        return NULL;
    }
    const up_value *st = args->seq.items[0];
    if (st->kind != UP_STORAGE) {
        vm_fail(m, "_rebuild_tensor: the storage argument is a %s", up_kind_name(st->kind));
        return NULL;
    }
    up_tensor *t = up_alloc(m->a, sizeof *t);
    if (!t) {
        oom(m);
        return NULL;
    }
    t->storage = (up_value *)st;
    int nd2;
    if (int_arg(m, args->seq.items[1], "storage offset", &t->offset) ||
        int_tuple(m, args->seq.items[2], "size", t->shape, &t->ndim) ||
        int_tuple(m, args->seq.items[3], "stride", t->stride, &nd2))
        return NULL;
    if (nd2 != t->ndim) {
        vm_fail(m, "tensor size has %d dimensions but stride has %d", t->ndim, nd2);
        return NULL;
    }
    if (t->offset < 0) {
        vm_fail(m, "negative storage offset %lld", (long long)t->offset);
        return NULL;
    }
    int64_t numel = 1, last = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || t->shape[d] > INT32_MAX) {
            vm_fail(m, "absurd tensor size %lld in dimension %d", (long long)t->shape[d], d);
            return NULL;
        }
        if (t->stride[d] < 0) {
            vm_fail(m, "negative stride %lld in dimension %d", (long long)t->stride[d], d);
            return NULL;
        }
        if (__builtin_mul_overflow(numel, t->shape[d], &numel) || numel > ((int64_t)1 << 40)) {
            vm_fail(m, "absurd tensor size (more than 2^40 elements)");
            return NULL;
        }
    }
    if (numel > 0) {
        for (int d = 0; d < t->ndim; d++) {
            int64_t span;
            if (__builtin_mul_overflow(t->shape[d] - 1, t->stride[d], &span) ||
                __builtin_add_overflow(last, span, &last)) {
                vm_fail(m, "tensor strides overflow");
                return NULL;
            }
        }
        t->extent = last + 1;
        if (t->extent > st->storage.numel) {
            vm_fail(m, "tensor (offset %lld, size/stride reaching element %lld) lies outside its "
                    "storage of %lld elements", (long long)t->offset, (long long)last,
                    (long long)st->storage.numel);
            return NULL;
        }
    }
    t->numel = numel;
    up_value *v = up_new(m->a, UP_TENSOR);
    if (!v) {
        oom(m);
        return NULL;
    }
    v->tensor = t;
    return v;
}

static up_value *make_object(up_vm *m, const char *module, const char *name, const char *how) {
    up_value *v = up_new(m->a, UP_OBJECT);
    if (!v) {
        oom(m);
        return NULL;
    }
    v->object.module = module;
    v->object.name = name;
    if (!strcmp(how, "instance"))
        up_note(m->notes, "skipped instances of class %s.%s", module, name);
    else
        up_note(m->notes, "skipped values built by %s.%s (%s)", module, name, how);
    return v;
}

static up_value *seq_to_list(up_vm *m, const up_value *src) {
    if (src && (src->kind == UP_LIST || src->kind == UP_TUPLE))
        return make_seq(m, UP_LIST, src->seq.items, src->seq.n);
    return make_seq(m, UP_LIST, NULL, 0);
}

// What calling `fn(*args)` gives, for the callables we understand.
static up_value *apply(up_vm *m, const up_value *fn, const up_value *args, int depth) {
    if (args->kind != UP_TUPLE) {
        vm_fail(m, "call arguments are a %s, expected a tuple", up_kind_name(args->kind));
        return NULL;
    }
    if (fn->kind != UP_GLOBAL) {
        if (fn->kind == UP_OBJECT) return make_object(m, fn->object.module, fn->object.name, "call");
        vm_fail(m, "calling a %s", up_kind_name(fn->kind));
        return NULL;
    }
    const size_t na = args->seq.n;
    up_value *a0 = na ? args->seq.items[0] : NULL;
    if (global_is(fn, "collections", "OrderedDict") || global_is(fn, "builtins", "dict") ||
        global_is(fn, "__builtin__", "dict") || global_is(fn, "collections", "defaultdict")) {
        up_value *d = up_new(m->a, UP_DICT);
        if (!d) {
            oom(m);
            return NULL;
        }
        // OrderedDict([(k, v), ...]) as older protocols write it
        if (a0 && a0->kind == UP_LIST && !global_is(fn, "collections", "defaultdict"))
            for (size_t i = 0; i < a0->seq.n; i++) {
                up_value *p = a0->seq.items[i];
                if ((p->kind != UP_TUPLE && p->kind != UP_LIST) || p->seq.n != 2) {
                    vm_fail(m, "OrderedDict item %zu is not a pair", i);
                    return NULL;
                }
                if (seq_push(m, d, p->seq.items[0]) || seq_push(m, d, p->seq.items[1])) return NULL;
            }
        return d;
    }
    if (!strcmp(fn->global.module, "torch._utils") &&
        (!strcmp(fn->global.name, "_rebuild_tensor_v2") || !strcmp(fn->global.name, "_rebuild_tensor")))
        return rebuild_tensor(m, args);
    if (global_is(fn, "torch._utils", "_rebuild_parameter") ||
        global_is(fn, "torch._utils", "_rebuild_parameter_with_state")) {
        if (!a0) {
            vm_fail(m, "_rebuild_parameter without arguments");
            return NULL;
        }
        return a0;   // the parameter is its data tensor (or whatever it was)
    }
    if ((global_is(fn, "torch._tensor", "_rebuild_from_type_v2") ||
         global_is(fn, "torch._tensor", "_rebuild_from_type")) && na >= 3 && depth < 2) {
        up_value *inner = args->seq.items[0], *inner_args = args->seq.items[2];
        if (!strcmp(fn->global.name, "_rebuild_from_type")) inner_args = args->seq.items[na >= 3 ? 2 : 1];
        if (inner->kind == UP_GLOBAL && inner_args->kind == UP_TUPLE)
            return apply(m, inner, inner_args, depth + 1);
    }
    if (global_is(fn, "torch", "Size")) {
        if (a0 && (a0->kind == UP_TUPLE || a0->kind == UP_LIST)) return a0;
        return make_seq(m, UP_TUPLE, NULL, 0);
    }
    if (global_is(fn, "builtins", "set") || global_is(fn, "builtins", "frozenset") ||
        global_is(fn, "__builtin__", "set") || global_is(fn, "__builtin__", "frozenset") ||
        global_is(fn, "builtins", "list") || global_is(fn, "__builtin__", "list"))
        return seq_to_list(m, a0);
    if (global_is(fn, "builtins", "tuple") || global_is(fn, "__builtin__", "tuple")) {
        up_value *l = seq_to_list(m, a0);
        if (l) l->kind = UP_TUPLE;
        return l;
    }
    return make_object(m, fn->global.module, fn->global.name, "not a tensor");
}

// A newline-terminated line (GLOBAL, PERSID), at most 1 KiB.
static const char *read_line(up_vm *m, size_t *len) {
    size_t left = m->n - m->pos, lim = left < 1024 ? left : 1024;
    const uint8_t *p = m->buf + m->pos, *nl = memchr(p, '\n', lim);
    if (!nl) {
        vm_fail(m, left < 1024 ? "truncated: unterminated line" : "line longer than 1 KiB");
        return NULL;
    }
    *len = (size_t)(nl - p);
    m->pos += *len + 1;
    const char *s = up_strdup(m->a, (const char *)p, *len);
    if (!s) oom(m);
    return s;
}

static up_value *make_global(up_vm *m, const char *module, size_t mlen, const char *name,
                             size_t nlen) {
    if (memchr(module, 0, mlen) || memchr(name, 0, nlen) || !mlen || !nlen) {
        vm_fail(m, "malformed class name");
        return NULL;
    }
    up_value *g = up_new(m->a, UP_GLOBAL);
    if (!g) {
        oom(m);
        return NULL;
    }
    g->global.module = module;
    g->global.name = name;
    return g;
}

static int do_persid(up_vm *m, up_value *pid) {
    if (!m->persid) return vm_fail(m, "persistent id without a loader");
    up_value *v = m->persid(m->ctx, m->a, pid, m->err, m->errlen);
    if (!v) {
        char inner[384];
        snprintf(inner, sizeof inner, "%s", m->err);
        return vm_fail(m, "%s", inner);
    }
    return push(m, v);
}

// ---------------------------------------------------------------------------

up_value *up_load(up_arena *a, const uint8_t *buf, size_t n, size_t *used, up_persid_fn fn,
                  void *ctx, up_notes *notes, char *err, size_t errlen) {
    up_vm m = {.a = a, .buf = buf, .n = n, .persid = fn, .ctx = ctx, .notes = notes,
               .err = err, .errlen = errlen};
    up_value *result = NULL;
    int rc = 0;
    err[0] = 0;
    // never NULL, so `stack + first` is defined even before the first push
    m.stack = malloc(64 * sizeof *m.stack);
    if (!m.stack) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m.scap = 64;
    while (rc == 0 && !result) {
        if (m.pos >= m.n) {
            m.op_pos = m.pos;
            m.op = 0;
            snprintf(err, errlen, "pickle truncated at byte %zu (no STOP)", m.pos);
            rc = -1;
            break;
        }
        m.op_pos = m.pos;
        m.op = buf[m.pos++];
        const uint8_t *p = buf + m.pos;
        up_value *v, *w, *x;
        size_t first = 0, len = 0;
        switch (m.op) {
        case 0x80:  // PROTO
            if ((rc = need(&m, 1))) break;
            if (buf[m.pos] > 5) rc = vm_fail(&m, "unsupported pickle protocol %d", buf[m.pos]);
            m.pos++;
            break;
        case 0x95:  // FRAME: an 8-byte length hint for buffered readers
            if ((rc = need(&m, 8))) break;
            m.pos += 8;
            break;
        case '.':  // STOP
            if (m.nmarks) {
                rc = vm_fail(&m, "STOP with an open MARK");
                break;
            }
            if (!(result = pop(&m))) rc = -1;
            break;
        case '(':  // MARK
            if (m.nmarks == m.mcap) {
                size_t cap = m.mcap ? m.mcap * 2 : 16;
                size_t *mk = realloc(m.marks, cap * sizeof *mk);
                if (!mk) {
                    rc = oom(&m);
                    break;
                }
                m.marks = mk;
                m.mcap = cap;
            }
            m.marks[m.nmarks++] = m.sp;
            break;
        case '0':  // POP
            rc = pop(&m) ? 0 : -1;
            break;
        case '1':  // POP_MARK
            if (!(rc = pop_mark(&m, &first))) m.sp = first;
            break;
        case '2':  // DUP
            rc = (v = top(&m)) ? push(&m, v) : -1;
            break;
        case 'N': rc = push(&m, up_new(a, UP_NONE)); break;
        case 0x88:
        case 0x89:  // NEWTRUE, NEWFALSE
            if ((v = up_new(a, UP_BOOL))) v->b = m.op == 0x88;
            rc = push(&m, v);
            break;
        case 'J':  // BININT
            if ((rc = need(&m, 4))) break;
            m.pos += 4;
            rc = push(&m, make_int(&m, (int32_t)(uint32_t)rd_le(p, 4)));
            break;
        case 'K':  // BININT1
            if ((rc = need(&m, 1))) break;
            m.pos += 1;
            rc = push(&m, make_int(&m, p[0]));
            break;
        case 'M':  // BININT2
            if ((rc = need(&m, 2))) break;
            m.pos += 2;
            rc = push(&m, make_int(&m, (int64_t)rd_le(p, 2)));
            break;
        case 0x8a:  // LONG1
        case 0x8b:  // LONG4
            if ((rc = need(&m, m.op == 0x8a ? 1 : 4))) break;
            len = m.op == 0x8a ? p[0] : (size_t)(int32_t)(uint32_t)rd_le(p, 4);
            if (m.op == 0x8b && (int32_t)(uint32_t)rd_le(p, 4) < 0) {
                rc = vm_fail(&m, "negative LONG4 length");
                break;
            }
            m.pos += m.op == 0x8a ? 1 : 4;
            if ((rc = need(&m, len))) break;
            if (len <= 8) {
                uint64_t u = len ? rd_le(buf + m.pos, (int)len) : 0;
                if (len && len < 8 && (buf[m.pos + len - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * len);
                m.pos += len;
                rc = push(&m, make_int(&m, (int64_t)u));
            } else {
                rc = push(&m, (v = make_str(&m, UP_BIGINT, len))) ;
                if (!v) rc = -1;
            }
            break;
        case 'G':  // BINFLOAT, big-endian
            if ((rc = need(&m, 8))) break;
            {
                uint64_t u = 0;
                for (int i = 0; i < 8; i++) u = (u << 8) | p[i];
                double d;
                memcpy(&d, &u, 8);
                m.pos += 8;
                if ((v = up_new(a, UP_FLOAT))) v->f = d;
                rc = push(&m, v);
            }
            break;
        case 'X': case 'T': case 'B':   // BINUNICODE, BINSTRING, BINBYTES (4-byte length)
        case 0x8c: case 'U': case 'C':  // SHORT_BINUNICODE, SHORT_BINSTRING, SHORT_BINBYTES
        case 0x8d: case 0x8e: case 0x96: {  // BINUNICODE8, BINBYTES8, BYTEARRAY8
            int lb = (m.op == 0x8c || m.op == 'U' || m.op == 'C') ? 1
                     : (m.op == 0x8d || m.op == 0x8e || m.op == 0x96) ? 8 : 4;
            if ((rc = need(&m, (size_t)lb))) break;
            uint64_t l = rd_le(p, lb);
            if (m.op == 'T' && (int32_t)l < 0) {
                rc = vm_fail(&m, "negative string length");
                break;
            }
            m.pos += lb;
            if (l > m.n - m.pos) {
                rc = vm_fail(&m, "string of %llu bytes but only %zu left", (unsigned long long)l,
                             m.n - m.pos);
                break;
            }
            up_kind k = (m.op == 'X' || m.op == 0x8c || m.op == 0x8d || m.op == 'T' || m.op == 'U')
                            ? UP_STR : UP_BYTES;
            rc = (v = make_str(&m, k, (size_t)l)) ? push(&m, v) : -1;
            break;
        }
        case ')': rc = push(&m, make_seq(&m, UP_TUPLE, NULL, 0)); break;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
            size_t k = (size_t)(m.op - 0x84);
            if (m.sp < stack_floor(&m) + k) {
                rc = vm_fail(&m, "stack underflow");
                break;
            }
            m.sp -= k;
            rc = push(&m, make_seq(&m, UP_TUPLE, m.stack + m.sp, k));
            break;
        }
        case 't': case 'l': case 0x91:  // TUPLE, LIST, FROZENSET
            if ((rc = pop_mark(&m, &first))) break;
            v = make_seq(&m, m.op == 't' ? UP_TUPLE : UP_LIST, m.stack + first, m.sp - first);
            m.sp = first;
            rc = push(&m, v);
            break;
        case ']': case 0x8f:  // EMPTY_LIST, EMPTY_SET
            rc = push(&m, make_seq(&m, UP_LIST, NULL, 0));
            break;
        case '}': rc = push(&m, up_new(a, UP_DICT)); break;
        case 'd':  // DICT
            if ((rc = pop_mark(&m, &first))) break;
            if ((m.sp - first) % 2) {
                rc = vm_fail(&m, "odd number of items for a dict");
                break;
            }
            v = make_seq(&m, UP_DICT, m.stack + first, m.sp - first);
            m.sp = first;
            rc = push(&m, v);
            break;
        case 'a':  // APPEND
            if (!(w = pop(&m)) || !(v = top(&m))) {
                rc = -1;
                break;
            }
            if (v->kind == UP_LIST) rc = seq_push(&m, v, w);
            else if (v->kind != UP_OBJECT) rc = vm_fail(&m, "APPEND to a %s", up_kind_name(v->kind));
            break;
        case 'e': case 0x90:  // APPENDS, ADDITEMS
            if ((rc = pop_mark(&m, &first))) break;
            if (first <= stack_floor(&m)) {
                rc = vm_fail(&m, "stack underflow");
                break;
            }
            v = m.stack[first - 1];
            if (v->kind == UP_LIST)
                for (size_t i = first; i < m.sp && !rc; i++) rc = seq_push(&m, v, m.stack[i]);
            else if (v->kind != UP_OBJECT)
                rc = vm_fail(&m, "APPENDS to a %s", up_kind_name(v->kind));
            m.sp = first;
            break;
        case 's':  // SETITEM
            if (!(x = pop(&m)) || !(w = pop(&m)) || !(v = top(&m))) {
                rc = -1;
                break;
            }
            if (v->kind == UP_DICT) rc = seq_push(&m, v, w) ? -1 : seq_push(&m, v, x);
            else if (v->kind != UP_OBJECT) rc = vm_fail(&m, "SETITEM on a %s", up_kind_name(v->kind));
            break;
        case 'u':  // SETITEMS
            if ((rc = pop_mark(&m, &first))) break;
            if (first <= stack_floor(&m) || (m.sp - first) % 2) {
                rc = vm_fail(&m, first <= stack_floor(&m) ? "stack underflow"
                                                          : "odd number of items for SETITEMS");
                break;
            }
            v = m.stack[first - 1];
            if (v->kind == UP_DICT)
                for (size_t i = first; i < m.sp && !rc; i++) rc = seq_push(&m, v, m.stack[i]);
            else if (v->kind != UP_OBJECT)
                rc = vm_fail(&m, "SETITEMS on a %s", up_kind_name(v->kind));
            m.sp = first;
            break;
        case 'c': {  // GLOBAL "module\nname\n"
            size_t ml, nl;
            const char *mod = read_line(&m, &ml), *name = mod ? read_line(&m, &nl) : NULL;
            if (!name) {
                rc = -1;
                break;
            }
            rc = (v = make_global(&m, mod, ml, name, nl)) ? push(&m, v) : -1;
            break;
        }
        case 0x93:  // STACK_GLOBAL
            if (!(w = pop(&m)) || !(v = pop(&m))) {
                rc = -1;
                break;
            }
            if (v->kind != UP_STR || w->kind != UP_STR) {
                rc = vm_fail(&m, "STACK_GLOBAL needs two strings");
                break;
            }
            rc = (x = make_global(&m, v->str.s, v->str.len, w->str.s, w->str.len)) ? push(&m, x) : -1;
            break;
        case 'R':  // REDUCE
            if (!(w = pop(&m)) || !(v = pop(&m))) {
                rc = -1;
                break;
            }
            rc = (x = apply(&m, v, w, 0)) ? push(&m, x) : -1;
            break;
        case 0x81:  // NEWOBJ: cls.__new__(cls, *args)
        case 0x92:  // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
            if (m.op == 0x92 && !pop(&m)) {
                rc = -1;
                break;
            }
            if (!(w = pop(&m)) || !(v = pop(&m))) {
                rc = -1;
                break;
            }
            if (v->kind == UP_GLOBAL && (global_is(v, "collections", "OrderedDict") ||
                                         global_is(v, "collections", "defaultdict")))
                x = up_new(a, UP_DICT);
            else if (v->kind == UP_GLOBAL)
                x = make_object(&m, v->global.module, v->global.name, "instance");
            else {
                rc = vm_fail(&m, "NEWOBJ on a %s", up_kind_name(v->kind));
                break;
            }
            rc = x ? push(&m, x) : -1;
            if (!x && !m.err[0]) rc = oom(&m);
            break;
        case 'b':  // BUILD: obj.__setstate__(state); kept for objects, ignored otherwise
            if (!(w = pop(&m)) || !(v = top(&m))) {
                rc = -1;
                break;
            }
            if (v->kind == UP_OBJECT && !v->object.state) v->object.state = w;
            break;
        case 'Q':  // BINPERSID
            rc = (v = pop(&m)) ? do_persid(&m, v) : -1;
            break;
        case 'P': {  // PERSID "id\n"
            const char *s = read_line(&m, &len);
            if (!s || !(v = up_new(a, UP_STR))) {
                rc = s ? oom(&m) : -1;
                break;
            }
            v->str.s = s;
            v->str.len = len;
            rc = do_persid(&m, v);
            break;
        }
        case 'q':  // BINPUT
        case 'r':  // LONG_BINPUT
            if ((rc = need(&m, m.op == 'q' ? 1 : 4))) break;
            m.pos += m.op == 'q' ? 1 : 4;
            rc = (v = top(&m)) ? memo_put(&m, rd_le(p, m.op == 'q' ? 1 : 4), v) : -1;
            break;
        case 0x94:  // MEMOIZE
            rc = (v = top(&m)) ? memo_put(&m, m.mlen, v) : -1;
            break;
        case 'h':  // BINGET
        case 'j':  // LONG_BINGET
            if ((rc = need(&m, m.op == 'h' ? 1 : 4))) break;
            m.pos += m.op == 'h' ? 1 : 4;
            rc = (v = memo_get(&m, rd_le(p, m.op == 'h' ? 1 : 4))) ? push(&m, v) : -1;
            break;
        default:
            rc = vm_fail(&m, "unsupported pickle opcode (text-mode protocol 0/1 pickles, "
                         "extension registry and out-of-band buffers are not supported)");
            break;
        }
        if (rc == 0 && m.err[0]) rc = -1;  // a helper failed after reporting
    }
    free(m.stack);
    free(m.marks);
    if (rc) return NULL;
    *used = m.pos;
    return result;
}
