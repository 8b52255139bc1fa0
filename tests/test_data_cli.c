// `poster data` end to end through the binary in $POSTER_BIN (set by
// tests/run_tests.sh): synth -> check -> dump -> prepare, and check's exit
// status and messages on a broken tree.
#include "tests/test_util.h"
#include "tests/test_data_util.h"
#include <sys/wait.h>
#include <unistd.h>

// Relative to the scratch folder, which main() makes the working directory (this
// test reads nothing from the repository).
#define D "cli"

static const char *bin(void) { return getenv("POSTER_BIN"); }

static int run(const char *args, const char *out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s > %s 2>&1", bin(), args, out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(const char *path) {
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

static void test_cli(void **state) {
    (void)state;
    if (!bin() || access(bin(), X_OK))
        tu_skip("poster data CLI: POSTER_BIN is not set or not executable (make test sets it)");
    td_rmrf(D);
    td_mkdirs(D);
    assert_int_equal(run("data synth --output " D "/synth --per-class 5 --seed 9", D "/synth.log"), 0);
    assert_int_equal(access(D "/synth/montage.png", R_OK), 0);
    td_write(D "/synth.ini", "[data]\nformat = rafdb\nroot = " D "/synth\n");
    assert_int_equal(run("data check --config " D "/synth.ini", D "/check.log"), 0);
    char *t = slurp(D "/check.log");
    assert_non_null(strstr(t, "rafdb train: 28 samples"));
    assert_non_null(strstr(t, "rafdb test: 7 samples"));
    // dump: the eval transform of the first 3 test samples
    assert_int_equal(run("data dump --config " D "/synth.ini --split test --count 3 --output " D
                         "/dump.h5", D "/dump.log"), 0);
    char err[512];
    hid_t f = h5_open_read(D "/dump.h5", err, sizeof err);
    assert_true(f >= 0);
    float *x;
    int64_t *y;
    int nd, sh[8];
    assert_int_equal(h5_read_floats(f, "input", &x, &nd, sh, err, sizeof err), 0);
    assert_int_equal(nd, 4);
    assert_int_equal(sh[0], 3);
    assert_int_equal(sh[1], 3);
    assert_int_equal(sh[3], 224);
    assert_int_equal(h5_read_int64s(f, "target", &y, &nd, sh, err, sizeof err), 0);
    h5_close(f);
    // the same values as the library's eval path
    config *c = td_config("rafdb", D "/synth", NULL);
    dataset *d;
    assert_int_equal(dataset_open(c, "test", &d, err, sizeof err), 0);
    float *ref = malloc(3 * 224 * 224 * sizeof(float));
    aug_scratch s = {0};
    for (int i = 0; i < 3; i++) {
        image_u8 im;
        assert_int_equal(dataset_load(d, i, NULL, &im, err, sizeof err), 0);
        aug_apply(&im, NULL, true, 224, 1, &s, ref);
        assert_memory_equal(ref, x + (size_t)i * 3 * 224 * 224, 3 * 224 * 224 * sizeof(float));
        assert_int_equal(y[i], dataset_label(d, i));
        image_free(&im);
    }
    aug_scratch_free(&s);
    free(ref);
    free(x);
    free(y);
    dataset_close(d);
    // dump with training augmentation differs from eval
    assert_int_equal(run("data dump --config " D "/synth.ini --split test --count 3 --output " D
                         "/dump_aug.h5 --train-aug --seed 5", D "/dump.log"), 0);
    // prepare: a cache the loader reads
    assert_int_equal(run("data prepare --config " D "/synth.ini --output " D "/cache.h5",
                         D "/prep.log"), 0);
    assert_int_equal(run("data check --config " D "/synth.ini --set data.cache=" D "/cache.h5",
                         D "/check2.log"), 0);
    assert_non_null(strstr(slurp(D "/check2.log"), "rafdb train: 28 samples"));
    // Break the tree: a missing image, a corrupt one, a bad line -> exit 1, each named
    remove(D "/synth/Image/aligned/train_00002_aligned.jpg");
    td_write(D "/synth/Image/aligned/test_0003_aligned.jpg", "junk");
    FILE *l = fopen(D "/synth/EmoLabel/list_patition_label.txt", "a");
    fprintf(l, "train_09999.jpg 0\n");
    fclose(l);
    assert_int_equal(run("data check --config " D "/synth.ini", D "/check3.log"), 1);
    t = slurp(D "/check3.log");
    assert_non_null(strstr(t, "train_00002_aligned.jpg"));
    assert_non_null(strstr(t, "test_0003_aligned.jpg"));
    assert_non_null(strstr(t, "list_patition_label.txt:36"));
    assert_non_null(strstr(t, "3 problems"));
    // Usage errors
    assert_int_equal(run("data dump --config " D "/synth.ini", D "/u.log"), 2);
    assert_int_equal(run("data frobnicate", D "/u.log"), 2);
    assert_int_equal(run("data check --config " D "/synth.ini --set data.format=nope", D "/u.log"), 2);
}

int main(void) {
    h5_quiet();
    if (chdir(tu_tmpdir()) != 0) {
        perror(tu_tmpdir());
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cli)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
