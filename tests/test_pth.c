// PyTorch checkpoint reader: the fixtures torch wrote (tests/reference/ref_pth.py)
// read back bit-exactly in both container formats; corrupted and hand-crafted
// hostile files give errors naming the problem; loading into a param_store by
// name and shape; the `poster import` round trip.
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"
#include "common/pth_read.h"
#include "common/unpickle.h"
#include "layers/weights.h"

#define PTH_DIR FIXTURE_DIR "/pth"

static const char *k_files[] = {
    "sd_zip.pth", "sd_legacy.pth", "ckpt_module_zip.pth.tar", "ckpt_module_legacy.pth.tar",
    "mfn_best.pth.tar", "model_sd.pt", "model_key.pth", "params_zip.pth",
};
#define N_FILES (int)(sizeof k_files / sizeof k_files[0])

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

// Every tensor of `st` equals the expected group (same names, shapes, exact values).
static void expect_group(const pth_state *st, hid_t h5, const char *group, const char *what) {
    char err[512], path[600];
    int64_t count;
    assert_int_equal(h5_read_attr_i64(h5, group, "count", &count), 0);
    if (st->n != count) fail_msg("%s: %d tensors, expected %lld", what, st->n, (long long)count);
    for (int i = 0; i < st->n; i++) {
        const pth_tensor *t = &st->t[i];
        snprintf(path, sizeof path, "%s/%s", group, t->name);
        if (!h5_exists(h5, path)) fail_msg("%s: unexpected tensor %s", what, t->name);
        int nd, shape[T_MAXDIM];
        if (t->is_int) {
            int64_t *want;
            if (h5_read_int64s(h5, path, &want, &nd, shape, err, sizeof err)) fail_msg("%s", err);
            assert_int_equal(nd, t->ndim);
            for (int64_t k = 0; k < t->numel; k++)
                if (t->i64[k] != want[k]) fail_msg("%s: %s[%lld] differs", what, t->name, (long long)k);
            free(want);
        } else {
            float *want;
            if (h5_read_floats(h5, path, &want, &nd, shape, err, sizeof err)) fail_msg("%s", err);
            assert_int_equal(nd, t->ndim);
            for (int64_t k = 0; k < t->numel; k++)
                if (memcmp(&t->f32[k], &want[k], 4))
                    fail_msg("%s: %s[%lld] = %g, torch wrote %g", what, t->name, (long long)k,
                             (double)t->f32[k], (double)want[k]);
            free(want);
        }
        for (int d = 0; d < nd; d++)
            if (shape[d] != t->shape[d]) fail_msg("%s: %s has another shape", what, t->name);
    }
}

static void group_of(const char *file, char *g, size_t n) {
    snprintf(g, n, "%s", file);
    for (char *p = g; *p; p++)
        if (*p == '.') *p = '_';
}

static void test_fixtures_read_back(void **state) {
    (void)state;
    hid_t h5 = tu_fixture_open("pth/expected.h5");
    char err[1024], path[512], group[128];
    for (int i = 0; i < N_FILES; i++) {
        snprintf(path, sizeof path, "%s/%s", PTH_DIR, k_files[i]);
        pth_state *st = pth_load(path, err, sizeof err);
        if (!st) fail_msg("%s", err);
        group_of(k_files[i], group, sizeof group);
        expect_group(st, h5, group, k_files[i]);
        bool legacy = strstr(k_files[i], "legacy") || strstr(k_files[i], "mfn_best");
        assert_string_equal(st->format, legacy ? "legacy" : "zip");
        pth_free(st);
    }
    h5_close(h5);
}

static void test_layouts_and_notes(void **state) {
    (void)state;
    char err[1024];
    pth_state *st = pth_load(PTH_DIR "/ckpt_module_zip.pth.tar", err, sizeof err);
    if (!st) fail_msg("%s", err);
    assert_string_equal(st->where, "['state_dict']");
    assert_int_equal(st->stripped, 17);
    // the non-tensor objects were skipped with a note
    assert_non_null(strstr(st->notes, "argparse.Namespace"));
    assert_non_null(strstr(st->notes, "RecorderMeter"));
    assert_non_null(strstr(st->notes, "numpy"));
    const pth_tensor *nbt = pth_find(st, "ir_back.input_layer.1.num_batches_tracked");
    assert_non_null(nbt);
    assert_true(nbt->is_int);
    assert_int_equal(nbt->ndim, 0);
    assert_int_equal(nbt->i64[0], 7);
    const pth_tensor *w = pth_find(st, "ir_layer.weight");   // the transposed one
    assert_non_null(w);
    assert_int_equal(w->shape[0], 6);
    assert_int_equal(w->shape[1], 10);
    pth_free(st);
    st = pth_load(PTH_DIR "/model_sd.pt", err, sizeof err);
    assert_non_null(st);
    assert_string_equal(st->where, "['model_state_dict']");
    const pth_tensor *big = pth_find(st, "conv1.bn.num_batches_tracked");
    assert_int_equal(big->i64[0], 123456789012LL);
    pth_free(st);
    st = pth_load(PTH_DIR "/model_key.pth", err, sizeof err);
    assert_non_null(st);
    assert_string_equal(st->where, "['model']");
    pth_free(st);
    // missing file and non-checkpoint files are errors naming the file
    assert_null(pth_load(PTH_DIR "/nonexistent.pth", err, sizeof err));
    assert_non_null(strstr(err, "nonexistent.pth"));
    assert_null(pth_load("tests", err, sizeof err));
    assert_non_null(strstr(err, "not a regular file"));
    assert_null(pth_load("tests/test_util.h", err, sizeof err));
    assert_non_null(strstr(err, "not a PyTorch checkpoint"));
    assert_null(pth_load(FIXTURE_DIR "/ops_basic.h5", err, sizeof err));
    assert_non_null(strstr(err, "state_dict"));
}

// ---------------------------------------------------------------------------
// Corruption: every truncation fails; random byte flips fail or succeed, never crash.

static void test_truncated(void **state) {
    (void)state;
    char err[1024];
    for (int i = 0; i < N_FILES; i++) {
        char path[512];
        size_t n;
        snprintf(path, sizeof path, "%s/%s", PTH_DIR, k_files[i]);
        uint8_t *full = read_all(path, &n);
        for (int k = 0; k <= 60; k++) {
            size_t cut = k < 50 ? n * (size_t)k / 50 : n - (size_t)(k - 49);  // spread + last bytes
            if (cut >= n) continue;
            uint8_t *b = malloc(cut ? cut : 1);   // exact size: ASan sees any over-read
            memcpy(b, full, cut);
            err[0] = 0;
            pth_state *st = pth_load_mem(b, cut, k_files[i], err, sizeof err);
            if (st) fail_msg("%s cut at %zu of %zu bytes loaded", k_files[i], cut, n);
            assert_true(strlen(err) > 10);
            free(b);
        }
        free(full);
    }
}

static void test_flipped_bytes(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 42);
    char err[1024];
    int failed = 0, total = 0;
    for (int i = 0; i < N_FILES; i++) {
        char path[512];
        size_t n;
        snprintf(path, sizeof path, "%s/%s", PTH_DIR, k_files[i]);
        uint8_t *full = read_all(path, &n);
        uint8_t *b = malloc(n);
        for (int k = 0; k < 250; k++) {
            memcpy(b, full, n);
            int flips = 1 + (int)rng_below(&r, 4);
            for (int f = 0; f < flips; f++) b[rng_below(&r, (int64_t)n)] ^= (uint8_t)(1 + rng_below(&r, 255));
            err[0] = 0;
            pth_state *st = pth_load_mem(b, n, k_files[i], err, sizeof err);
            total++;
            if (!st) {
                failed++;
                assert_true(strlen(err) > 10);
            } else {
                for (int t = 0; t < st->n; t++) assert_non_null(st->t[t].name);
                pth_free(st);
            }
        }
        free(b);
        free(full);
    }
    printf("flipped bytes: %d of %d variants rejected\n", failed, total);
    assert_true(failed > total / 4);   // most damage is detected (zip CRCs, pickle structure)
}

// ---------------------------------------------------------------------------
// Hand-built pickles and legacy files with one hostile property each.

typedef struct {
    uint8_t *b;
    size_t n, cap;
} pb;

static void pb_raw(pb *p, const void *d, size_t n) {
    if (p->n + n > p->cap) {
        p->cap = (p->n + n) * 2 + 64;
        p->b = realloc(p->b, p->cap);
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static void pb_op(pb *p, uint8_t op) { pb_raw(p, &op, 1); }
static void pb_str(pb *p, const char *s) {
    uint32_t l = (uint32_t)strlen(s);
    pb_op(p, 'X');
    pb_raw(p, &l, 4);
    pb_raw(p, s, l);
}
static void pb_int(pb *p, int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
        int32_t x = (int32_t)v;
        pb_op(p, 'J');
        pb_raw(p, &x, 4);
    } else {
        pb_op(p, 0x8a);
        pb_op(p, 8);
        pb_raw(p, &v, 8);
    }
}
static void pb_global(pb *p, const char *mod, const char *name) {
    pb_op(p, 'c');
    pb_raw(p, mod, strlen(mod));
    pb_op(p, '\n');
    pb_raw(p, name, strlen(name));
    pb_op(p, '\n');
}
static void pb_ints(pb *p, int n, const int64_t *v) {
    pb_op(p, '(');
    for (int i = 0; i < n; i++) pb_int(p, v[i]);
    pb_op(p, 't');
}

typedef struct {
    const char *stype;      // torch.<stype>
    int64_t numel_decl, numel_stream;
    int64_t offset;
    int ndim, stride_ndim;
    int64_t shape[12], stride[12];
    const char *name2;      // a second entry with the same tensor (duplicate-name test)
    bool list_root;         // top-level list instead of a dict
} craft;

static void pb_tensor(pb *p, const craft *c) {
    pb_global(p, "torch._utils", "_rebuild_tensor_v2");
    pb_op(p, '(');
    pb_op(p, '(');
    pb_str(p, "storage");
    pb_global(p, "torch", c->stype);
    pb_str(p, "140000");
    pb_str(p, "cpu");
    pb_int(p, c->numel_decl);
    pb_op(p, 'N');
    pb_op(p, 't');
    pb_op(p, 'Q');
    pb_int(p, c->offset);
    pb_ints(p, c->ndim, c->shape);
    pb_ints(p, c->stride_ndim, c->stride);
    pb_op(p, 0x89);
    pb_global(p, "collections", "OrderedDict");
    pb_op(p, ')');
    pb_op(p, 'R');
    pb_op(p, 't');
    pb_op(p, 'R');
}

// A legacy-format file: header pickles, {name: tensor}, key list, storage bytes.
static pb build_legacy(const craft *c) {
    pb p = {0};
    static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                    0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    pb_raw(&p, magic, sizeof magic);
    pb_raw(&p, "\x80\x02M\xe9\x03.", 6);
    pb_raw(&p, "\x80\x02}.", 4);
    pb_raw(&p, "\x80\x02", 2);
    if (c->list_root) {
        pb_op(&p, ']');
    } else {
        pb_op(&p, '}');
        pb_op(&p, '(');
        pb_str(&p, "w");
        pb_tensor(&p, c);
        if (c->name2) {
            pb_str(&p, c->name2);
            pb_tensor(&p, c);
        }
        pb_op(&p, 'u');
    }
    pb_op(&p, '.');
    pb_raw(&p, "\x80\x02]", 3);
    if (!c->list_root) pb_str(&p, "140000");
    if (!c->list_root) pb_op(&p, 'a');
    pb_op(&p, '.');
    if (!c->list_root) {
        pb_raw(&p, &c->numel_stream, 8);
        // the bytes present: at most what the pickle declared (so a count can lie)
        int64_t present = c->numel_stream < c->numel_decl ? c->numel_stream : c->numel_decl;
        for (int64_t i = 0; i < present; i++) {
            float v[2] = {(float)i, 0};
            pb_raw(&p, v, strstr(c->stype, "Complex") ? 8 : 4);
        }
    }
    return p;
}

static craft good_craft(void) {
    craft c = {.stype = "FloatStorage", .numel_decl = 6, .numel_stream = 6, .ndim = 2,
               .stride_ndim = 2, .shape = {2, 3}, .stride = {1, 2}};
    return c;
}

// Loads a crafted file; expect_err NULL means it must load.
static pth_state *load_craft(const craft *c, const char *expect_err) {
    pb p = build_legacy(c);
    char err[1024] = "";
    pth_state *st = pth_load_mem(p.b, p.n, "crafted", err, sizeof err);
    free(p.b);
    if (expect_err) {
        if (st) fail_msg("crafted file loaded; expected an error with '%s'", expect_err);
        if (!strstr(err, expect_err)) fail_msg("error '%s' does not mention '%s'", err, expect_err);
    } else if (!st) {
        fail_msg("crafted file: %s", err);
    }
    return st;
}

static void test_crafted_files(void **state) {
    (void)state;
    craft c = good_craft();
    pth_state *st = load_craft(&c, NULL);   // the builder itself is right: [2,3] stride (1,2)
    assert_int_equal(st->n, 1);
    const float want[6] = {0, 2, 4, 1, 3, 5};
    assert_memory_equal(st->t[0].f32, want, sizeof want);
    pth_free(st);

    c = good_craft(); c.offset = 1;                      load_craft(&c, "outside its storage");
    c = good_craft(); c.numel_stream = 4;                load_craft(&c, "reaches element 5");
    c = good_craft(); c.numel_stream = 1000;             load_craft(&c, "claims 1000 elements");
    c = good_craft(); c.numel_decl = (int64_t)1 << 50;   load_craft(&c, "more than the file holds");
    c = good_craft(); c.shape[0] = (int64_t)1 << 33;     load_craft(&c, "absurd tensor size");
    c = good_craft(); c.offset = -3;                     load_craft(&c, "negative storage offset");
    c = good_craft(); c.stride[1] = -1;                  load_craft(&c, "negative stride");
    c = good_craft(); c.stride_ndim = 1;                 load_craft(&c, "stride has 1");
    c = good_craft(); c.ndim = c.stride_ndim = 12;
    for (int d = 0; d < 12; d++) c.shape[d] = 1, c.stride[d] = 1;
    load_craft(&c, "12 dimensions");
    c = good_craft(); c.stride[0] = INT64_MAX;       load_craft(&c, "overflow");
    c = good_craft(); c.stype = "FooStorage";            load_craft(&c, "unknown storage type torch.FooStorage");
    c = good_craft(); c.name2 = "w";                     load_craft(&c, "two tensors are named 'w'");
    c = good_craft(); c.list_root = true;                load_craft(&c, "top-level object is a list");
    // the same storage twice under two names is fine (shared storages)
    c = good_craft(); c.name2 = "module.v";
    st = load_craft(&c, NULL);
    assert_int_equal(st->n, 2);
    assert_string_equal(st->t[1].name, "v");
    pth_free(st);
    // an unsupported dtype is skipped with a note, not fatal
    c = good_craft(); c.stype = "ComplexFloatStorage"; c.numel_stream = 3;
    c.numel_decl = 3; c.shape[1] = 1; c.stride[0] = 1;
    st = load_craft(&c, NULL);
    assert_int_equal(st->n, 0);
    assert_non_null(strstr(st->notes, "ComplexFloatStorage"));
    pth_free(st);
}

// The unpickler alone on hostile byte strings.
static void expect_pickle_err(const char *bytes, size_t n, const char *want) {
    up_arena *a = up_arena_new(64 * n + 4096);
    char err[512] = "";
    size_t used;
    uint8_t *copy = malloc(n);   // exact size for ASan
    memcpy(copy, bytes, n);
    up_value *v = up_load(a, copy, n, &used, NULL, NULL, NULL, err, sizeof err);
    if (v) fail_msg("pickle %s loaded; expected '%s'", bytes, want);
    if (!strstr(err, want)) fail_msg("error '%s' does not mention '%s'", err, want);
    free(copy);
    up_arena_free(a);
}

static void test_hostile_pickles(void **state) {
    (void)state;
    expect_pickle_err("\x80\x02\xff.", 4, "unsupported pickle opcode");
    expect_pickle_err("\x80\x02I12\n.", 7, "unsupported pickle opcode");       // protocol 0 INT
    expect_pickle_err("\x80\x09N.", 4, "protocol 9");
    expect_pickle_err("\x80\x02X\xff\xff\xff\x7f" "abc.", 11, "only 4 left");    // huge string
    expect_pickle_err("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff" "a.", 13, "left");
    expect_pickle_err("\x80\x02h\x05.", 5, "memo index 5");
    expect_pickle_err("\x80\x02\x85.", 4, "stack underflow");
    expect_pickle_err("\x80\x02(.", 4, "open MARK");
    expect_pickle_err("\x80\x02N", 3, "no STOP");
    expect_pickle_err("\x80\x02\x8b\xff\xff\xff\xff.", 8, "negative LONG4");
    expect_pickle_err("\x80\x02}NNNs(N", 9, "SETITEM on a None");
    expect_pickle_err("\x80\x02}(NN", 6, "no STOP");
    expect_pickle_err("\x80\x02K\x01K\x02K\x03s.", 10, "SETITEM on a int");
    expect_pickle_err("\x80\x02]N]u.", 7, "no MARK");
    expect_pickle_err("\x80\x02" "cos\nsystem", 12, "unterminated");
    expect_pickle_err("\x80\x02N\x8c\x01" "aQ.", 7, "persistent id without a loader");
    expect_pickle_err("\x80\x02N)R.", 6, "calling a None");

    // MARK + DICT before anything was pushed (found by the fuzzer: UB on a NULL stack)
    up_arena *a0 = up_arena_new(4096);
    char e0[256];
    size_t u0;
    up_value *d0 = up_load(a0, (const uint8_t *)"\x80\x02(d.", 5, &u0, NULL, NULL, NULL, e0, sizeof e0);
    assert_non_null(d0);
    assert_int_equal(d0->kind, UP_DICT);
    up_arena_free(a0);

    // A GLOBAL of a dangerous function is just a name; REDUCE yields an inert object.
    const char *evil = "\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00ls" "\x85R.";
    size_t n = 2 + 11 + 7 + 3;
    up_arena *a = up_arena_new(1 << 20);
    char err[256];
    size_t used;
    up_notes notes = {0};
    up_value *v = up_load(a, (const uint8_t *)evil, n, &used, NULL, NULL, &notes, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(v->kind, UP_OBJECT);
    assert_non_null(strstr(notes.text, "os.system"));
    assert_int_equal(used, n);
    up_arena_free(a);

    // Memory stays bounded: a million DUP+APPEND of one list costs pointers, and
    // the arena budget stops a pickle that needs more than its size allows.
    size_t k = 1000000;
    uint8_t *big = malloc(4 + 2 * k + 2);
    memcpy(big, "\x80\x02](", 4);
    for (size_t i = 0; i < k; i++) big[4 + i] = ']';
    big[4 + k] = 'e';
    big[5 + k] = '.';
    a = up_arena_new(64);   // tiny budget
    v = up_load(a, big, 6 + k, &used, NULL, NULL, NULL, err, sizeof err);
    assert_null(v);
    assert_non_null(strstr(err, "more memory"));
    up_arena_free(a);
    a = up_arena_new(64 * (6 + k) + (1 << 20));
    v = up_load(a, big, 6 + k, &used, NULL, NULL, NULL, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(v->kind, UP_LIST);
    assert_int_equal(v->seq.n, k);
    up_arena_free(a);
    free(big);
}

// ---------------------------------------------------------------------------
// Into a param_store by name and shape.

static void test_load_into_store(void **state) {
    (void)state;
    param_store s;
    store_init(&s);
    store_add(&s, "face_landback.conv1.conv.weight", PARAM_FROZEN, T_SHAPE(4, 3, 3, 3));
    store_add(&s, "face_landback.conv1.bn.weight", PARAM_FROZEN, T_SHAPE(5));  // misshaped
    store_add(&s, "face_landback.conv1.prelu.weight", PARAM_FROZEN, T_SHAPE(4));
    store_add(&s, "face_landback.conv2_dw.conv.weight", PARAM_FROZEN, T_SHAPE(4, 1, 3, 3));
    store_add(&s, "face_landback.conv1.bn.num_batches_tracked", PARAM_COUNTER, 0, NULL);
    store_add(&s, "face_landback.extra.weight", PARAM_FROZEN, T_SHAPE(2));      // missing
    store_add(&s, "head.linear.weight", PARAM_TRAINABLE, T_SHAPE(7, 3));        // other prefix
    store_finalize(&s);
    mkdir(tu_tmpdir(), 0755);
    FILE *log = fopen(tu_path("/load.log"), "w+");
    state_report rep;
    char err[1024];
    int rc = weights_load(&s, PTH_DIR "/mfn_best.pth.tar", "face_landback.", false, &rep, log,
                          err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(rep.matched, 4);
    assert_int_equal(rep.misshaped, 1);
    assert_int_equal(rep.missing, 1);
    assert_int_equal(rep.unexpected, 4);
    // values: same as reading the file directly
    pth_state *st = pth_load(PTH_DIR "/mfn_best.pth.tar", err, sizeof err);
    assert_non_null(st);
    param *p = store_find(&s, "face_landback.conv2_dw.conv.weight");
    assert_memory_equal(p->t.data, pth_find(st, "conv2_dw.conv.weight")->f32, 36 * sizeof(float));
    p = store_find(&s, "face_landback.conv1.bn.num_batches_tracked");
    assert_int_equal(*p->counter, 123456789012LL);
    p = store_find(&s, "face_landback.conv1.bn.weight");
    for (int i = 0; i < 5; i++) assert_true(p->t.data[i] == 0.0f);   // kept
    pth_free(st);
    // the log names the problems
    fflush(log);
    rewind(log);
    char text[8192] = "";
    size_t got = fread(text, 1, sizeof text - 1, log);
    text[got] = 0;
    fclose(log);
    assert_non_null(strstr(text, "missing (kept its initialization): face_landback.extra.weight"));
    assert_non_null(strstr(text, "misshaped (kept): face_landback.conv1.bn.weight: file [4], model [5]"));
    assert_non_null(strstr(text, "unexpected (not in the model): face_landback.conv1.bn.bias"));
    assert_non_null(strstr(text, "4 tensors matched"));
    assert_null(strstr(text, "head.linear"));
    // nothing matching is an error
    rc = weights_load(&s, PTH_DIR "/mfn_best.pth.tar", "ir_back.", false, &rep, NULL, err, sizeof err);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, "none of its 9 tensors"));
    store_free(&s);
}

// ---------------------------------------------------------------------------
// `poster import` through the binary, and reading its output back.

static void test_cli_import(void **state) {
    (void)state;
    const char *bin = getenv("POSTER_BIN");
    if (!bin || !bin[0]) {
        tu_skip("poster import round trip (POSTER_BIN is not set; `make test` sets it)");
    }
    mkdir(tu_tmpdir(), 0755);
    const char *out = tu_path("/ckpt.h5");
    unlink(out);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' import %s/ckpt_module_legacy.pth.tar %s --prefix pre. > %s/cli.log 2>&1",
             bin, PTH_DIR, out, tu_tmpdir());
    if (system(cmd) != 0) fail_msg("command failed: %s (see %s/cli.log)", cmd, tu_tmpdir());
    hid_t f;
    char err[1024], fmt[64] = "";
    int64_t version = 0;
    f = h5_open_read(out, err, sizeof err);
    assert_true(f >= 0);
    assert_int_equal(h5_read_attr_str(f, "/", "format", fmt, sizeof fmt), 0);
    assert_string_equal(fmt, "poster-state");
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &version), 0);
    assert_int_equal(version, 1);
    h5_close(f);
    // read back through the HDF5 path of pth_load: equal to the original
    pth_state *st = pth_load(out, err, sizeof err);
    if (!st) fail_msg("%s", err);
    pth_state *orig = pth_load(PTH_DIR "/ckpt_module_legacy.pth.tar", err, sizeof err);
    assert_non_null(orig);
    assert_string_equal(st->format, "hdf5");
    assert_int_equal(st->n, orig->n);
    for (int i = 0; i < orig->n; i++) {
        char name[300];
        snprintf(name, sizeof name, "pre.%s", orig->t[i].name);
        const pth_tensor *t = pth_find(st, name), *o = &orig->t[i];
        if (!t) fail_msg("%s missing from the import", name);
        assert_int_equal(t->is_int, o->is_int);
        assert_int_equal(t->ndim, o->ndim);
        assert_int_equal(t->numel, o->numel);
        if (o->is_int) assert_memory_equal(t->i64, o->i64, (size_t)o->numel * 8);
        else assert_memory_equal(t->f32, o->f32, (size_t)o->numel * 4);
    }
    pth_free(st);
    pth_free(orig);
    // the log reports the counts
    FILE *lf = fopen(tu_path("/cli.log"), "r");
    char text[8192] = "";
    size_t got = fread(text, 1, sizeof text - 1, lf);
    text[got] = 0;
    fclose(lf);
    assert_non_null(strstr(text, "imported 17 tensors, 312 parameters"));
    // a corrupt input fails and leaves neither OUT nor OUT.tmp behind
    size_t n;
    uint8_t *b = read_all(PTH_DIR "/sd_zip.pth", &n);
    FILE *bad = fopen(tu_path("/bad.pth"), "wb");
    fwrite(b, 1, n / 2, bad);
    fclose(bad);
    free(b);
    const char *out2 = tu_path("/bad.h5");
    unlink(out2);
    snprintf(cmd, sizeof cmd, "'%s' import %s/bad.pth %s > %s/cli_bad.log 2>&1", bin, tu_tmpdir(), out2,
             tu_tmpdir());
    assert_int_not_equal(system(cmd), 0);
    assert_int_not_equal(access(out2, F_OK), 0);
    assert_int_not_equal(access(tu_path("/bad.h5.tmp"), F_OK), 0);
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_read_back),
        cmocka_unit_test(test_layouts_and_notes),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_flipped_bytes),
        cmocka_unit_test(test_crafted_files),
        cmocka_unit_test(test_hostile_pickles),
        cmocka_unit_test(test_load_into_store),
        cmocka_unit_test(test_cli_import),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
