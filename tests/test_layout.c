// The layering rule (docs/ARCHITECTURE.md): includes point down, never up or
// sideways. tools/check_layers.sh must pass on the repository and must fail,
// naming each offending line, on a planted tree that breaks the rule.
#include "test_util.h"

#include <errno.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

// Runs cmd; its output (stdout and stderr) into out; returns the exit status.
static int run(const char *cmd, char *out, size_t n) {
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_repository_follows_the_rule(void **state) {
    (void)state;
    char out[16384];
    int rc = run("tools/check_layers.sh .", out, sizeof out);
    if (rc != 0) fail_msg("includes that point up (rc %d):\n%s", rc, out);
    assert_string_equal(out, "");
}

static void test_planted_violations_are_found(void **state) {
    (void)state;
    const char *dirs[] = {"/tree", "/tree/common", "/tree/autograd", "/tree/layers",
                          "/tree/data", "/tree/eval", "/tree/train", "/tree/cli"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        assert_true(mkdir(tu_path(dirs[i]), 0755) == 0 || errno == EEXIST);
    // allowed: down the layers, the own folder, bare names, system headers
    write_text(tu_path("/tree/layers/ok.c"), "#include <stdio.h>\n#include \"autograd/tensor.h\"\n"
               "#include \"common/h5io.h\"\n#include \"layers/layers.h\"\n#include \"own.h\"\n");
    write_text(tu_path("/tree/cli/main.c"), "#include \"train/trainer.h\"\n#include \"eval/metrics.h\"\n");
    write_text(tu_path("/tree/eval/ok.h"), "#include \"data/dataset.h\"\n#include \"layers/poster.h\"\n");
    // not allowed: up, and sideways (data/ may not see autograd/)
    write_text(tu_path("/tree/common/up.h"), "// one\n#include \"autograd/tensor.h\"\n");
    write_text(tu_path("/tree/data/side.c"), "#include \"data/dataset.h\"\n  #  include \"autograd/ops.h\"\n");
    write_text(tu_path("/tree/train/up.c"), "#include \"cli/cli.h\"\n");
    write_text(tu_path("/tree/eval/up.c"), "#include \"train/trainer.h\"\n");
    char cmd[2048], out[16384];
    snprintf(cmd, sizeof cmd, "tools/check_layers.sh '%s'", tu_path("/tree"));
    int rc = run(cmd, out, sizeof out);
    printf("%s", out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "common/up.h:2: common/ includes autograd/tensor.h"));
    assert_non_null(strstr(out, "data/side.c:2: data/ includes autograd/ops.h"));
    assert_non_null(strstr(out, "train/up.c:1: train/ includes cli/cli.h"));
    assert_non_null(strstr(out, "eval/up.c:1: eval/ includes train/trainer.h"));
    assert_null(strstr(out, "ok.c"));
    assert_null(strstr(out, "ok.h"));
    assert_null(strstr(out, "main.c"));
    // exactly the four
    int lines = 0;
    for (const char *p = out; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 4);
}

// The release program has no test hooks; the test build has them (so the
// check below can fail).
static void test_release_binary_has_no_hooks(void **state) {
    (void)state;
    const char *bin = getenv("POSTER_BIN"), *hooks = getenv("POSTER_HOOKS_BIN");
    if (!bin || !hooks || access(bin, X_OK) || access(hooks, X_OK))
        tu_skip("POSTER_BIN and POSTER_HOOKS_BIN not set (make test sets them)");
    char cmd[2048], out[256];
    const char *marks[] = {"POSTER_DIST_TEST_KILL", "ckpt_fault_inject"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "grep -c '%s' '%s'", marks[i], bin);
        int rc = run(cmd, out, sizeof out);
        if (rc != 1) fail_msg("%s holds %s (grep rc %d: %s)", bin, marks[i], rc, out);
        snprintf(cmd, sizeof cmd, "grep -c '%s' '%s'", marks[i], hooks);
        rc = run(cmd, out, sizeof out);
        if (rc != 0) fail_msg("%s lacks %s (grep rc %d)", hooks, marks[i], rc);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repository_follows_the_rule),
        cmocka_unit_test(test_planted_violations_are_found),
        cmocka_unit_test(test_release_binary_has_no_hooks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
