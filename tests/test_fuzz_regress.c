// The fuzz targets of tests/fuzz/ as a regression test: every committed seed
// (tests/fuzz/corpus/<target>/) and every input that once crashed a target
// (tests/fuzz/regress/<target>/, named after what it found) runs through the
// same entry point libFuzzer calls. A crash, a sanitizer report (make asan) or
// a __builtin_trap of a harness check fails the test; the file is printed first.
#include <dirent.h>

#include "tests/test_util.h"

#define LLVMFuzzerTestOneInput fuzz_config_one
#include "tests/fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_lists_one
#include "tests/fuzz/fuzz_lists.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_ferplus_one
#include "tests/fuzz/fuzz_ferplus.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_npy_one
#include "tests/fuzz/fuzz_npy.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_jpeg_one
#include "tests/fuzz/fuzz_jpeg.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_ckpt_one
#define LLVMFuzzerInitialize fuzz_ckpt_init
#include "tests/fuzz/fuzz_ckpt.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize
#define LLVMFuzzerTestOneInput fuzz_cache_one
#define LLVMFuzzerInitialize fuzz_cache_init
#include "tests/fuzz/fuzz_cache.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize
#define LLVMFuzzerTestOneInput fuzz_pth_one
#include "tests/fuzz/fuzz_pth.c"
#undef LLVMFuzzerTestOneInput

typedef int (*fuzz_fn)(const uint8_t *, size_t);

// Runs every file of tests/fuzz/{corpus,regress}/<name>/; returns how many.
static int run_dir(const char *name, fuzz_fn fn) {
    int count = 0;
    const char *kinds[] = {"corpus", "regress"};
    for (int k = 0; k < 2; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "tests/fuzz/%s/%s", kinds[k], name);
        DIR *d = opendir(dir);
        if (!d) continue;
        for (struct dirent *e; (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            FILE *f = fopen(p, "rb");
            assert_non_null(f);
            fseek(f, 0, SEEK_END);
            long n = ftell(f);
            fseek(f, 0, SEEK_SET);
            uint8_t *buf = malloc((size_t)n + 1);
            assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
            fclose(f);
            printf("%s (%ld bytes)\n", p, n);
            fflush(stdout);
            assert_int_equal(fn(buf, (size_t)n), 0);
            free(buf);
            count++;
        }
        closedir(d);
    }
    return count;
}

#define TARGET_TEST(name, min_files)                                           \
    static void test_##name(void **state) {                                    \
        (void)state;                                                           \
        int n = run_dir(#name, fuzz_##name##_one);                             \
        printf("%s: %d inputs\n", #name, n);                                   \
        assert_true(n >= (min_files));                                         \
    }
TARGET_TEST(config, 3)
TARGET_TEST(lists, 6)
TARGET_TEST(ferplus, 2)
TARGET_TEST(npy, 3)
TARGET_TEST(jpeg, 5)
TARGET_TEST(ckpt, 2)
TARGET_TEST(cache, 1)
TARGET_TEST(pth, 5)

// The seeds are valid files: the readers must accept them (a harness that
// rejects everything would fuzz nothing).
static void test_seeds_are_valid(void **state) {
    (void)state;
    char err[2048];
    ckpt_info ci;
    fzc_setup();
    assert_int_equal(ckpt_load("tests/fuzz/corpus/ckpt/ckpt.h5", &fzc_store, fzc_opt, &ci, err,
                               sizeof err), 0);
    assert_int_equal(ci.epoch, 2);
    ckpt_info_free(&ci);
    dataset *d = NULL;
    config *c = fz_config("rafdb", fz_dir(), NULL, NULL);
    assert_int_equal(dataset_open_cache(c, "tests/fuzz/corpus/cache/cache.h5", "train", &d, err,
                                        sizeof err), 0);
    assert_int_equal(dataset_size(d), 2);
    dataset_close(d);
    image_u8 im;
    void *tj = image_tj_decoder();
    assert_int_equal(image_load_jpeg(tj, "tests/fuzz/corpus/jpeg/grey", &im, err, sizeof err), 0);
    image_free(&im);
    image_tj_free(tj);
}

// One decoder for a good, a bad, a good image (the loader's threads keep theirs
// for a whole run): a failure must not spoil the next decode (libjpeg-turbo 2.1
// leaves a handle broken after a bad header; found by test_train_crash).
static void test_jpeg_decoder_after_error(void **state) {
    (void)state;
    const char *bad[] = {"tests/fuzz/corpus/jpeg/truncated", "tests/fuzz/corpus/jpeg/cmyk",
                         "tests/fuzz/corpus/config/sets"};
    char err[512];
    void *tj = image_tj_decoder();
    for (int i = 0; i < 3; i++) {
        image_u8 im;
        assert_int_equal(image_load_jpeg(tj, "tests/fixtures/data_img2.jpg", &im, err, sizeof err), 0);
        image_free(&im);
        if (image_load_jpeg(tj, bad[i], &im, err, sizeof err) == 0) image_free(&im);
        else printf("expected error: %s\n", err);
        int h, w;
        assert_int_equal(image_jpeg_size(tj, "tests/fixtures/data_img2.jpg", &h, &w, err, sizeof err), 0);
        assert_true(h > 0 && w > 0);
        image_jpeg_size(tj, bad[i], &h, &w, err, sizeof err);
    }
    image_u8 im;
    assert_int_equal(image_load_jpeg(tj, "tests/fixtures/data_img2.jpg", &im, err, sizeof err), 0);
    assert_true(im.h > 0 && im.w > 0);
    image_free(&im);
    image_tj_free(tj);
}

static int cleanup(void **state) {
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir());
    return system(cmd) ? -1 : 0;
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config), cmocka_unit_test(test_lists),
        cmocka_unit_test(test_ferplus), cmocka_unit_test(test_npy),
        cmocka_unit_test(test_jpeg), cmocka_unit_test(test_ckpt),
        cmocka_unit_test(test_cache), cmocka_unit_test(test_pth),
        cmocka_unit_test(test_seeds_are_valid), cmocka_unit_test(test_jpeg_decoder_after_error),
    };
    return cmocka_run_group_tests(tests, NULL, cleanup);
}
