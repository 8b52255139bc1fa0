// Our own HDF5 files read defensively (issue 11): a dataset cache, a training
// checkpoint and a state file are damaged one way at a time (shorter index
// arrays, offsets past the pixels, wrong element types, wrong ranks, missing or
// empty tensors, absurd extents, out-of-range progress, truncation) and every
// open must fail with a message naming the file and the dataset, never crash
// (the ASan build runs this too) and never read past what the file holds.
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test_util.h"
#include "tests/test_data_util.h"
#include "train/checkpoint.h"

// Everything below the binary's scratch folder (tu_tmpdir()).
#define D tu_path("/h5robust")
#define DP(rel) tu_path("/h5robust" rel)

static char g_err[4096];

static void copy_file(const char *from, const char *to) {
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

static void truncate_file(const char *from, const char *to, double frac) {
    copy_file(from, to);
    struct stat st;
    assert_int_equal(stat(to, &st), 0);
    assert_int_equal(truncate(to, (off_t)(st.st_size * frac)), 0);
}

static hid_t open_rw(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    return f;
}

static void replace_i64(hid_t f, const char *name, const int64_t *v, int ndim, const int *shape) {
    if (h5_exists(f, name)) assert_true(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    char err[512];
    assert_int_equal(h5_write_int64s(f, name, v, ndim, shape, err, sizeof err), 0);
}

static void replace_f32(hid_t f, const char *name, const float *v, int ndim, const int *shape) {
    if (h5_exists(f, name)) assert_true(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    char err[512];
    assert_int_equal(h5_write_floats(f, name, v, ndim, shape, err, sizeof err), 0);
}

// A fixed-length string dataset of the given shape where numbers are expected.
static void replace_with_strings(hid_t f, const char *name, int ndim, const int *shape) {
    if (h5_exists(f, name)) assert_true(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hsize_t dims[8];
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)(dims[i] = (hsize_t)shape[i]);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 4);
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(ds >= 0);
    char *buf = calloc(n, 4);
    for (size_t i = 0; i < n; i++) memcpy(buf + 4 * i, "abc", 4);
    assert_true(H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    free(buf);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(t);
}

// A chunked float dataset claiming 2^32 elements with nothing stored.
static void replace_with_huge(hid_t f, const char *name) {
    if (h5_exists(f, name)) assert_true(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hsize_t dims[2] = {(hsize_t)1 << 20, (hsize_t)1 << 12}, chunk[2] = {16, 16};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 2, chunk);
    hid_t ds = H5Dcreate2(f, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    assert_true(ds >= 0);
    H5Dclose(ds);
    H5Pclose(pl);
    H5Sclose(sp);
}

// ---------------------------------------------------------------------------
// The dataset cache

static config *g_cfg;

static void cache_fails(const char *path, const char *n1, const char *n2) {
    dataset *d = NULL;
    int rc = dataset_open_cache(g_cfg, path, "train", &d, g_err, sizeof g_err);
    printf("expected error: %s\n", g_err);
    assert_int_not_equal(rc, 0);
    assert_null(d);
    assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);   // nothing left open
    assert_non_null(strstr(g_err, path));
    if (n1) assert_non_null(strstr(g_err, n1));
    if (n2) assert_non_null(strstr(g_err, n2));
}

static void test_cache_damaged(void **state) {
    (void)state;
    td_rmrf(D);
    td_mkdirs(D);
    td_rafdb(DP("/raf"), 6, 3);
    g_cfg = td_config("rafdb", DP("/raf"), NULL);
    const char *good = DP("/good.h5"), *bad = DP("/bad.h5");
    assert_int_equal(cache_prepare(g_cfg, good, NULL, g_err, sizeof g_err), 0);
    dataset *d = NULL;
    assert_int_equal(dataset_open_cache(g_cfg, good, "train", &d, g_err, sizeof g_err), 0);
    assert_int_equal(dataset_size(d), 6);
    dataset_close(d);
    char err[512];
    int nd, sh[8];
    int64_t *v;
    hid_t f;

    // height shorter than the labels (the out-of-bounds read of issue 11)
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "train/height", (int64_t[]){100, 100, 100}, 1, (int[]){3});
    h5_close(f);
    cache_fails(bad, "train/height", "label count");
    // offset/width arrays longer or shorter
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "train/width", (int64_t[]){100, 100, 100, 100, 100, 100, 100, 100}, 1,
                (int[]){8});
    h5_close(f);
    cache_fails(bad, "train/width", NULL);
    copy_file(good, bad);
    f = open_rw(bad);
    assert_true(H5Ldelete(f, "train/offset", H5P_DEFAULT) >= 0);
    h5_close(f);
    cache_fails(bad, "train/offset", "missing");
    // an offset past the pixels
    copy_file(good, bad);
    f = open_rw(bad);
    assert_int_equal(h5_read_int64s(f, "train/offset", &v, &nd, sh, err, sizeof err), 0);
    v[4] = 5 * 100 * 100 * 3 + 1;
    replace_i64(f, "train/offset", v, 1, sh);
    free(v);
    h5_close(f);
    cache_fails(bad, "sample 4", "outside the pixels");
    // a huge height (h * w * 3 overflows int32), a negative width
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "train/height", (int64_t[]){100, 100, 100, 65535, 100, 100}, 1, (int[]){6});
    replace_i64(f, "train/width", (int64_t[]){100, 100, -1, 100, 100, 100}, 1, (int[]){6});
    h5_close(f);
    cache_fails(bad, "sample 2", "outside the pixels");
    // labels as a 2-D array, as floats, as strings, outside the classes
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "train/label", (int64_t[]){0, 1, 2, 3, 4, 5}, 2, (int[]){2, 3});
    h5_close(f);
    cache_fails(bad, "train/label", "dimensions");
    copy_file(good, bad);
    f = open_rw(bad);
    replace_f32(f, "train/label", (float[]){0, 1, 2, 3, 4, 5}, 1, (int[]){6});
    h5_close(f);
    cache_fails(bad, "train/label", "expected an integer");
    copy_file(good, bad);
    f = open_rw(bad);
    replace_with_strings(f, "train/label", 1, (int[]){6});
    h5_close(f);
    cache_fails(bad, "train/label", "expected an integer");
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "train/label", (int64_t[]){0, 1, 2, 3, 7, 5}, 1, (int[]){6});
    h5_close(f);
    cache_fails(bad, "sample 4", "label");
    // source names that end early
    copy_file(good, bad);
    f = open_rw(bad);
    assert_true(H5Ldelete(f, "train/source", H5P_DEFAULT) >= 0);
    assert_int_equal(h5_write_uint8s(f, "train/source", (const uint8_t *)"a\nb\n", 1, (int[]){4},
                                     err, sizeof err), 0);
    h5_close(f);
    cache_fails(bad, "source names end early", NULL);
    // pixels missing, pixels of another type, a chunked pixels dataset
    copy_file(good, bad);
    f = open_rw(bad);
    assert_true(H5Ldelete(f, "train/pixels", H5P_DEFAULT) >= 0);
    h5_close(f);
    cache_fails(bad, "train/pixels", NULL);
    copy_file(good, bad);
    f = open_rw(bad);
    assert_true(H5Ldelete(f, "train/pixels", H5P_DEFAULT) >= 0);
    replace_i64(f, "train/pixels", (int64_t[]){1, 2, 3}, 1, (int[]){3});
    h5_close(f);
    cache_fails(bad, "train/pixels", "uint8");
    copy_file(good, bad);
    f = open_rw(bad);
    assert_true(H5Ldelete(f, "train/pixels", H5P_DEFAULT) >= 0);
    replace_with_huge(f, "train/pixels");
    h5_close(f);
    cache_fails(bad, "train/pixels", NULL);
    // no class names
    copy_file(good, bad);
    f = open_rw(bad);
    assert_int_equal(h5_write_attr_str(f, "/", "classes", ""), 0);
    h5_close(f);
    cache_fails(bad, "no class names", NULL);
    // truncated anywhere: an error, never a crash
    for (int k = 1; k < 16; k++) {
        truncate_file(good, bad, k / 16.0);
        d = NULL;
        int rc = dataset_open_cache(g_cfg, bad, "train", &d, g_err, sizeof g_err);
        if (rc == 0) {
            // Opened (the damage is in pixels not yet read): reading must fail or succeed
            // within the file, never crash.
            for (int i = 0; i < dataset_size(d); i++) {
                image_u8 im;
                if (dataset_load(d, i, NULL, &im, g_err, sizeof g_err) == 0) image_free(&im);
            }
            dataset_close(d);
        } else {
            assert_true(g_err[0] != 0);
        }
    }
    // the error travels up through dataset_open with data.cache
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "train/height", (int64_t[]){100}, 1, (int[]){1});
    h5_close(f);
    config *cc = td_config("rafdb", DP("/raf"), tu_fmt("data.cache=%s", DP("/bad.h5")), NULL);
    d = NULL;
    assert_int_not_equal(dataset_open(cc, "train", &d, g_err, sizeof g_err), 0);
    assert_non_null(strstr(g_err, "train/height"));
}

// ---------------------------------------------------------------------------
// Checkpoints and state files

static void make_store(param_store *s) {
    store_init(s);
    store_add(s, "body.weight", PARAM_TRAINABLE, T_SHAPE(4, 3));
    store_add(s, "head.linear.bias", PARAM_TRAINABLE, T_SHAPE(2));
    store_add(s, "bn.running_mean", PARAM_BUFFER, T_SHAPE(4));
    store_add(s, "bn.num_batches_tracked", PARAM_COUNTER, 0, NULL);
    store_finalize(s);
    for (int64_t i = 0; i < s->n_float; i++) s->data[i] = 0.5f + 0.25f * (float)i;
    s->counters[0] = 17;
}

static param_store g_s;
static optimizer *g_opt;

static void ckpt_fails(const char *path, const char *n1, const char *n2) {
    ckpt_info ci;
    int rc = ckpt_load(path, &g_s, g_opt, &ci, g_err, sizeof g_err);
    printf("expected error: %s\n", g_err);
    assert_int_not_equal(rc, 0);
    assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);   // nothing left open
    assert_non_null(strstr(g_err, path));
    if (n1) assert_non_null(strstr(g_err, n1));
    if (n2) assert_non_null(strstr(g_err, n2));
    ckpt_info_free(&ci);
}

// Copies an HDF5 file into the pre-1.8 format (superblock 0, no metadata
// checksums), the way earlier versions of this program wrote checkpoints.
static herr_t copy_link(hid_t g, const char *name, const H5L_info_t *info, void *dst) {
    (void)info;
    return H5Ocopy(g, name, *(hid_t *)dst, name, H5P_DEFAULT, H5P_DEFAULT) < 0 ? -1 : 0;
}
static herr_t copy_attr(hid_t loc, const char *name, const H5A_info_t *info, void *dst) {
    (void)info;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
    size_t n = H5Tget_size(t) * (size_t)H5Sget_simple_extent_npoints(sp);
    char *buf = calloc(n + 1, 1);
    H5Aread(a, t, buf);
    hid_t b = H5Acreate2(*(hid_t *)dst, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = H5Awrite(b, t, buf);
    free(buf);
    H5Aclose(b);
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}
static void legacy_copy(const char *from, const char *to) {
    hid_t src = H5Fopen(from, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dst = H5Fcreate(to, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(src >= 0 && dst >= 0);
    assert_true(H5Literate(src, H5_INDEX_NAME, H5_ITER_INC, NULL, copy_link, &dst) >= 0);
    assert_true(H5Aiterate2(src, H5_INDEX_NAME, H5_ITER_INC, NULL, copy_attr, &dst) >= 0);
    H5Fclose(dst);
    H5Fclose(src);
    FILE *fp = fopen(to, "rb");
    unsigned char head[9];
    assert_int_equal(fread(head, 1, 9, fp), 9);
    fclose(fp);
    assert_int_equal(head[8], 0);
}

static void test_ckpt_damaged(void **state) {
    (void)state;
    td_mkdirs(D);
    make_store(&g_s);
    optim_opts o;
    optim_opts_default(&o);
    g_opt = optim_create(&g_s, &o);
    for (int64_t i = 0; i < g_s.n_train; i++) g_s.grad[i] = 0.1f * (float)i;
    optim_step(g_opt);
    ckpt_info ci;
    ckpt_info_init(&ci);
    ci.epoch = 2;
    ci.best_epoch = 1;
    ci.best_acc = 0.5;
    double row[CKPT_HIST_COLS] = {0};
    ckpt_info_push_hist(&ci, row);
    ckpt_info_push_hist(&ci, row);
    ci.config_text = strdup("[train]\nepochs = 3\n");
    const char *good = DP("/ck.h5"), *bad = DP("/ck_bad.h5");
    assert_int_equal(ckpt_save(good, &g_s, g_opt, &ci, g_err, sizeof g_err), 0);
    ckpt_info_free(&ci);
    assert_int_equal(ckpt_load(good, &g_s, g_opt, &ci, g_err, sizeof g_err), 0);
    ckpt_info_free(&ci);
    hid_t f;

    copy_file(good, bad);   // a tensor of another shape
    f = open_rw(bad);
    replace_f32(f, "state_dict/body.weight", (float[12]){0}, 2, (int[]){3, 4});
    h5_close(f);
    ckpt_fails(bad, "body.weight", "[3, 4]");
    copy_file(good, bad);   // a tensor of strings
    f = open_rw(bad);
    replace_with_strings(f, "state_dict/body.weight", 2, (int[]){4, 3});
    h5_close(f);
    ckpt_fails(bad, "body.weight", "string elements");
    copy_file(good, bad);   // a tensor claiming 2^32 floats, nothing stored
    f = open_rw(bad);
    replace_with_huge(f, "state_dict/body.weight");
    h5_close(f);
    ckpt_fails(bad, "body.weight", NULL);
    copy_file(good, bad);   // a missing tensor
    f = open_rw(bad);
    assert_true(H5Ldelete(f, "state_dict/head.linear.bias", H5P_DEFAULT) >= 0);
    h5_close(f);
    ckpt_fails(bad, "missing tensor head.linear.bias", NULL);
    copy_file(good, bad);   // an empty counter
    f = open_rw(bad);
    replace_i64(f, "state_dict/bn.num_batches_tracked", NULL, 1, (int[]){0});
    h5_close(f);
    ckpt_fails(bad, "bn.num_batches_tracked", NULL);
    copy_file(good, bad);   // an empty optimizer step
    f = open_rw(bad);
    replace_i64(f, "optimizer/step", NULL, 1, (int[]){0});
    h5_close(f);
    ckpt_fails(bad, "optimizer/step", "expected one");
    copy_file(good, bad);   // optimizer moments of another shape
    f = open_rw(bad);
    replace_f32(f, "optimizer/exp_avg/body.weight", (float[12]){0}, 1, (int[]){12});
    h5_close(f);
    ckpt_fails(bad, "optimizer", "body.weight");
    copy_file(good, bad);   // an optimizer moment claiming 2^32 floats
    f = open_rw(bad);
    replace_with_huge(f, "optimizer/exp_avg_sq/body.weight");
    h5_close(f);
    ckpt_fails(bad, "exp_avg_sq/body.weight", "stores");
    copy_file(good, bad);   // progress out of range
    f = open_rw(bad);
    replace_i64(f, "progress/epoch", (int64_t[]){-5}, 0, NULL);
    h5_close(f);
    ckpt_fails(bad, "progress/epoch", "out of range");
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "progress/best_epoch", (int64_t[]){9}, 0, NULL);
    h5_close(f);
    ckpt_fails(bad, "progress/best_epoch", "out of range");
    copy_file(good, bad);   // history of the wrong width, best_acc as an integer
    f = open_rw(bad);
    assert_true(H5Ldelete(f, "history", H5P_DEFAULT) >= 0);
    replace_f32(f, "history", (float[10]){0}, 2, (int[]){2, 5});
    h5_close(f);
    ckpt_fails(bad, "history", NULL);
    copy_file(good, bad);
    f = open_rw(bad);
    replace_i64(f, "progress/best_acc", (int64_t[]){1}, 0, NULL);
    h5_close(f);
    ckpt_fails(bad, "progress/best_acc", NULL);
    copy_file(good, bad);   // an rng state of the wrong length
    f = open_rw(bad);
    replace_i64(f, "rng/drop_path", (int64_t[]){1, 2}, 1, (int[]){2});
    h5_close(f);
    ckpt_fails(bad, "rng/drop_path", NULL);
    // A checkpoint without checksummed metadata (HDF5 superblock 0, as earlier
    // versions wrote them): it loads by default (the user's work) with the same
    // tensors; strict mode (the fuzz targets) refuses it before libhdf5 reads it.
    legacy_copy(good, bad);
    ckpt_info li;
    assert_int_equal(ckpt_load(bad, &g_s, g_opt, &li, g_err, sizeof g_err), 0);
    ckpt_info_free(&li);
    h5_set_legacy_ok(false);
    ckpt_fails(bad, "superblock version 0", "checkpoint");
    h5_set_legacy_ok(true);
    hid_t v0 = H5Fcreate(bad, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_int_equal(h5_write_attr_str(v0, "/", "format", CKPT_FORMAT), 0);
    h5_close(v0);
    ckpt_fails(bad, NULL, NULL);   // legacy and incomplete: still an error naming it
    // one flipped byte in the metadata: the checksum refuses it
    copy_file(good, bad);
    FILE *fp = fopen(bad, "r+b");
    fseek(fp, 60, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, 60, SEEK_SET);
    fputc(ch ^ 0x40, fp);
    fclose(fp);
    assert_int_not_equal(ckpt_load(bad, &g_s, g_opt, &ci, g_err, sizeof g_err), 0);
    // truncated anywhere: an error naming the file
    for (int k = 0; k < 16; k++) {
        truncate_file(good, bad, k / 16.0);
        if (ckpt_load(bad, &g_s, g_opt, &ci, g_err, sizeof g_err) == 0) ckpt_info_free(&ci);
        else assert_non_null(strstr(g_err, bad));
        char *text = NULL;
        if (ckpt_read_config(bad, &text, g_err, sizeof g_err) == 0) free(text);
        else assert_non_null(strstr(g_err, bad));
    }
    // the state-file reader (poster import's format, --init)
    const char *st = DP("/state.h5"), *stb = DP("/state_bad.h5");
    assert_int_equal(state_save(st, &g_s, "", g_err, sizeof g_err), 0);
    copy_file(st, stb);
    f = open_rw(stb);
    replace_with_huge(f, "state_dict/body.weight");
    h5_close(f);
    state_report rep;
    assert_int_not_equal(state_load(stb, &g_s, true, &rep, NULL, g_err, sizeof g_err), 0);
    assert_non_null(strstr(g_err, "body.weight"));
    assert_int_equal(state_load(stb, &g_s, false, &rep, NULL, g_err, sizeof g_err), 0);
    assert_int_equal(rep.misshaped, 1);   // non-strict: skipped and counted
    assert_int_equal(ckpt_load_weights(stb, &g_s, &rep, NULL, g_err, sizeof g_err), 0);
    assert_int_equal(rep.misshaped, 1);
    optim_free(g_opt);
    store_free(&g_s);
}

// The readers themselves: extents, types and the stored size are checked first.
static void test_reader_checks(void **state) {
    (void)state;
    td_mkdirs(D);
    char err[512];
    hid_t f = h5_create(DP("/r.h5"), err, sizeof err);
    assert_true(f >= 0);
    replace_with_huge(f, "huge");
    replace_with_strings(f, "text", 1, (int[]){3});
    replace_f32(f, "f", (float[]){1.5f, 2.5f}, 1, (int[]){2});
    replace_i64(f, "empty", NULL, 1, (int[]){0});
    float *x = NULL;
    int64_t *y = NULL, v;
    uint8_t *u = NULL;
    int nd, sh[8];
    assert_int_not_equal(h5_read_floats(f, "huge", &x, &nd, sh, err, sizeof err), 0);
    assert_non_null(strstr(err, "'huge'"));
    assert_null(x);
    assert_int_not_equal(h5_dataset_shape(f, "huge", &nd, sh, err, sizeof err), 0);
    assert_int_not_equal(h5_read_floats(f, "text", &x, &nd, sh, err, sizeof err), 0);
    assert_non_null(strstr(err, "'text'"));
    assert_int_not_equal(h5_read_int64s(f, "f", &y, &nd, sh, err, sizeof err), 0);   // no truncation
    assert_int_not_equal(h5_read_uint8s(f, "f", &u, &nd, sh, err, sizeof err), 0);
    assert_int_equal(h5_read_floats(f, "f", &x, &nd, sh, err, sizeof err), 0);
    assert_true(x[1] == 2.5f);
    free(x);
    assert_int_equal(h5_read_int64s(f, "empty", &y, &nd, sh, err, sizeof err), 0);
    assert_int_equal(sh[0], 0);
    free(y);
    assert_int_not_equal(h5_read_int64_scalar(f, "empty", &v, err, sizeof err), 0);
    assert_non_null(strstr(err, "expected one"));
    assert_int_not_equal(h5_read_floats(f, "nothere/x", &x, &nd, sh, err, sizeof err), 0);
    assert_non_null(strstr(err, "missing"));
    h5_close(f);
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_checks),
        cmocka_unit_test(test_cache_damaged),
        cmocka_unit_test(test_ckpt_damaged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
