// `poster train` (the binary in $POSTER_BIN) under faults, on a tiny POSTER and
// a few synthetic faces: SIGINT/SIGTERM finish the step, write last.h5 and exit
// non-zero saying how to resume, and the resumed run ends bit-identical to an
// uninterrupted one with each epoch logged once; a full disk while writing a
// checkpoint is a clear error and the previous checkpoint stays intact;
// unreadable images mid-run stop the run naming the file (data.skip_bad=off)
// or are skipped and named (on), losing nothing already written.
// LONG=1 (make check-long): 20 SIGKILLs at random moments (steps, evaluation,
// checkpoint, log and picture writes), resuming each time: every checkpoint on
// disk opens, the end is bit-identical, the logs hold each epoch once.
#include <signal.h>
#include <stdarg.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/test_util.h"
#include "train/checkpoint.h"

static char g_dir[256];
static const char *bin(void) { return getenv("POSTER_BIN"); }

static const char *dp(const char *rel) {
    static char bufs[16][600];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, 600, "%s/%s", g_dir, rel);
    return b;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = 0;
    fclose(f);
    return s;
}

// Starts `poster train ARGS` (stdout and stderr appended to LOG); returns its pid.
// `limit_kb` > 0 caps the size of any file it writes (RLIMIT_FSIZE, SIGXFSZ ignored).
static pid_t spawn(const char *args, const char *log, long limit_kb) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s train %s >> %s 2>&1", bin(), args, log);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (limit_kb > 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {(rlim_t)limit_kb * 1024, (rlim_t)limit_kb * 1024};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

// Waits for the process; returns its exit status, or 128 + signal.
static int wait_exit(pid_t pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run_train(const char *args, const char *log) { return wait_exit(spawn(args, log, 0)); }

static bool wait_file(const char *path, double timeout) {
    double t0 = now_s();
    while (access(path, F_OK) != 0) {
        if (now_s() - t0 > timeout) return false;
        usleep(20000);
    }
    return true;
}

// The tiny run every test uses: 2 epochs of 3-4 batches, fixed threads.
static void write_recipe(void) {
    char root[600];
    snprintf(root, sizeof root, "%s", dp("synth"));
    FILE *f = fopen(dp("tiny.ini"), "w");
    assert_non_null(f);
    fprintf(f, "[model]\ndepth = 1\nir_units = 1,1,1\ndrop_path_rate = 0.1\n"
               "[data]\nformat = rafdb\nroot = %s\nimage_size = 112\nworkers = 1\n"
               "[train]\nepochs = 2\nbatch_size = 4\nmicro_batch = 2\nthreads = 2\n"
               "progress = off\ninit =\n"
               "[optim]\nlr = 1e-3\nsam = off\n[eval]\nsplit = test\nbatch_size = 8\n", root);
    fclose(f);
}

// ---- checks on the files a run leaves ----

typedef struct {
    hid_t a, b;
    int diffs, n;
    const char *group;
} cmp_ctx;

static int cmp_one(const char *name, void *ctx) {
    cmp_ctx *c = ctx;
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/%s", c->group, name);
    int nd1, nd2, s1[8], s2[8];
    float *x = NULL, *y = NULL;
    if (h5_read_floats(c->a, path, &x, &nd1, s1, err, sizeof err) ||
        h5_read_floats(c->b, path, &y, &nd2, s2, err, sizeof err) || nd1 != nd2) {
        printf("cannot compare %s: %s\n", path, err);
        c->diffs++;
    } else {
        int64_t n = 1;
        for (int i = 0; i < nd1; i++) n *= s1[i];
        if (memcmp(x, y, (size_t)n * sizeof(float))) {
            if (c->diffs < 5) printf("differs: %s\n", path);
            c->diffs++;
        }
    }
    c->n++;
    free(x);
    free(y);
    return 0;
}

// Every tensor of the model and the optimizer state bit-identical.
static void assert_same_state(const char *pa, const char *pb) {
    char err[512];
    hid_t a = h5_open_read(pa, err, sizeof err), b = h5_open_read(pb, err, sizeof err);
    assert_true(a >= 0 && b >= 0);
    cmp_ctx c = {a, b, 0, 0, "state_dict"};
    h5_list_datasets(a, "state_dict", cmp_one, &c);
    c.group = "optimizer";
    h5_list_datasets(a, "optimizer", cmp_one, &c);
    h5_close(a);
    h5_close(b);
    printf("%s vs %s: %d tensors, %d differ\n", pa, pb, c.n, c.diffs);
    assert_true(c.n > 100);
    assert_int_equal(c.diffs, 0);
}

typedef struct {
    hid_t f;
    int bad;
} open_ctx;

static int read_one(const char *name, void *ctx) {
    open_ctx *c = ctx;
    char path[600], err[512];
    snprintf(path, sizeof path, "state_dict/%s", name);
    int nd, sh[8];
    float *x = NULL;
    if (h5_read_floats(c->f, path, &x, &nd, sh, err, sizeof err)) {
        printf("%s\n", err);
        c->bad++;
    }
    free(x);
    return 0;
}

// A checkpoint opens and every tensor of it reads; progress and config are there.
static void assert_ckpt_opens(const char *path) {
    char err[1024], *text = NULL;
    if (ckpt_read_config(path, &text, err, sizeof err)) fail_msg("%s", err);
    free(text);
    hid_t f = h5_open_read(path, err, sizeof err);
    assert_true(f >= 0);
    open_ctx c = {f, 0};
    assert_true(h5_list_datasets(f, "state_dict", read_one, &c) >= 0);
    int64_t v;
    assert_int_equal(h5_read_int64_scalar(f, "progress/epoch", &v, err, sizeof err), 0);
    h5_close(f);
    assert_int_equal(c.bad, 0);
}

static void assert_all_ckpts_open(const char *dir) {
    const char *names[] = {"last.h5", "best.h5"};
    for (int i = 0; i < 2; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (access(p, F_OK) == 0) assert_ckpt_opens(p);
    }
}

// log.csv and log.jsonl: epochs 1..E each exactly once, in order, whole lines.
static void assert_logs(const char *dir, int epochs) {
    const char *names[] = {"log.csv", "log.jsonl"};
    for (int k = 0; k < 2; k++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, names[k]);
        char *s = slurp(p);
        size_t n = strlen(s);
        assert_true(n > 0 && s[n - 1] == '\n');
        int expect = 1, rows = 0;
        for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
            if (!strncmp(line, "epoch,", 6)) continue;
            long e = k == 0 ? strtol(line, NULL, 10)
                            : (strstr(line, "\"epoch\": ") ? strtol(strstr(line, "\"epoch\": ") + 9,
                                                                    NULL, 10) : -1);
            if (e != expect) fail_msg("%s: row %d has epoch %ld, expected %d", p, rows + 1, e,
                                      expect);
            expect++;
            rows++;
        }
        free(s);
        assert_int_equal(rows, epochs);
    }
}

// ---- the reference run ----

static double g_ref_seconds;   // the uninterrupted run's training time

static bool setup_ref(void) {
    if (!bin() || access(bin(), X_OK)) {
        printf("SKIP: POSTER_BIN is not set (tests/run_tests.sh sets it); crash tests not run\n");
        return false;
    }
    if (g_ref_seconds > 0) return true;
    sh("rm -rf %s && mkdir -p %s", g_dir, g_dir);
    char args[1200];
    snprintf(args, sizeof args, "data synth --output %s --per-class 3 --seed 5 > /dev/null",
             dp("synth"));
    sh("%s %s", bin(), args);
    write_recipe();
    snprintf(args, sizeof args, "--config %s --out %s", dp("tiny.ini"), dp("ref"));
    pid_t pid = spawn(args, dp("ref.log"), 0);
    assert_true(wait_file(dp("ref/config.ini"), 120));
    double t0 = now_s();
    int rc = wait_exit(pid);
    g_ref_seconds = now_s() - t0;
    if (rc) printf("%s", slurp(dp("ref.log")));
    assert_int_equal(rc, 0);
    printf("reference run: %.1f s of training\n", g_ref_seconds);
    assert_logs(dp("ref"), 2);
    return true;
}

// Starts a run, sends `sig` `delay` seconds after its setup, returns the status.
static int run_signalled(const char *args, const char *out, const char *log, int sig,
                         double delay) {
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/config.ini", out);
    remove(cfg);
    pid_t pid = spawn(args, log, 0);
    if (!wait_file(cfg, 120)) fail_msg("no %s after 120 s", cfg);
    usleep((useconds_t)(delay * 1e6));
    kill(pid, sig);
    return wait_exit(pid);
}

static void test_signals(void **state) {
    (void)state;
    if (!setup_ref()) skip();
    char args[1500];
    const char *out = dp("sig"), *log = dp("sig.log");
    sh("rm -rf %s%s", out, "");
    // SIGINT about a third into the run (a step of epoch 1), then SIGTERM a while into
    // the resumed run, then to the end.
    snprintf(args, sizeof args, "--config %s --out %s", dp("tiny.ini"), out);
    int rc = run_signalled(args, out, log, SIGINT, 0.3 * g_ref_seconds);
    char *t = slurp(log);
    printf("--- after SIGINT:\n%s", t);
    assert_int_equal(rc, 1);   // a clean, non-zero exit (not killed by the signal)
    assert_non_null(strstr(t, "stopped by Interrupt"));
    assert_non_null(strstr(t, "resume with: poster train --resume"));
    free(t);
    assert_all_ckpts_open(out);
    snprintf(args, sizeof args, "--resume %s/last.h5", out);
    remove(log);
    rc = run_signalled(args, out, log, SIGTERM, 0.25 * g_ref_seconds);
    t = slurp(log);
    printf("--- after SIGTERM:\n%s", t);
    assert_true(rc == 1 || rc == 0);   // 0: the resumed part ended before the signal
    if (rc == 1) assert_non_null(strstr(t, "stopped by Terminated"));
    free(t);
    assert_all_ckpts_open(out);
    if (rc == 1) assert_int_equal(run_train(args, log), 0);
    assert_same_state(dp("ref/last.h5"), dp("sig/last.h5"));
    assert_logs(out, 2);
}

// A full disk (a small tmpfs when this process may mount, else RLIMIT_FSIZE)
// while the next checkpoint is written: a clear error, the previous one intact.
static void test_disk_full(void **state) {
    (void)state;
    if (!setup_ref()) skip();
    const char *dir = dp("full");
    sh("rm -rf %s && mkdir -p %s", dir, dir);
    struct stat st;
    assert_int_equal(stat(dp("ref/last.h5"), &st), 0);
    const long ck_kb = (long)(st.st_size / 1024);
    char opts[64];
    snprintf(opts, sizeof opts, "size=%ldk", ck_kb + ck_kb / 2);   // room for 1.5 checkpoints
    bool mounted = mount("tmpfs", dir, "tmpfs", 0, opts) == 0;
    printf("disk full simulated with %s\n",
           mounted ? "a tmpfs of 1.5 checkpoints" : "RLIMIT_FSIZE of half a checkpoint");
    sh("cp %s %s/", dp("ref/last.h5"), dir);
    char args[1500];
    snprintf(args, sizeof args, "--resume %s/last.h5 --set train.epochs=3 --out %s", dir, dir);
    int rc = wait_exit(spawn(args, dp("full.log"), mounted ? 0 : ck_kb / 2));
    char *t = slurp(dp("full.log"));
    printf("%s", t);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(t, "cannot write checkpoint"));
    assert_non_null(strstr(t, "unchanged"));
    free(t);
    // the previous checkpoint: same bytes, opens; no temporary left behind
    sh("cmp -s %s %s/last.h5", dp("ref/last.h5"), dir);
    assert_ckpt_opens(dp("full/last.h5"));
    assert_int_not_equal(access(dp("full/last.h5.tmp"), F_OK), 0);
    assert_int_not_equal(access(dp("full/best.h5.tmp"), F_OK), 0);
    if (mounted) umount(dir);
}

static void shf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void shf(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
}

// Unreadable images in the middle of a run (resumed after epoch 2 with two
// training faces damaged): off stops naming the file, on skips and names each.
static void test_bad_images(void **state) {
    (void)state;
    if (!setup_ref()) skip();
    const char *bad = dp("synth_bad"), *out = dp("bad");
    shf("rm -rf %s && cp -r %s %s", bad, dp("synth"), bad);
    // one face truncated, one not a JPEG at all
    shf("head -c 300 %s/Image/aligned/train_00003_aligned.jpg > %s/x && mv %s/x "
        "%s/Image/aligned/train_00003_aligned.jpg", bad, bad, bad, bad);
    shf("echo 'not a jpeg' > %s/Image/aligned/train_00007_aligned.jpg", bad);
    for (int skip = 0; skip < 2; skip++) {
        shf("rm -rf %s && mkdir -p %s && cp %s/last.h5 %s/log.csv %s/log.jsonl %s/", out, out,
            dp("ref"), dp("ref"), dp("ref"), out);
        char args[1500];
        snprintf(args, sizeof args, "--resume %s/last.h5 --set train.epochs=3 --set data.root=%s "
                 "--set data.skip_bad=%s --out %s", out, bad, skip ? "on" : "off", out);
        remove(dp("bad.log"));
        int rc = run_train(args, dp("bad.log"));
        char *t = slurp(dp("bad.log"));
        printf("--- data.skip_bad=%s:\n%s", skip ? "on" : "off", t);
        if (!skip) {
            assert_int_equal(rc, 1);
            assert_true(strstr(t, "train_00003_aligned.jpg") || strstr(t, "train_00007_aligned.jpg"));
            assert_non_null(strstr(t, "synth_bad/Image/aligned/"));
            // nothing lost: the checkpoint and the logs of the 2 epochs before
            shf("cmp -s %s/last.h5 %s/last.h5", dp("ref"), out);
            assert_logs(out, 2);
        } else {
            assert_int_equal(rc, 0);
            assert_non_null(strstr(t, "skipping bad sample"));
            assert_non_null(strstr(t, "train_00003_aligned.jpg"));
            assert_non_null(strstr(t, "train_00007_aligned.jpg"));
            assert_ckpt_opens(dp("bad/last.h5"));
            assert_logs(out, 3);
        }
        free(t);
    }
}

// LONG=1: 20 SIGKILLs at random moments of a 12-epoch run, resuming each time.
// A kill comes 5% to 100% of (C + 1 epoch) after the setup, C being the
// reference run's time from its setup to its first last.h5: about half of the
// runs get through an epoch end (evaluation, best.h5, pictures, logs, last.h5),
// mostly one, so the run is not over before the 20th kill. (With 0.05 to 1.5
// epochs of an 8-epoch run, on a machine where an epoch is short next to a
// run's start-up, every kill came before the first checkpoint and no run was
// ever resumed.)
static void test_kill9(void **state) {
    (void)state;
    if (!getenv("LONG") || strcmp(getenv("LONG"), "1"))
        tu_skip("20 x SIGKILL and resume runs with LONG=1 (make check-long)");
    if (!setup_ref()) skip();
    const int epochs = 12;
    char args[1500];
    const char *ref = dp("ref_long"), *out = dp("kill"), *log = dp("kill.log");
    shf("rm -rf %s %s", ref, out);
    snprintf(args, sizeof args, "--config %s --set train.epochs=%d --out %s", dp("tiny.ini"),
             epochs, ref);
    pid_t pid = spawn(args, dp("ref_long.log"), 0);
    assert_true(wait_file(dp("ref_long/config.ini"), 120));
    double t0 = now_s();
    assert_true(wait_file(dp("ref_long/last.h5"), 600));
    const double C = now_s() - t0;
    assert_int_equal(wait_exit(pid), 0);
    const double T = now_s() - t0;
    printf("uninterrupted %d epochs: %.1f s, the first checkpoint after %.1f s\n", epochs, T, C);
    srand(20261202);
    int during_write = 0, before_first = 0, survived = 0;
    for (int k = 0; k < 20; k++) {
        char last[700], cfg[700];
        snprintf(last, sizeof last, "%s/last.h5", out);
        snprintf(cfg, sizeof cfg, "%s/config.ini", out);
        bool resume = access(last, F_OK) == 0;
        if (resume) snprintf(args, sizeof args, "--resume %s", last);
        else snprintf(args, sizeof args, "--config %s --set train.epochs=%d --out %s",
                      dp("tiny.ini"), epochs, out);
        remove(cfg);
        char p1[700], p2[700];   // a kill during a write leaves these; clear them to see
        snprintf(p1, sizeof p1, "%s/last.h5.tmp", out);
        snprintf(p2, sizeof p2, "%s/best.h5.tmp", out);
        remove(p1);
        remove(p2);
        pid = spawn(args, log, 0);
        if (!wait_file(cfg, 120)) {   // say what the run was doing before failing
            bool alive = kill(pid, 0) == 0;
            printf("no %s after 120 s; the run is %s; the end of its log:\n", cfg,
                   alive ? "still alive (killed now)" : "gone");
            fflush(stdout);
            shf("tail -20 %s", log);
            if (alive) kill(pid, SIGKILL);
            fail_msg("no %s", cfg);
        }
        double delay = (C + T / epochs) * (0.05 + 0.95 * rand() / (double)RAND_MAX);
        usleep((useconds_t)(delay * 1e6));
        bool tmp = false;
        kill(pid, SIGKILL);
        int rc = wait_exit(pid);
        tmp = access(p1, F_OK) == 0 || access(p2, F_OK) == 0;
        during_write += tmp;
        before_first += !resume;
        survived += rc != 128 + SIGKILL;   // it had finished before the kill
        int64_t ep = -1;
        if (access(last, F_OK) == 0) {
            assert_all_ckpts_open(out);
            char err[512];
            hid_t f = h5_open_read(last, err, sizeof err);
            h5_read_int64_scalar(f, "progress/epoch", &ep, err, sizeof err);
            h5_close(f);
        }
        fflush(stdout);
        printf("kill %2d at %5.1f s (%s): exit %d%s, last.h5 at epoch %lld\n", k + 1, delay,
               resume ? "resumed" : "fresh", rc, tmp ? ", during a checkpoint write" : "",
               (long long)ep);
    }
    char last[700];
    snprintf(last, sizeof last, "%s/last.h5", out);
    if (access(last, F_OK) == 0) snprintf(args, sizeof args, "--resume %s", last);
    else snprintf(args, sizeof args, "--config %s --set train.epochs=%d --out %s",
                  dp("tiny.ini"), epochs, out);
    assert_int_equal(run_train(args, log), 0);
    printf("20 kills: %d during a checkpoint write, %d before the first checkpoint, %d after "
           "the run had ended\n", during_write, before_first, survived);
    assert_all_ckpts_open(out);
    assert_same_state(dp("ref_long/last.h5"), last);
    assert_logs(out, epochs);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/poster_crash_%d",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "build", (int)getpid());
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_bad_images),
        cmocka_unit_test(test_kill9),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    umount(dp("full"));   // the disk-full tmpfs, if a failed check left it mounted
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) rc = rc ? rc : 1;
    return rc;
}
