// The repository stands on its own: a clone into an empty temporary folder has
// every file the tests and the docs refer to, and no tracked file names a path
// outside the repository (the `shared` folder beside it, the folders above the
// repository, a home folder). Checked on the clone (what a user gets) and on the working tree
// (what is about to be committed). Needs git; without git or outside a git
// checkout (a release tarball) the tests are skipped with a SKIP: line.
#include "test_util.h"

#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

// Runs cmd through the shell; its stdout goes into out (NUL-terminated, may be
// cut); returns the exit status, or -1 when it did not exit normally.
static int run(const char *cmd, char *out, size_t n) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t len = 0;
    if (out && n) {
        out[0] = 0;
        char buf[4096];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, p)) > 0) {
            size_t c = k < n - 1 - len ? k : n - 1 - len;
            memcpy(out + len, buf, c);
            len += c;
            out[len] = 0;
        }
    } else {
        char buf[4096];
        while (fread(buf, 1, sizeof buf, p) > 0) {}
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = 0;
}

// Single-quoted for the shell (the paths here never hold a quote; checked).
static void quote(char *dst, size_t n, const char *s) {
    if (strlen(s) + 3 > n) fail_msg("path too long: %s", s);
    if (strchr(s, '\'')) fail_msg("path with a quote: %s", s);
    snprintf(dst, n, "'%s'", s);
}

typedef struct fixture {
    char root[PATH_MAX];    // the repository the tests run in
    char tmp[PATH_MAX];     // empty folder holding only the clone
    char clone[PATH_MAX + 8];   // tmp/repo
} fixture;

static int have_git_checkout(char *root, size_t n) {
    if (run("git --version >/dev/null 2>&1", NULL, 0) != 0) {
        printf("SKIP: git is not installed; the self-containment checks need it\n");
        return 0;
    }
    if (run("git rev-parse --show-toplevel 2>/dev/null", root, n) != 0 || !root[0]) {
        printf("SKIP: not inside a git checkout (a tarball?); nothing to clone\n");
        return 0;
    }
    chomp(root);
    return 1;
}

static int setup(void **state) {
    static fixture fx;
    memset(&fx, 0, sizeof fx);
    *state = &fx;
    if (!have_git_checkout(fx.root, sizeof fx.root)) return 0;
    const char *tdir = getenv("TMPDIR");
    snprintf(fx.tmp, sizeof fx.tmp, "%s/poster_clone_XXXXXX", tdir && *tdir ? tdir : "/tmp");
    if (!mkdtemp(fx.tmp)) {
        fprintf(stderr, "mkdtemp %s failed\n", fx.tmp);
        return -1;
    }
    snprintf(fx.clone, sizeof fx.clone, "%s/repo", fx.tmp);
    char qr[PATH_MAX + 2], qc[PATH_MAX + 10], cmd[3 * PATH_MAX];
    quote(qr, sizeof qr, fx.root);
    quote(qc, sizeof qc, fx.clone);
    // A local clone of the committed state (HEAD of this checkout's branch).
    snprintf(cmd, sizeof cmd, "git clone -q %s %s 2>&1", qr, qc);
    char out[4096];
    if (run(cmd, out, sizeof out) != 0) {
        fprintf(stderr, "%s failed: %s\n", cmd, out);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    if (fx->tmp[0]) {
        char q[PATH_MAX + 2], cmd[PATH_MAX + 16];
        quote(q, sizeof q, fx->tmp);
        snprintf(cmd, sizeof cmd, "rm -rf %s", q);
        run(cmd, NULL, 0);
    }
    return 0;
}

// Adds the fixed strings no tracked file may contain, for a repository at
// `root`, to pats[*n..max): the shared folder beside it, every folder above it
// (except / and the system's temporary folder, which are not "beside"
// anything), $HOME, and the home folders of Linux users and of root. No
// duplicates. The literals are split so that this file does not match them.
static void add_pat(char pats[][PATH_MAX + 8], int *n, int max, const char *p) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(pats[i], p)) return;
    if (*n < max) snprintf(pats[(*n)++], PATH_MAX + 8, "%s", p);
}

static void forbidden(const char *root, char pats[][PATH_MAX + 8], int *n, int max) {
    add_pat(pats, n, max, ".." "/shared");
    add_pat(pats, n, max, "/ho" "me/");
    add_pat(pats, n, max, "/ro" "ot/");
    char buf[PATH_MAX + 1];
    const char *home = getenv("HOME");
    if (home && strlen(home) > 1) {
        snprintf(buf, sizeof buf, "%s/", home);
        add_pat(pats, n, max, buf);
    }
    char real[PATH_MAX];
    if (!realpath(root, real)) snprintf(real, sizeof real, "%s", root);
    const char *tdir = getenv("TMPDIR");
    for (int pass = 0; pass < 2; pass++) {   // as given and resolved (symlinks)
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", pass ? real : root);
        char *slash;
        while ((slash = strrchr(dir, '/')) && slash != dir) {
            *slash = 0;
            if (!strcmp(dir, "/tmp") || !strcmp(dir, "/var/tmp") ||
                (tdir && !strcmp(dir, tdir)))
                continue;
            snprintf(buf, sizeof buf, "%s/", dir);
            add_pat(pats, n, max, buf);
        }
    }
}

// git grep over the tracked files of `repo` for the patterns; fails listing hits.
static void expect_no_outside_paths(const char *repo, const char *label,
                                    char pats[][PATH_MAX + 8], int np) {
    char q[PATH_MAX + 2], cmd[16384];
    quote(q, sizeof q, repo);
    int len = snprintf(cmd, sizeof cmd, "git -C %s grep -n -I -F", q);
    for (int i = 0; i < np; i++) {
        char qp[PATH_MAX + 12];
        quote(qp, sizeof qp, pats[i]);
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " -e %s", qp);
    }
    snprintf(cmd + len, sizeof cmd - (size_t)len, " 2>&1");
    static char out[65536];
    int rc = run(cmd, out, sizeof out);
    if (rc == 0) {
        fprintf(stderr, "%s: tracked files name paths outside the repository:\n%s", label, out);
        fail_msg("%s: paths outside the repository (listed above)", label);
    }
    if (rc != 1) fail_msg("%s: `%s` failed (status %d): %s", label, cmd, rc, out);
}

static void test_no_path_outside_the_clone(void **state) {
    fixture *fx = *state;
    if (!fx->clone[0]) skip();
    char pats[64][PATH_MAX + 8];
    int np = 0;
    forbidden(fx->root, pats, &np, 64);
    forbidden(fx->clone, pats, &np, 64);
    assert_true(np >= 4);
    // The check itself can fail: the clone's folder is not beside anything, yet
    // its parent is a forbidden pattern of the clone.
    char parent[PATH_MAX + 1];
    snprintf(parent, sizeof parent, "%s/", fx->tmp);
    int found = 0;
    for (int i = 0; i < np; i++) found += !strcmp(pats[i], parent);
    assert_int_equal(found, 1);
    expect_no_outside_paths(fx->clone, "clone", pats, np);
    expect_no_outside_paths(fx->root, "working tree", pats, np);
}

// A planted file naming the shared folder beside the repository is found (the
// grep is not vacuous).
static void test_check_catches_a_planted_path(void **state) {
    fixture *fx = *state;
    if (!fx->clone[0]) skip();
    char q[PATH_MAX + 12], cmd[2 * PATH_MAX], out[4096];
    quote(q, sizeof q, fx->clone);
    snprintf(cmd, sizeof cmd,
             "cd %s && printf 'see ../%%s/x.tsv\\n' shared > planted.txt && git add planted.txt && "
             "git grep -n -I -F -e '..'/shared -- planted.txt; s=$?; git rm -q -f planted.txt; "
             "exit $s", q);
    assert_int_equal(run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "planted.txt:1:see .." "/shared/x.tsv"));
}

// Everything the tests read is committed: the clone has the state table and
// every fixture, identical to the working tree's, and nothing under docs/,
// configs/ or tests/fixtures/ is untracked (a test must not pass only here).
static void test_clone_has_the_test_inputs(void **state) {
    fixture *fx = *state;
    if (!fx->clone[0]) skip();
    char q[PATH_MAX + 2], cmd[2 * PATH_MAX];
    static char out[65536];
    quote(q, sizeof q, fx->root);
    snprintf(cmd, sizeof cmd, "git -C %s ls-files --others -- docs configs tests/fixtures", q);
    assert_int_equal(run(cmd, out, sizeof out), 0);
    if (out[0]) fail_msg("untracked files that tests may read:\n%s", out);

    const char *need[] = {"docs/poster_state_dict.tsv", "docs/POSTER.md",
                          "tests/fixtures/poster_small.h5", "tests/fixtures/contract_ref.h5",
                          "tests/run_tests.sh", "configs/rafdb.ini"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        char p[2 * PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", fx->clone, need[i]);
        struct stat st;
        if (stat(p, &st) != 0 || st.st_size == 0) fail_msg("the clone lacks %s", need[i]);
    }
    // Committed fixtures equal the working tree's (no uncommitted regeneration).
    snprintf(cmd, sizeof cmd, "git -C %s diff --stat HEAD -- tests/fixtures docs", q);
    assert_int_equal(run(cmd, out, sizeof out), 0);
    if (out[0]) printf("note: uncommitted changes in tests/fixtures or docs:\n%s", out);
    // The state table has its 1309 rows.
    char p[2 * PATH_MAX];
    snprintf(p, sizeof p, "%s/docs/poster_state_dict.tsv", fx->clone);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    int rows = 0, c, last = '\n';
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n') rows++;
        last = c;
    }
    fclose(f);
    assert_int_equal(last, '\n');
    assert_int_equal(rows, 1309);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_path_outside_the_clone),
        cmocka_unit_test(test_check_catches_a_planted_path),
        cmocka_unit_test(test_clone_has_the_test_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
