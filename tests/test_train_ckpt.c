// Checkpoints: bit-exact round trip of model, optimizer, progress, RNGs, history
// and config; a write killed midway leaves the previous file loadable; errors
// name the file and tensor; fine-tuning loads what matches by name and shape.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"
#include "train/checkpoint.h"

static void make_store(param_store *s, int head_out, float base) {
    store_init(s);
    store_add(s, "body.weight", PARAM_TRAINABLE, T_SHAPE(4, 3));
    store_add(s, "head.linear.weight", PARAM_TRAINABLE, T_SHAPE(head_out, 4));
    store_add(s, "head.linear.bias", PARAM_TRAINABLE, T_SHAPE(head_out));
    store_add(s, "lm.weight", PARAM_FROZEN, T_SHAPE(5));
    store_add(s, "bn.running_mean", PARAM_BUFFER, T_SHAPE(4));
    store_add(s, "bn.num_batches_tracked", PARAM_COUNTER, 0, NULL);
    store_finalize(s);
    for (int64_t i = 0; i < s->n_float; i++) s->data[i] = base + 0.25f * (float)i;
    s->counters[0] = 17;
}

static void fill_info(ckpt_info *ci) {
    ckpt_info_init(ci);
    ci->epoch = 3;
    ci->batches_done = 0;
    ci->global_step = 42;
    ci->best_acc = 0.8125;
    ci->best_epoch = 2;
    ci->last_lr = 4e-5 * 0.98 * 0.98;
    rng r;
    rng_seed(&r, 99);
    rng_normal(&r);   // leaves a spare: that state must survive too
    ckpt_info_add_rng(ci, "drop_path", &r);
    double row[CKPT_HIST_COLS];
    for (int e = 0; e < 3; e++) {
        for (int j = 0; j < CKPT_HIST_COLS; j++) row[j] = e * 10 + j + 0.5;
        row[HIST_VAL_LOSS] = e == 1 ? NAN : row[HIST_VAL_LOSS];
        ckpt_info_push_hist(ci, row);
    }
    ci->config_text = strdup("[train]\nepochs = 3\n");
}

static void test_roundtrip(void **st) {
    (void)st;
    param_store a, b;
    make_store(&a, 2, 0.5f);
    optim_opts o;
    optim_opts_default(&o);
    optimizer *oa = optim_create(&a, &o);
    for (int64_t i = 0; i < a.n_train; i++) a.grad[i] = 0.1f * (float)(i % 7) - 0.3f;
    optim_step(oa);
    ckpt_info ci;
    fill_info(&ci);
    char err[1024];
    assert_int_equal(ckpt_save(tu_path("/rt.h5"), &a, oa, &ci, err, sizeof err), 0);
    make_store(&b, 2, -9.0f);
    b.counters[0] = 0;
    optimizer *ob = optim_create(&b, &o);
    ckpt_info cj;
    assert_int_equal(ckpt_load(tu_path("/rt.h5"), &b, ob, &cj, err, sizeof err), 0);
    assert_memory_equal(a.data, b.data, a.n_float * sizeof(float));
    assert_int_equal(b.counters[0], 17);
    assert_int_equal(ob->step, 1);
    assert_memory_equal(oa->buf1, ob->buf1, a.n_train * sizeof(float));
    assert_memory_equal(oa->buf2, ob->buf2, a.n_train * sizeof(float));
    assert_int_equal(cj.epoch, 3);
    assert_int_equal(cj.global_step, 42);
    assert_true(cj.best_acc == 0.8125 && cj.best_epoch == 2);
    assert_true(cj.last_lr == ci.last_lr);
    rng r1, r2;
    assert_int_equal(ckpt_info_get_rng(&ci, "drop_path", &r1), 0);
    assert_int_equal(ckpt_info_get_rng(&cj, "drop_path", &r2), 0);
    assert_true(rng_normal(&r1) == rng_normal(&r2));   // the spare
    assert_true(rng_u64(&r1) == rng_u64(&r2));
    assert_int_equal(cj.n_hist, 3);
    assert_true(isnan(cj.hist[1 * CKPT_HIST_COLS + HIST_VAL_LOSS]));
    assert_true(cj.hist[2 * CKPT_HIST_COLS + HIST_SECONDS] == ci.hist[2 * CKPT_HIST_COLS + HIST_SECONDS]);
    assert_string_equal(cj.config_text, ci.config_text);
    char *text = NULL;
    assert_int_equal(ckpt_read_config(tu_path("/rt.h5"), &text, err, sizeof err), 0);
    assert_string_equal(text, "[train]\nepochs = 3\n");
    free(text);
    ckpt_info_free(&ci);
    ckpt_info_free(&cj);
    optim_free(oa);
    optim_free(ob);
    store_free(&a);
    store_free(&b);
}

static void test_atomic_kill(void **st) {
    (void)st;
    const char *path = tu_path("/atomic.h5");
    remove(tu_path("/atomic.h5.tmp"));
    param_store a;
    make_store(&a, 2, 1.0f);
    ckpt_info ci;
    fill_info(&ci);
    char err[1024];
    assert_int_equal(ckpt_save(path, &a, NULL, &ci, err, sizeof err), 0);
    // A child overwrites it with other values and is killed in the middle.
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        param_store b;
        make_store(&b, 2, 100.0f);
        ckpt_fault_inject = 1;
        ckpt_save(path, &b, NULL, &ci, err, sizeof err);
        _exit(0);   // not reached: the hook kills the process
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(access(tu_path("/atomic.h5.tmp"), F_OK), 0);   // half-written
    param_store c;
    make_store(&c, 2, -1.0f);
    ckpt_info cj;
    assert_int_equal(ckpt_load(path, &c, NULL, &cj, err, sizeof err), 0);
    assert_memory_equal(a.data, c.data, a.n_float * sizeof(float));   // the old file
    ckpt_info_free(&cj);
    // The next save goes through and replaces it.
    for (int64_t i = 0; i < a.n_float; i++) a.data[i] += 1;
    assert_int_equal(ckpt_save(path, &a, NULL, &ci, err, sizeof err), 0);
    assert_int_equal(ckpt_load(path, &c, NULL, NULL, err, sizeof err), 0);
    assert_memory_equal(a.data, c.data, a.n_float * sizeof(float));
    assert_int_not_equal(access(tu_path("/atomic.h5.tmp"), F_OK), 0);
    ckpt_info_free(&ci);
    store_free(&a);
    store_free(&c);
}

static void test_errors_and_init(void **st) {
    (void)st;
    char err[1024];
    param_store a, b;
    make_store(&a, 2, 3.0f);
    ckpt_info ci;
    fill_info(&ci);
    assert_int_equal(ckpt_save(tu_path("/e.h5"), &a, NULL, &ci, err, sizeof err), 0);
    assert_int_not_equal(ckpt_load(tu_path("/missing.h5"), &a, NULL, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "missing.h5"));
    hid_t f = h5_create(tu_path("/other.h5"), err, sizeof err);
    h5_write_attr_str(f, "/", "format", "something-else");
    h5_close(f);
    assert_int_not_equal(ckpt_load(tu_path("/other.h5"), &a, NULL, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "not a POSTER training checkpoint"));
    // A model with a 3-class head: strict load refuses naming the tensor...
    make_store(&b, 3, 0.0f);
    assert_int_not_equal(ckpt_load(tu_path("/e.h5"), &b, NULL, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "head.linear"));
    // ...fine-tuning loads the rest and keeps the head's initialization.
    state_report rep;
    memset(&rep, 0, sizeof rep);
    FILE *log = fopen(tu_path("/init.log"), "w");
    assert_int_equal(ckpt_load_weights(tu_path("/e.h5"), &b, &rep, log, err, sizeof err), 0);
    fclose(log);
    assert_int_equal(rep.misshaped, 2);
    param *bw = store_find(&b, "body.weight"), *aw = store_find(&a, "body.weight");
    assert_memory_equal(bw->t.data, aw->t.data, 12 * sizeof(float));
    param *hb = store_find(&b, "head.linear.bias");
    assert_true(hb->t.data[0] != store_find(&a, "head.linear.bias")->t.data[0]);
    ckpt_info_free(&ci);
    store_free(&a);
    store_free(&b);
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_atomic_kill),
        cmocka_unit_test(test_errors_and_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
