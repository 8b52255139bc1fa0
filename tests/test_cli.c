// The `poster` program: every subcommand is listed and dispatched; `poster bench`.
#include "test_util.h"

static const char *bin(void) { return getenv("POSTER_BIN"); }

static int run(const char *args, char *out, size_t n) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=2 %s %s 2>&1", bin(), args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t k = fread(out, 1, n - 1, p);
    out[k] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_help_lists_everything(void **state) {
    (void)state;
    if (!bin()) tu_skip("%s: POSTER_BIN is not set (make test sets it)", __func__);
    static char out[8192];
    assert_int_equal(run("help", out, sizeof out), 0);
    const char *cmds[] = {"train", "eval", "predict", "import", "info", "data", "bench", "forward"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char want[32];
        snprintf(want, sizeof want, "  %s ", cmds[i]);
        if (!strstr(out, want)) fail_msg("poster help does not list %s:\n%s", cmds[i], out);
    }
    assert_int_equal(run("nonsense", out, sizeof out), 2);
    assert_non_null(strstr(out, "unknown command 'nonsense'"));
}

static void test_bench_runs_and_rejects_bad_flags(void **state) {
    (void)state;
    if (!bin()) tu_skip("%s: POSTER_BIN is not set (make test sets it)", __func__);
    static char out[16384];
    int rc = run("bench --set model.depth=1 --set model.ir_units=1,1,1 --batch 2 --size 112 "
                 "--iters 1", out, sizeof out);
    if (rc != 0) fail_msg("poster bench failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "forward+backward (train)"));
    double sec = 0, ips = 0;
    const char *line = strstr(out, "forward (eval)");
    assert_non_null(line);
    assert_int_equal(sscanf(line, "forward (eval) %lf s/batch %lf images/s", &sec, &ips), 2);
    assert_true(sec > 0 && ips > 0);
    // The official training step (SAM around Adam), its time split and GFLOP/s.
    line = strstr(out, "training step (SAM + adam)");
    if (!line) fail_msg("no SAM training step in:\n%s", out);
    assert_int_equal(sscanf(line, "training step (SAM + adam) %lf s/batch %lf images/s", &sec, &ips),
                     2);
    assert_true(sec > 0 && ips > 0);
    const char *split[] = {"SPLIT train_step ir50 ", "SPLIT train_step transformer ",
                           "SPLIT train_step sam ", "SPLIT train_step optimizer ", "GFLOPS train_step ",
                           // the evaluation forward's split: forward time only
                           "SPLIT forward ir50 ", "SPLIT forward transformer ", "GFLOPS forward "};
    for (size_t i = 0; i < sizeof split / sizeof split[0]; i++)
        if (!strstr(out, split[i])) fail_msg("no '%s' in:\n%s", split[i], out);
    assert_int_equal(run("bench --help", out, sizeof out), 0);
    assert_non_null(strstr(out, "optim_sam_perturb"));
    assert_int_equal(run("bench --batch 0", out, sizeof out), 2);
    assert_non_null(strstr(out, "--batch 0"));
    assert_int_equal(run("bench --set model.depth=0", out, sizeof out), 1);
    assert_non_null(strstr(out, "model.depth"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_lists_everything),
        cmocka_unit_test(test_bench_runs_and_rejects_bad_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
