// `poster sweep` end to end through the program (POSTER_BIN): a grid of 2 values
// of a small model on the synthetic faces; stopped in the middle of the first
// run (SIGTERM, forwarded to the run), started again with the same arguments it
// resumes that run from its last.h5 and runs the other; a third start skips both.
// summary.csv equals what the per-run log.csv files say. Bad grids are refused
// before anything runs. The summary statistics (sample std) are checked directly.
// LONG=1 (make check-long): the demo model, 2 pyramid levels x 2 seeds, --jobs 2.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "test_util.h"
#include "train/sweep.h"
#include "train/trainer.h"

static char g_tmp[256];

static const char *bin(void) { return getenv("POSTER_BIN"); }

static const char *tp(const char *rel) {
    static char bufs[16][700];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, 700, "%s%s", g_tmp, rel);
    return b;
}

static int run_cmd(const char *args, char *out, size_t n) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin(), args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t k = fread(out, 1, n - 1, p);
    out[k] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

// A recipe file: the small model, extra lines appended.
static void write_recipe(const char *path, const char *root, const char *extra) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[model]\ndepth = 1\nir_units = 1,1,1\ndrop_path_rate = 0\n\n"
               "[data]\nformat = rafdb\nroot = %s\nimage_size = 112\nworkers = 1\n\n"
               "[train]\nepochs = 2\nbatch_size = 4\nmicro_batch = 4\nmax_batches = 3\n"
               "threads = 2\nprogress = off\n\n"
               "[optim]\nlr = 1e-3\n\n[eval]\nsplit = test\nbatch_size = 16\nplots = off\n%s",
            root, extra ? extra : "");
    fclose(f);
}

// Independent reading of a run's log.csv: best (first maximum) and final val_acc,
// the F1 and score of the best epoch, the mean seconds; repeated epochs: last row.
typedef struct { double best, f1, score, final, secs; int best_epoch, epochs; } logsum;

static logsum read_log(const char *dir) {
    char path[900];
    snprintf(path, sizeof path, "%s/log.csv", dir);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("no %s", path);
    char line[2048];
    assert_non_null(fgets(line, sizeof line, f));
    assert_non_null(strstr(line, "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_f1,val_score,seconds"));
    double acc[64], f1[64], sc[64], sec[64];
    bool has[64] = {false};
    int max_e = 0;
    while (fgets(line, sizeof line, f)) {
        int e;
        double lr, tl, ta, vl, va, vf, vs, s;
        if (sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &e, &lr, &tl, &ta, &vl, &va, &vf,
                   &vs, &s) != 9)
            fail_msg("%s: bad row %s", path, line);
        assert_true(e >= 1 && e < 64);
        acc[e] = va, f1[e] = vf, sc[e] = vs, sec[e] = s, has[e] = true;
        if (e > max_e) max_e = e;
    }
    fclose(f);
    logsum r = {-1, 0, 0, 0, 0, 0, 0};
    double ss = 0;
    for (int e = 1; e <= max_e; e++) {
        if (!has[e]) continue;
        r.epochs++;
        ss += sec[e];
        r.final = acc[e];
        if (acc[e] > r.best) r.best = acc[e], r.f1 = f1[e], r.score = sc[e], r.best_epoch = e;
    }
    r.secs = ss / r.epochs;
    return r;
}

// Column `name` of the summary.csv row whose first field is `first`.
static double csv_field(const char *csv, const char *first, const char *name) {
    char *text = strdup(csv), *save = NULL;
    char *header = strtok_r(text, "\n", &save);
    int col = -1, c = 0;
    char *hs = NULL, *hcopy = strdup(header);
    for (char *t = strtok_r(hcopy, ",", &hs); t; t = strtok_r(NULL, ",", &hs), c++)
        if (!strcmp(t, name)) col = c;
    free(hcopy);
    if (col < 0) fail_msg("summary.csv has no column %s", name);
    double v = NAN;
    for (char *row = strtok_r(NULL, "\n", &save); row; row = strtok_r(NULL, "\n", &save)) {
        char *fields[128];
        int nf = 0;
        for (char *p = row; nf < 128;) {
            fields[nf++] = p;
            char *comma = strchr(p, ',');
            if (!comma) break;
            *comma = 0;
            p = comma + 1;
        }
        if (!strcmp(fields[0], first) && col < nf) v = fields[col][0] ? atof(fields[col]) : NAN;
    }
    free(text);
    return v;
}

static int ckpt_epoch(const char *path) {
    char err[256];
    hid_t f = h5_open_read(path, err, sizeof err);
    if (f < 0) return -1;
    int64_t *v = NULL;
    int nd, shape[8], e = -1;
    if (h5_read_int64s(f, "progress/epoch", &v, &nd, shape, err, sizeof err) == 0) e = (int)v[0];
    free(v);
    h5_close(f);
    return e;
}

static void test_stats(void **st) {
    (void)st;
    const double v[5] = {0.9, 0.8, NAN, 0.7, 1.0};
    sweep_stat s = sweep_stats(v, 5);
    assert_int_equal(s.n, 4);
    assert_true(fabs(s.mean - 0.85) < 1e-12);
    assert_true(fabs(s.sd - sqrt(((0.05 * 0.05) * 2 + (0.15 * 0.15) * 2) / 3)) < 1e-12);
    assert_true(s.min == 0.7 && s.max == 1.0);
    s = sweep_stats(v, 1);
    assert_true(s.n == 1 && s.sd == 0 && s.mean == 0.9);
}

// A run's logs as the sweep reads them: a repeated epoch counts once (its last
// row), the first maximum wins, the EMA's row when strictly better, test.json.
static void test_read_run(void **st) {
    (void)st;
    const char *d = tp("/logs");
    char path[800];
    mkdir(d, 0777);
    snprintf(path, sizeof path, "%s/log.csv", d);
    FILE *f = fopen(path, "w");
    fprintf(f, "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_f1,val_score,seconds\n"
               "1,0.1,2,0.2,2,0.50,0.40,0.43,10\n"
               "2,0.1,2,0.2,2,0.70,0.60,0.63,12\n"
               "2,0.1,2,0.2,2,0.60,0.55,0.57,14\n"    // epoch 2 again (resumed): this one
               "3,0.1,2,0.2,2,0.65,0.50,0.55,16\n"
               "4,0.1,2,0.2,2,0.65,0.52,0.56,18\n");
    fclose(f);
    sweep_run_metrics m;
    char err[512];
    if (sweep_read_run(d, &m, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(m.epochs, 4);
    assert_int_equal(m.best_epoch, 3);   // 0.65 first at epoch 3 (epoch 2 is 0.60)
    assert_true(m.best_acc == 0.65 && m.best_f1 == 0.50 && m.best_score == 0.55);
    assert_true(m.final_acc == 0.65);
    assert_true(fabs(m.sec_per_epoch - 14.5) < 1e-12);   // (10 + 14 + 16 + 18) / 4
    assert_false(m.best_is_ema);
    assert_true(isnan(m.test_acc));
    snprintf(path, sizeof path, "%s/ema.csv", d);
    f = fopen(path, "w");
    fprintf(f, "epoch,val_loss,val_acc,val_f1,val_score\n1,2,0.45,0.4,0.4\n2,2,0.60,0.9,0.9\n"
               "3,2,0.66,0.61,0.62\n4,2,0.64,0.5,0.5\n");
    fclose(f);
    snprintf(path, sizeof path, "%s/test.json", d);
    f = fopen(path, "w");
    fprintf(f, "{\"split\": \"test\", \"best_epoch\": 3, \"weights\": \"ema\", "
               "\"test_loss\": 1.0, \"test_acc\": 0.625000, \"test_f1\": 0.5, "
               "\"test_score\": 0.55, \"samples\": 8}\n");
    fclose(f);
    if (sweep_read_run(d, &m, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(m.best_epoch, 3);   // EMA 0.66 > raw 0.65 at epoch 3; 0.60 = raw at 2: raw
    assert_true(m.best_is_ema && m.best_acc == 0.66 && m.best_f1 == 0.61);
    assert_true(m.final_acc == 0.65);    // the final-epoch accuracy is the raw weights'
    assert_true(m.test_acc == 0.625 && m.test_f1 == 0.5 && m.test_score == 0.55);
    // a malformed row is named
    snprintf(path, sizeof path, "%s/log.csv", d);
    f = fopen(path, "a");
    fprintf(f, "x,1,2\n");
    fclose(f);
    assert_int_not_equal(sweep_read_run(d, &m, err, sizeof err), 0);
    assert_non_null(strstr(err, "log.csv:7: malformed row"));
}

// configs/ablation_pyramid.ini: a valid recipe (poster train accepts its [sweep]
// section) whose sweep is the paper's 3 levels x 3 seeds.
static void test_ablation_config(void **st) {
    (void)st;
    static config c;
    char err[2048];
    config_init(&c);
    train_config_register(&c);
    if (config_load(&c, "configs/ablation_pyramid.ini", err, sizeof err) ||
        config_validate(&c, err, sizeof err))
        fail_msg("%s", err);
    assert_string_equal(config_str(&c, "sweep.grid"), "model.pyramid_levels=1,2,3");
    assert_int_equal(config_int(&c, "sweep.seeds"), 3);
    assert_int_equal(config_int(&c, "model.depth"), 8);   // the official recipe underneath
    if (!bin()) tu_skip("POSTER_BIN unset (dry run)");
    static char out[16384];
    assert_int_equal(run_cmd("sweep --config configs/ablation_pyramid.ini --set data.root=. --dry-run",
                             out, sizeof out), 0);
    assert_non_null(strstr(out, "3 combinations x 3 seeds = 9 runs in runs/ablation_pyramid"));
    assert_non_null(strstr(out, "runs/ablation_pyramid/model.pyramid_levels=3/seed125"));
}

static void test_sweep_cli(void **st) {
    (void)st;
    if (!bin()) tu_skip("POSTER_BIN unset");
    char err[512], cmd[2048];
    static char out[65536];
    const char *synth = tp("/synth");
    assert_int_equal(synth_write(synth, 4, 3, err, sizeof err), 0);
    const char *recipe = tp("/recipe.ini"), *dir = tp("/sw");
    write_recipe(recipe, synth, NULL);
    char args[1500];
    snprintf(args, sizeof args, "sweep --config %s --grid model.pyramid_levels=1,2 --out %s",
             recipe, dir);
    // refused before anything runs: an unknown key, a value the key rejects
    snprintf(cmd, sizeof cmd, "sweep --config %s --grid model.nonsense=1,2 --out %s", recipe, dir);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "unknown key 'model.nonsense'"));
    snprintf(cmd, sizeof cmd, "sweep --config %s --grid model.depth=1,0 --out %s", recipe, dir);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "model.depth = '0' is invalid"));
    assert_int_not_equal(access(dir, F_OK), 0);
    // 1) start, stop it (SIGTERM) once the first run has a checkpoint of epoch 1
    const char *run1 = tp("/sw/model.pyramid_levels=1/seed123");
    const char *run2 = tp("/sw/model.pyramid_levels=2/seed123");
    char last1[800];
    snprintf(last1, sizeof last1, "%s/last.h5", run1);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(tp("/sweep1.out"), O_WRONLY | O_CREAT | O_TRUNC, 0666);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin(), bin(), "sweep", "--config", recipe, "--grid", "model.pyramid_levels=1,2",
              "--out", dir, (char *)NULL);
        _exit(127);
    }
    int status = 0, waited = 0;
    for (int i = 0; i < 60000 && access(last1, F_OK) != 0; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            waited = 1;
            break;
        }
        usleep(20000);
    }
    if (waited) fail_msg("the sweep ended before its first checkpoint:\n%s", slurp(tp("/sweep1.out")));
    kill(pid, SIGTERM);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    char *o1 = slurp(tp("/sweep1.out"));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 128 + SIGTERM);
    assert_non_null(strstr(o1, "stopped by signal 15"));
    free(o1);
    char done1[800];
    snprintf(done1, sizeof done1, "%s/sweep_done", run1);
    const int e1 = ckpt_epoch(last1);
    fprintf(stderr, "stopped the sweep with run 1 at epoch %d of 2\n", e1);
    // SIGTERM lets the step in flight finish: when it was run 1's last, run 1 is
    // complete (and marked so) and the next start skips it instead of resuming it.
    const bool finished1 = access(done1, F_OK) == 0;
    assert_true(finished1 ? e1 == 2 : (e1 == 1 || e1 == 2));
    // 2) the same command: run 1 resumes, run 2 starts
    int rc = run_cmd(args, out, sizeof out);
    if (rc) fail_msg("sweep failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, finished1 ? "[1/2] model.pyramid_levels=1 seed 123: finished earlier"
                                          : "[1/2] model.pyramid_levels=1 seed 123: resuming"));
    assert_non_null(strstr(out, "[2/2] model.pyramid_levels=2 seed 123: started"));
    assert_non_null(strstr(out, "2 of 2 runs finished"));
    char p[900];
    snprintf(p, sizeof p, "%s/train.log", run1);
    char *tl = slurp(p);
    assert_non_null(tl);
    if (!finished1) assert_non_null(strstr(tl, "resumed from"));
    free(tl);
    const char *files[] = {"run.ini", "train.log", "sweep_done", "log.csv", "last.h5", "best.h5", NULL};
    for (int i = 0; files[i]; i++)
        for (int r = 0; r < 2; r++) {
            snprintf(p, sizeof p, "%s/%s", r ? run2 : run1, files[i]);
            if (access(p, F_OK)) fail_msg("missing %s", p);
        }
    // summary.csv == the logs
    snprintf(p, sizeof p, "%s/summary.csv", dir);
    char *csv = slurp(p);
    assert_non_null(csv);
    const char *runs[2] = {run1, run2}, *vals[2] = {"1", "2"};
    for (int r = 0; r < 2; r++) {
        logsum ls = read_log(runs[r]);
        assert_int_equal(ls.epochs, 2);
        fprintf(stderr, "pyramid_levels=%s: best %.4f (epoch %d) final %.4f, %.1f s/epoch\n",
                vals[r], ls.best, ls.best_epoch, ls.final, ls.secs);
        assert_true(csv_field(csv, vals[r], "runs") == 1);
        assert_true(fabs(csv_field(csv, vals[r], "val_acc_mean") - ls.best) < 1e-6);
        assert_true(fabs(csv_field(csv, vals[r], "val_acc_min") - ls.best) < 1e-6);
        assert_true(fabs(csv_field(csv, vals[r], "val_acc_max") - ls.best) < 1e-6);
        assert_true(csv_field(csv, vals[r], "val_acc_std") == 0);
        assert_true(fabs(csv_field(csv, vals[r], "val_f1_mean") - ls.f1) < 1e-6);
        assert_true(fabs(csv_field(csv, vals[r], "val_score_mean") - ls.score) < 1e-6);
        assert_true(fabs(csv_field(csv, vals[r], "final_acc_mean") - ls.final) < 1e-6);
        assert_true(fabs(csv_field(csv, vals[r], "sec_per_epoch") - ls.secs) < 0.006);
        assert_true(isnan(csv_field(csv, vals[r], "test_acc_mean")));
        assert_true(csv_field(csv, vals[r], "params") > 1e6);
    }
    // one pyramid level fewer: fewer parameters
    assert_true(csv_field(csv, "1", "params") < csv_field(csv, "2", "params"));
    free(csv);
    snprintf(p, sizeof p, "%s/summary.md", dir);
    char *md = slurp(p);
    assert_non_null(md);
    assert_non_null(strstr(md, "| model.pyramid_levels | runs | best val acc | macro F1 | score | final acc |"));
    assert_non_null(strstr(md, "2 of 2 runs finished"));
    free(md);
    snprintf(p, sizeof p, "%s/summary.png", dir);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(sb.st_size > 1000);
    // 3) again: nothing to do, nothing changed
    snprintf(p, sizeof p, "%s/log.csv", run2);
    char *before = slurp(p);
    assert_int_equal(run_cmd(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "[1/2] model.pyramid_levels=1 seed 123: finished earlier, skipped"));
    assert_non_null(strstr(out, "[2/2] model.pyramid_levels=2 seed 123: finished earlier, skipped"));
    char *after = slurp(p);
    assert_string_equal(before, after);
    free(before);
    free(after);
    // TTA through poster eval on a run's best.h5
    snprintf(cmd, sizeof cmd, "eval --checkpoint %s/best.h5 --split test --set eval.tta=flip "
             "--out %s", run2, tp("/eval_tta"));
    rc = run_cmd(cmd, out, sizeof out);
    if (rc) fail_msg("poster eval with TTA failed:\n%s", out);
    assert_non_null(strstr(out, "(eval.tta = flip)"));
    assert_int_equal(run_cmd("help", out, sizeof out), 0);
    assert_non_null(strstr(out, "  sweep "));
}

static void test_long_sweep(void **st) {
    (void)st;
    if (!getenv("LONG") || !bin()) tu_skip("the demo-model sweep runs with LONG=1 (make check-long)");
    char err[512], args[2048];
    static char out[65536];
    const char *synth = tp("/synth_long");
    assert_int_equal(synth_write(synth, 50, 1, err, sizeof err), 0);
    // the demo recipe: 2 pyramid levels x 2 seeds, 3 epochs, 2 at once
    snprintf(args, sizeof args,
             "sweep --config configs/demo.ini --set data.root=%s --set train.epochs=3 "
             "--set train.progress=off --set eval.plots=off --grid model.pyramid_levels=1,3 "
             "--seeds 2 --jobs 2 --out %s", synth, tp("/long"));
    time_t t0 = time(NULL);
    int rc = run_cmd(args, out, sizeof out);
    if (rc) fail_msg("sweep failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "4 of 4 runs finished"));
    char p[900];
    snprintf(p, sizeof p, "%s/summary.csv", tp("/long"));
    char *csv = slurp(p);
    const char *vals[2] = {"1", "3"};
    for (int v = 0; v < 2; v++) {
        double acc[2];
        for (int s = 0; s < 2; s++) {
            char dir[900];
            snprintf(dir, sizeof dir, "%s/long/model.pyramid_levels=%s/seed%d", g_tmp, vals[v],
                     123 + s);
            acc[s] = read_log(dir).best;
        }
        double mean = (acc[0] + acc[1]) / 2, sd = fabs(acc[0] - acc[1]) / sqrt(2.0);
        assert_true(csv_field(csv, vals[v], "runs") == 2);
        assert_true(fabs(csv_field(csv, vals[v], "val_acc_mean") - mean) < 1e-6);
        assert_true(fabs(csv_field(csv, vals[v], "val_acc_std") - sd) < 1e-6);
        assert_true(mean > 1.0 / 7);   // above chance after 3 epochs
    }
    free(csv);
    snprintf(p, sizeof p, "%s/summary.md", tp("/long"));
    char *md = slurp(p);
    fprintf(stderr, "LONG sweep in %.0f s:\n%s\n", difftime(time(NULL), t0), md);
    free(md);
}

int main(void) {
    h5_quiet();
    snprintf(g_tmp, sizeof g_tmp, "%s", tu_path("/sweep"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_tmp);
    if (system(cmd) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_read_run),
        cmocka_unit_test(test_ablation_config),
        cmocka_unit_test(test_sweep_cli),
        cmocka_unit_test(test_long_sweep),
    };
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    if (rc == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
        system(cmd);
    }
    return rc;
}
