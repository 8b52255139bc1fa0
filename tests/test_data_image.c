// Decode, resize and normalize against PIL + torchvision (tests/reference/ref_data.py),
// the 112 fast path of the resize, and bad JPEGs.
#include "tests/test_util.h"
#include "tests/test_data_util.h"

static uint8_t *load_ref_u8(const char *name, int *shape) {
    char err[512];
    hid_t f = h5_open_read(FIXTURE_DIR "/data_ref.h5", err, sizeof err);
    assert_true(f >= 0);
    uint8_t *v;
    int nd;
    assert_int_equal(h5_read_uint8s(f, name, &v, &nd, shape, err, sizeof err), 0);
    h5_close(f);
    return v;
}

static float *load_ref_f(const char *name, int *shape) {
    char err[512];
    hid_t f = h5_open_read(FIXTURE_DIR "/data_ref.h5", err, sizeof err);
    assert_true(f >= 0);
    float *v;
    int nd;
    assert_int_equal(h5_read_floats(f, name, &v, &nd, shape, err, sizeof err), 0);
    h5_close(f);
    return v;
}

// Our decode + resize vs PIL: at most 1 grey level off on at most 1% of values.
static void test_resize_matches_pil(void **state) {
    (void)state;
    for (int i = 0; i < 3; i++) {
        char path[256], name[32], err[512];
        snprintf(path, sizeof path, FIXTURE_DIR "/data_img%d.jpg", i);
        snprintf(name, sizeof name, "resized%d", i);
        image_u8 im;
        assert_int_equal(image_load_jpeg(NULL, path, &im, err, sizeof err), 0);
        int shape[4];
        uint8_t *ref = load_ref_u8(name, shape);
        assert_int_equal(shape[0], 224);
        assert_int_equal(shape[2], 3);
        uint8_t *out = malloc(224 * 224 * 3);
        image_resize_pil(&im, 224, 1, out);
        int off1 = 0, worse = 0;
        for (int k = 0; k < 224 * 224 * 3; k++) {
            int d = abs((int)out[k] - (int)ref[k]);
            off1 += d == 1;
            worse += d > 1;
        }
        printf("image %d (%dx%d): %d values off by 1, %d by more\n", i, im.w, im.h, off1, worse);
        assert_int_equal(worse, 0);
        assert_true(off1 <= 224 * 224 * 3 / 100);
        // The fast path computes exactly the even pixels.
        uint8_t *half = malloc(112 * 112 * 3);
        image_resize_pil(&im, 224, 2, half);
        for (int y = 0; y < 112; y++)
            for (int x = 0; x < 112; x++)
                assert_memory_equal(half + ((size_t)y * 112 + x) * 3,
                                    out + ((size_t)(2 * y) * 224 + 2 * x) * 3, 3);
        free(half);
        free(out);
        free(ref);
        image_free(&im);
    }
}

static void test_grey_replicated(void **state) {
    (void)state;
    image_u8 im;
    char err[512];
    assert_int_equal(image_load_jpeg(NULL, FIXTURE_DIR "/data_img2.jpg", &im, err, sizeof err), 0);
    assert_int_equal(im.h, 48);
    for (int p = 0; p < 48 * 48; p++) {
        assert_int_equal(im.px[3 * p], im.px[3 * p + 1]);
        assert_int_equal(im.px[3 * p], im.px[3 * p + 2]);
    }
    image_free(&im);
}

static void test_normalize_lut(void **state) {
    (void)state;
    int shape[4];
    float *ref = load_ref_f("norm_lut", shape);
    const float(*lut)[256] = aug_norm_lut();
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) assert_true(lut[c][v] == ref[c * 256 + v]);   // bit-exact
    free(ref);
}

// The whole eval transform, both channel orders (RAF-DB feeds BGR).
static void test_eval_pipeline(void **state) {
    (void)state;
    image_u8 im;
    char err[512];
    assert_int_equal(image_load_jpeg(NULL, FIXTURE_DIR "/data_img0.jpg", &im, err, sizeof err), 0);
    float *out = malloc(3 * 224 * 224 * sizeof(float));
    aug_scratch s = {0};
    for (int bgr = 0; bgr <= 1; bgr++) {
        int shape[4];
        float *ref = load_ref_f(bgr ? "eval0_bgr" : "eval0_rgb", shape);
        const int rows = shape[1];
        aug_apply(&im, NULL, bgr, 224, 1, &s, out);
        int off = 0, n = 3 * rows * 224;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < rows; y++)
                for (int x = 0; x < 224; x++) {
                    float a = out[(c * 224 + y) * 224 + x], b = ref[(c * rows + y) * 224 + x];
                    float d = fabsf(a - b);
                    assert_true(d <= 1.0f / 255 / 0.224f * 1.0001f + 1e-6f);
                    off += d > 1e-6f;
                }
        assert_true(off <= n / 100);
        free(ref);
    }
    aug_scratch_free(&s);
    free(out);
    image_free(&im);
}

static void test_bad_jpegs(void **state) {
    (void)state;
    td_mkdirs(tu_path("/img"));
    char err[512];
    image_u8 im;
    // Missing
    assert_int_not_equal(image_load_jpeg(NULL, tu_path("/img/none.jpg"), &im, err, sizeof err), 0);
    assert_non_null(strstr(err, "none.jpg"));
    // Not a JPEG
    td_write(tu_path("/img/text.jpg"), "hello, I am not a picture\n");
    assert_int_not_equal(image_load_jpeg(NULL, tu_path("/img/text.jpg"), &im, err, sizeof err), 0);
    assert_non_null(strstr(err, "text.jpg"));
    // Truncated: the first half of a real JPEG
    FILE *f = fopen(FIXTURE_DIR "/data_img1.jpg", "rb");
    uint8_t buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(tu_path("/img/trunc.jpg"), "wb");
    fwrite(buf, 1, n / 2, f);
    fclose(f);
    assert_int_not_equal(image_load_jpeg(NULL, tu_path("/img/trunc.jpg"), &im, err, sizeof err), 0);
    assert_non_null(strstr(err, "trunc.jpg"));
    // Corrupt: garbage in the entropy-coded data after the header
    memset(buf + n / 2, 0xFF, 64);
    memset(buf + n / 2 + 64, 0x00, 512);
    f = fopen(tu_path("/img/corrupt.jpg"), "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    int rc = image_load_jpeg(NULL, tu_path("/img/corrupt.jpg"), &im, err, sizeof err);
    if (rc == 0) image_free(&im);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, "corrupt.jpg"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_matches_pil), cmocka_unit_test(test_grey_replicated),
        cmocka_unit_test(test_normalize_lut),      cmocka_unit_test(test_eval_pipeline),
        cmocka_unit_test(test_bad_jpegs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
