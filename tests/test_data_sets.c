// Every dataset layout read from small trees written under the scratch folder:
// counts, label mapping, class names; every bad-input case gives its error
// (file and line), and skip_bad skips and counts instead; the HDF5 cache.
#include "tests/test_util.h"
#include "tests/test_data_util.h"


static char g_err[4096];

static dataset *open_ok(config *c, const char *split) {
    dataset *d = NULL;
    int rc = dataset_open_ex(c, split, config_bool(c, "data.skip_bad"), NULL, &d, g_err, sizeof g_err);
    if (rc) fprintf(stderr, "%s\n", g_err);
    assert_int_equal(rc, 0);
    return d;
}

// The open fails and the message contains every needle.
static void open_fails(config *c, const char *split, const char *n1, const char *n2) {
    dataset *d = NULL;
    int rc = dataset_open_ex(c, split, false, NULL, &d, g_err, sizeof g_err);
    printf("expected error: %s\n", g_err);
    assert_int_not_equal(rc, 0);
    assert_null(d);
    if (n1) assert_non_null(strstr(g_err, n1));
    if (n2) assert_non_null(strstr(g_err, n2));
}

static void test_rafdb(void **state) {
    (void)state;
    td_rafdb(tu_path("/sets/rafdb"), 14, 9);
    config *c = td_config("rafdb", tu_path("/sets/rafdb"), NULL);
    dataset *d = open_ok(c, "train");
    assert_int_equal(dataset_size(d), 14);
    assert_int_equal(dataset_num_classes(d), 7);
    assert_string_equal(dataset_class_name(d, 0), "Surprise");
    assert_string_equal(dataset_class_name(d, 6), "Neutral");
    for (int i = 0; i < 14; i++) assert_int_equal(dataset_label(d, i), i % 7);
    assert_non_null(strstr(dataset_source(d, 3), "Image/aligned/train_00004_aligned.jpg"));
    assert_true(d->bgr);   // official RAF-DB order
    dataset_close(d);
    d = open_ok(c, "test");
    assert_int_equal(dataset_size(d), 9);
    assert_int_equal(dataset_label(d, 0), 14 % 7);
    dataset_close(d);
    d = open_ok(c, "val");   // no val split: the official code evaluates on test
    assert_int_equal(dataset_size(d), 9);
    dataset_close(d);
    c = td_config("rafdb", tu_path("/sets/rafdb"), "data.channel_order=rgb", NULL);
    d = open_ok(c, "train");
    assert_false(d->bgr);
    dataset_close(d);
    c = td_config("rafdb", tu_path("/sets/rafdb"), "data.num_classes=8", NULL);
    open_fails(c, "train", "num_classes", NULL);
    c = td_config("rafdb", tu_path("/sets/nowhere"), NULL);
    open_fails(c, "train", tu_path("/sets/nowhere"), NULL);
}

static void test_rafdb_bad_lines(void **state) {
    (void)state;
    td_rafdb(tu_path("/sets/rafdb_bad"), 3, 1);
    const char *list = tu_path("/sets/rafdb_bad/EmoLabel/list_patition_label.txt");
    FILE *f = fopen(list, "a");
    fprintf(f, "train_00009.jpg 9\n");        // line 5: label out of range
    fprintf(f, "train_00010.jpg\n");          // line 6: short
    fprintf(f, "val_00001.jpg 3\n");          // line 7: unknown prefix
    fprintf(f, "train_00011.jpg x\n");        // line 8: not a number
    fclose(f);
    config *c = td_config("rafdb", tu_path("/sets/rafdb_bad"), NULL);
    open_fails(c, "train", "list_patition_label.txt:5", "1..7");
    c = td_config("rafdb", tu_path("/sets/rafdb_bad"), "data.skip_bad=on", NULL);
    dataset *d = open_ok(c, "train");
    assert_int_equal(dataset_size(d), 3);
    assert_int_equal(d->bad_at_open, 4);
    dataset_close(d);
}

// Missing, corrupt and truncated images: the loader stops naming the file, or
// with skip_bad skips them, names each and counts them.
static void test_loader_bad_images(void **state) {
    (void)state;
    td_rafdb(tu_path("/sets/rafdb_img"), 10, 1);
    remove(tu_path("/sets/rafdb_img/Image/aligned/train_00003_aligned.jpg"));
    td_write(tu_path("/sets/rafdb_img/Image/aligned/train_00007_aligned.jpg"), "garbage");
    config *c = td_config("rafdb", tu_path("/sets/rafdb_img"), NULL);
    dataset *d = open_ok(c, "train");
    loader_opts o = {.batch_size = 4, .workers = 2, .prefetch = 2, .image_size = 112, .seed = 1};
    loader *l = loader_create(d, &o, g_err, sizeof g_err);
    float *img = malloc(4 * 3 * 112 * 112 * sizeof(float));
    int64_t lab[4];
    assert_int_equal(loader_next(l, img, lab, g_err, sizeof g_err), -1);
    assert_non_null(strstr(g_err, "train_00003_aligned.jpg"));
    loader_free(l);
    dataset_close(d);
    c = td_config("rafdb", tu_path("/sets/rafdb_img"), "data.skip_bad=on", NULL);
    d = open_ok(c, "train");
    o.log = fopen(tu_path("/sets_skip.log"), "w");
    l = loader_create(d, &o, g_err, sizeof g_err);
    int n, total = 0;
    while ((n = loader_next(l, img, lab, g_err, sizeof g_err)) > 0) total += n;
    assert_int_equal(n, 0);
    assert_int_equal(total, 8);
    assert_int_equal(loader_skipped(l), 2);
    loader_free(l);
    fclose(o.log);
    FILE *f = fopen(tu_path("/sets_skip.log"), "r");
    char text[4096] = "";
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    assert_non_null(strstr(text, "train_00003_aligned.jpg"));
    assert_non_null(strstr(text, "train_00007_aligned.jpg"));
    assert_non_null(strstr(text, "skipped 2 bad samples"));
    free(img);
    dataset_close(d);
}

static void fer_row(FILE *a, FILE *b, const char *usage, const char *name, const char *votes,
                    int fill, int npix) {
    fprintf(a, "0,");
    for (int p = 0; p < npix; p++) fprintf(a, "%s%d", p ? " " : "", (fill + p) % 256);
    fprintf(a, ",%s\n", usage);
    fprintf(b, "%s,%s,%s\n", usage, name, votes);
}

static void write_ferplus(const char *root, bool bad_pixels, bool short_row) {
    td_rmrf(root);
    td_mkdirs(root);
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/fer2013.csv", root);
    snprintf(p2, sizeof p2, "%s/fer2013new.csv", root);
    FILE *a = fopen(p1, "w"), *b = fopen(p2, "w");
    fprintf(a, "emotion,pixels,Usage\n");
    fprintf(b, "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,"
               "unknown,NF\n");
    fer_row(a, b, "Training", "fer0000000.png", "6,4,0,0,0,0,0,0,0,0", 0, 2304);    // neutral
    fer_row(a, b, "Training", "fer0000001.png", "5,5,0,0,0,0,0,0,0,0", 1, 2304);    // tie: dropped
    // votes of 1 are zeroed first: 5 of 8 is a majority (5 of 10 would not be)
    fer_row(a, b, "Training", "fer0000002.png", "0,5,3,1,1,0,0,0,0,0", 2, 2304);
    fer_row(a, b, "Training", "", "10,0,0,0,0,0,0,0,0,0", 3, 2304);                // no name
    fer_row(a, b, "PublicTest", "fer0000004.png", "3,0,0,0,0,0,0,7,0,0", 4, 2304);  // contempt
    fer_row(a, b, "PrivateTest", "fer0000005.png", "2,0,0,0,0,0,0,0,8,0", 5, 2304); // unknown
    fer_row(a, b, "PrivateTest", "fer0000006.png", "0,0,0,0,0,0,0,0,0,10", 6, 2304); // NF
    fer_row(a, b, "PrivateTest", "fer0000007.png", "0,0,0,0,0,1,9,0,0,0", 7, bad_pixels ? 2303 : 2304);
    if (bad_pixels)   // a good row after the bad one (skip_bad keeps it)
        fer_row(a, b, "PrivateTest", "fer0000008.png", "0,0,0,0,0,1,9,0,0,0", 8, 2304);
    if (short_row) {
        fprintf(a, "0,1 2 3,PrivateTest\n");
        fprintf(b, "PrivateTest,fer0000009.png,1,2,3\n");
    }
    fclose(a);
    fclose(b);
}

static void test_ferplus(void **state) {
    (void)state;
    write_ferplus(tu_path("/sets/fer"), false, false);
    config *c = td_config("ferplus", tu_path("/sets/fer"), NULL);
    dataset *d = open_ok(c, "train");
    assert_int_equal(dataset_num_classes(d), 8);
    assert_string_equal(dataset_class_name(d, 7), "Contempt");
    assert_int_equal(dataset_size(d), 2);
    assert_int_equal(dataset_label(d, 0), 0);
    assert_int_equal(dataset_label(d, 1), 1);
    assert_non_null(strstr(dataset_source(d, 1), "fer2013.csv:4"));
    image_u8 im;
    assert_int_equal(dataset_load(d, 1, NULL, &im, g_err, sizeof g_err), 0);
    assert_int_equal(im.h, 48);
    assert_int_equal(im.w, 48);
    for (int p = 0; p < 2304; p++)   // row-major grey, replicated
        for (int ch = 0; ch < 3; ch++) assert_int_equal(im.px[3 * p + ch], (2 + p) % 256);
    assert_false(d->bgr);
    image_free(&im);
    dataset_close(d);
    d = open_ok(c, "val");
    assert_int_equal(dataset_size(d), 1);
    assert_int_equal(dataset_label(d, 0), 7);
    dataset_close(d);
    d = open_ok(c, "test");
    assert_int_equal(dataset_size(d), 1);
    assert_int_equal(dataset_label(d, 0), 6);   // fear
    dataset_close(d);
    double v[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(ferplus_majority(v), -1);
    v[2] = 1;
    assert_int_equal(ferplus_majority(v), -1);   // a single vote is removed
    v[2] = 2;
    assert_int_equal(ferplus_majority(v), 2);
    // Bad: wrong pixel count names fer2013.csv and the line
    write_ferplus(tu_path("/sets/fer_bad"), true, false);
    c = td_config("ferplus", tu_path("/sets/fer_bad"), NULL);
    open_fails(c, "test", "fer2013.csv:9", "2303");
    c = td_config("ferplus", tu_path("/sets/fer_bad"), "data.skip_bad=on", NULL);
    d = open_ok(c, "test");
    assert_int_equal(dataset_size(d), 1);   // the bad row skipped, the next one kept
    assert_int_equal(d->bad_at_open, 1);
    assert_non_null(strstr(dataset_source(d, 0), "fer2013.csv:10"));
    dataset_close(d);
    write_ferplus(tu_path("/sets/fer_bad"), false, true);
    c = td_config("ferplus", tu_path("/sets/fer_bad"), NULL);
    open_fails(c, "test", "fer2013new.csv:10", "12 columns");
}

static void write_npy_shaped(const char *path, const char *descr, const char *shape,
                             const void *data, size_t n) {
    char hdr[160];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       descr, shape);
    int total = 10 + len + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    uint16_t hl = (uint16_t)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fwrite(&hl, 2, 1, f);
    fwrite(hdr, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_npy(const char *path, const char *descr, const void *data, size_t n) {
    write_npy_shaped(path, descr, "()", data, n);
}

static void npy_label(const char *path, long code, int style) {
    if (style == 0) {
        int64_t v = code;
        write_npy(path, "<i8", &v, 8);
    } else if (style == 1) {
        char s[8];
        int n = snprintf(s, sizeof s, "%ld", code);
        uint32_t u[8] = {0};
        for (int i = 0; i < n; i++) u[i] = (uint32_t)s[i];
        char d[8];
        snprintf(d, sizeof d, "<U%d", n);
        write_npy(path, d, u, 4 * (size_t)n);
    } else {
        int32_t v = (int32_t)code;
        write_npy(path, "<i4", &v, 4);
    }
}

static void test_affectnet_npy(void **state) {
    (void)state;
    const char *root = tu_path("/sets/affn");
    td_rmrf(root);
    td_mkdirs(tu_path("/sets/affn/train_set/images"));
    td_mkdirs(tu_path("/sets/affn/train_set/annotations"));
    td_mkdirs(tu_path("/sets/affn/val_set/images"));
    td_mkdirs(tu_path("/sets/affn/val_set/annotations"));
    char p[512];
    // codes of images 0..11 (numeric order 0,1,2,...,10,11 not 0,1,10,11,2)
    const long codes[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3};
    for (int i = 0; i < 12; i++) {
        snprintf(p, sizeof p, "%s/train_set/images/%d.jpg", root, i);
        td_jpeg(p, i, (uint64_t)i, 64, 64);
        snprintf(p, sizeof p, "%s/train_set/annotations/%d_exp.npy", root, i);
        npy_label(p, codes[i], i % 3);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/val_set/images/%d.jpg", root, i + 100);
        td_jpeg(p, i, (uint64_t)i, 64, 64);
        snprintf(p, sizeof p, "%s/val_set/annotations/%d_exp.npy", root, i + 100);
        npy_label(p, 7 - i, 1);
    }
    long v;
    assert_int_equal(npy_read_label(tu_path("/sets/affn/train_set/annotations/10_exp.npy"), &v, g_err, sizeof g_err), 0);
    assert_int_equal(v, 10);
    assert_int_equal(npy_read_label(tu_path("/sets/affn/train_set/annotations/4_exp.npy"), &v, g_err, sizeof g_err), 0);
    assert_int_equal(v, 4);   // '<U1'
    config *c = td_config("affectnet", root, NULL);
    dataset *d = open_ok(c, "train");
    assert_int_equal(dataset_num_classes(d), 7);
    assert_string_equal(dataset_class_name(d, 1), "Happy");
    assert_int_equal(dataset_size(d), 8);   // codes 0..6 and the last 3
    for (int i = 0; i < 7; i++) assert_int_equal(dataset_label(d, i), i);
    assert_int_equal(dataset_label(d, 7), 3);
    assert_non_null(strstr(dataset_source(d, 7), "/11.jpg"));
    assert_false(d->bgr);   // AffectNet: RGB
    dataset_close(d);
    c = td_config("affectnet", root, "data.num_classes=8", NULL);
    d = open_ok(c, "train");
    assert_int_equal(dataset_size(d), 9);
    assert_int_equal(dataset_label(d, 7), 7);
    dataset_close(d);
    d = open_ok(c, "val");
    assert_int_equal(dataset_size(d), 3);
    assert_int_equal(dataset_label(d, 0), 7);
    dataset_close(d);
    c = td_config("affectnet", root, "model.num_classes=8", NULL);   // follows the model
    d = open_ok(c, "val");
    assert_int_equal(dataset_num_classes(d), 8);
    dataset_close(d);
    // Bad: a missing annotation, and a label that is no number
    remove(tu_path("/sets/affn/train_set/annotations/5_exp.npy"));
    c = td_config("affectnet", root, NULL);
    open_fails(c, "train", "5_exp.npy", NULL);
    npy_label(tu_path("/sets/affn/train_set/annotations/5_exp.npy"), 5, 0);
    uint32_t u[2] = {'x', 'y'};
    write_npy(tu_path("/sets/affn/train_set/annotations/6_exp.npy"), "<U2", u, 8);
    open_fails(c, "train", "6_exp.npy", "xy");
    write_npy(tu_path("/sets/affn/train_set/annotations/6_exp.npy"), "<f8", u, 8);
    open_fails(c, "train", "6_exp.npy", "dtype");
    // Shapes whose extents or product overflow (the npy fuzz target found the
    // second: tests/fuzz/regress/npy/shape_product_overflow) are errors, not UB.
    int64_t one = 1;
    const char *shapes[] = {"(18386150820858355157,)", "(65536, 65536)", "(3037000500, 3037000500)"};
    for (int i = 0; i < 3; i++) {
        write_npy_shaped(tu_path("/sets/affn/train_set/annotations/6_exp.npy"), "<i8", shapes[i],
                         &one, 8);
        assert_int_not_equal(npy_read_label(tu_path("/sets/affn/train_set/annotations/6_exp.npy"),
                                            &v, g_err, sizeof g_err), 0);
        if (!strstr(g_err, "6_exp.npy") || !strstr(g_err, "out of range"))
            fail_msg("shape %s: %s", shapes[i], g_err);
    }
    write_npy_shaped(tu_path("/sets/affn/train_set/annotations/6_exp.npy"), "<i8", "(1, 1)", &one, 8);
    assert_int_equal(npy_read_label(tu_path("/sets/affn/train_set/annotations/6_exp.npy"), &v,
                                    g_err, sizeof g_err), 0);
    assert_int_equal(v, 1);
}

static void test_affectnet_lists_and_original(void **state) {
    (void)state;
    const char *root = tu_path("/sets/affa");
    td_rmrf(root);
    td_mkdirs(tu_path("/sets/affa/train_set/images"));
    td_mkdirs(tu_path("/sets/affa/valid_set/images"));
    td_jpeg(tu_path("/sets/affa/train_set/images/a.jpg"), 0, 1, 40, 40);
    td_write(tu_path("/sets/affa/train_set/train_annotations_7class.txt"), "a.jpg 3\nb.jpg 6\n\nc.jpg 0\n");
    td_write(tu_path("/sets/affa/train_set/train_annotations_8class.txt"), "a.jpg 7\n");
    td_write(tu_path("/sets/affa/valid_set/valid_annotations_7class.txt"), "v.jpg 1\nw.jpg 7\n");
    config *c = td_config("affectnet", root, NULL);
    dataset *d = open_ok(c, "train");
    assert_int_equal(dataset_size(d), 3);
    assert_int_equal(dataset_label(d, 1), 6);
    assert_non_null(strstr(dataset_source(d, 2), "train_set/images/c.jpg"));
    dataset_close(d);
    open_fails(c, "val", "valid_annotations_7class.txt:2", "0..6");
    c = td_config("affectnet", root, "data.num_classes=8", NULL);
    d = open_ok(c, "train");
    assert_int_equal(dataset_label(d, 0), 7);
    dataset_close(d);
    // (b) the original CSVs
    root = tu_path("/sets/affb");
    td_rmrf(root);
    td_mkdirs(tu_path("/sets/affb/Manually_Annotated_file_lists"));
    const char *hdr = "subDirectory_filePath,face_x,face_y,face_width,face_height,"
                      "facial_landmarks,expression,valence,arousal\n";
    char text[2048];
    snprintf(text, sizeof text, "%s"
             "689/737db2483489148d783ef278f43f486c0a97e140fc4b6b61b84363ca.jpg,134,134,899,899,"
             "181.64;530.91;188.32;627.82,1,0.785714,-0.055556\n"
             "392/c4db2f9b7e4b422d14b6e038f0cdc3ecee239b55326e9181ee4520f9.jpg,20,20,137,137,"
             "28.82;77.52;29.12;93.25,0,-0.017253,0.004313\n"
             "1/a.jpg,1,1,1,1,1;2,7,0,0\n"
             "1/b.jpg,1,1,1,1,1;2,9,0,0\n"
             "1/c.jpg,1,1,1,1,1;2,10,0,0\n", hdr);
    td_write(tu_path("/sets/affb/Manually_Annotated_file_lists/training.csv"), text);
    snprintf(text, sizeof text, "%s1/d.jpg,1,1,1,1,1;2,6,0,0\n1/e.jpg,1,1\n", hdr);
    td_write(tu_path("/sets/affb/Manually_Annotated_file_lists/validation.csv"), text);
    c = td_config("affectnet", root, NULL);
    d = open_ok(c, "train");
    assert_int_equal(dataset_size(d), 2);
    assert_int_equal(dataset_label(d, 0), 1);
    assert_int_equal(dataset_label(d, 1), 0);
    assert_non_null(strstr(dataset_source(d, 0), "Manually_Annotated_Images/689/737db"));
    dataset_close(d);
    c = td_config("affectnet", root, "data.num_classes=8", NULL);
    d = open_ok(c, "train");
    assert_int_equal(dataset_size(d), 3);
    dataset_close(d);
    open_fails(c, "val", "validation.csv:3", "short row");
}

static void test_folder_and_csv(void **state) {
    (void)state;
    const char *root = tu_path("/sets/fold");
    td_rmrf(root);
    const char *cls[3] = {"angry", "calm", "happy"};
    char p[512];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 2 + k; i++) {
            snprintf(p, sizeof p, "%s/train/%s", root, cls[k]);
            td_mkdirs(p);
            snprintf(p, sizeof p, "%s/train/%s/img%d.jpg", root, cls[k], i);
            td_jpeg(p, k, (uint64_t)(k * 10 + i), 50, 60);
        }
    td_mkdirs(tu_path("/sets/fold/val/happy"));
    td_jpeg(tu_path("/sets/fold/val/happy/x.jpg"), 3, 5, 50, 50);
    td_write(tu_path("/sets/fold/val/happy/notes.txt"), "not an image");
    config *c = td_config("folder", root, NULL);
    dataset *d = open_ok(c, "train");
    assert_int_equal(dataset_num_classes(d), 3);
    assert_string_equal(dataset_class_name(d, 1), "calm");
    assert_int_equal(dataset_size(d), 2 + 3 + 4);
    assert_int_equal(dataset_label(d, 0), 0);
    assert_int_equal(dataset_label(d, 8), 2);
    dataset_close(d);
    d = open_ok(c, "val");
    assert_int_equal(dataset_size(d), 1);
    assert_int_equal(dataset_label(d, 0), 2);
    dataset_close(d);
    d = open_ok(c, "test");   // test falls back to val
    assert_int_equal(dataset_size(d), 1);
    dataset_close(d);
    td_mkdirs(tu_path("/sets/fold/val/sleepy"));
    open_fails(c, "val", "sleepy", "unknown class");
    // CSV lists, paths relative to the list; labels by name or index
    snprintf(p, sizeof p, "%s/lists", root);
    td_mkdirs(p);
    td_write(tu_path("/sets/fold/lists/train.csv"), "path,label\n../train/angry/img0.jpg,angry\n"
                                        "../train/happy/img1.jpg, happy\n../train/calm/img0.jpg,calm\n");
    td_write(tu_path("/sets/fold/lists/val.csv"), "../val/happy/x.jpg,2\n../train/calm/img1.jpg,calm\n");
    td_write(tu_path("/sets/fold/lists/test.csv"), "../val/happy/x.jpg,grumpy\n");
    c = td_config("csv", tu_path("/sets/fold/lists"), NULL);
    d = open_ok(c, "train");
    assert_int_equal(dataset_size(d), 3);
    assert_string_equal(dataset_class_name(d, 2), "happy");
    assert_int_equal(dataset_label(d, 1), 2);
    assert_string_equal(dataset_source(d, 0), tu_path("/sets/fold/lists/../train/angry/img0.jpg"));
    image_u8 im;
    assert_int_equal(dataset_load(d, 0, NULL, &im, g_err, sizeof g_err), 0);
    assert_int_equal(im.w, 60);
    image_free(&im);
    dataset_close(d);
    d = open_ok(c, "val");
    assert_int_equal(dataset_label(d, 0), 2);
    assert_int_equal(dataset_label(d, 1), 1);
    dataset_close(d);
    open_fails(c, "test", "test.csv:1", "grumpy");
    td_write(tu_path("/sets/fold/lists/test.csv"), "../val/happy/x.jpg,1\n../val/happy/x.jpg\n");
    open_fails(c, "test", "test.csv:2", "path,label");
    td_write(tu_path("/sets/fold/lists/test.csv"), "../val/happy/x.jpg,5\n");
    open_fails(c, "test", "test.csv:1", "out of range");
    c = td_config("csv", tu_path("/sets/fold/lists"), "data.skip_bad=on", NULL);
    d = open_ok(c, "val");
    assert_int_equal(dataset_size(d), 2);
    dataset_close(d);
    // A huge integer label is an error naming its line, not millions of classes
    // (fuzz_lists timed out on 6666666 classes: tests/fuzz/regress/lists/csv_huge_label).
    td_mkdirs(tu_path("/sets/bigl"));
    td_write(tu_path("/sets/bigl/train.csv"), "a.jpg,0\nb.jpg,6666666\n");
    c = td_config("csv", tu_path("/sets/bigl"), NULL);
    open_fails(c, "train", "train.csv:2", "class indices 0..9999");
    td_write(tu_path("/sets/bigl/train.csv"), "a.jpg,0\nb.jpg,9999\n");
    d = open_ok(c, "train");
    assert_int_equal(dataset_num_classes(d), 10000);
    dataset_close(d);
}

static void test_cache_roundtrip(void **state) {
    (void)state;
    td_rafdb(tu_path("/sets/rafdb_c"), 9, 4);
    config *c = td_config("rafdb", tu_path("/sets/rafdb_c"), NULL);
    const char *out = tu_path("/sets_cache.h5");
    remove(out);
    assert_int_equal(cache_prepare(c, out, NULL, g_err, sizeof g_err), 0);
    dataset *a = open_ok(c, "train");
    config *cc = td_config("rafdb", tu_path("/sets/rafdb_c"), tu_fmt("data.cache=%s", tu_path("/sets_cache.h5")), NULL);
    dataset *b = open_ok(cc, "train");
    assert_int_equal(dataset_size(b), 9);
    assert_true(b->bgr);
    assert_string_equal(dataset_class_name(b, 3), "Happiness");
    for (int i = 0; i < 9; i++) {
        assert_int_equal(dataset_label(a, i), dataset_label(b, i));
        assert_string_equal(dataset_source(a, i), dataset_source(b, i));
        image_u8 x, y;
        assert_int_equal(dataset_load(a, i, NULL, &x, g_err, sizeof g_err), 0);
        assert_int_equal(dataset_load(b, i, NULL, &y, g_err, sizeof g_err), 0);
        assert_int_equal(x.h, y.h);
        assert_memory_equal(x.px, y.px, (size_t)x.h * x.w * 3);
        image_free(&x);
        image_free(&y);
    }
    dataset_close(a);
    dataset_close(b);
    b = open_ok(cc, "val");   // RAF-DB: val is the test split
    assert_int_equal(dataset_size(b), 4);
    dataset_close(b);
    td_write(tu_path("/sets_notcache.h5"), "nope");
    cc = td_config("rafdb", tu_path("/sets/rafdb_c"), tu_fmt("data.cache=%s", tu_path("/sets_notcache.h5")), NULL);
    open_fails(cc, "train", "sets_notcache.h5", NULL);
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rafdb),
        cmocka_unit_test(test_rafdb_bad_lines),
        cmocka_unit_test(test_loader_bad_images),
        cmocka_unit_test(test_ferplus),
        cmocka_unit_test(test_affectnet_npy),
        cmocka_unit_test(test_affectnet_lists_and_original),
        cmocka_unit_test(test_folder_and_csv),
        cmocka_unit_test(test_cache_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
