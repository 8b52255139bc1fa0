// libFuzzer target: our HDF5 training checkpoints and state files, read into a
// small fixed model (the tensors of tests/test_h5_robust.c) with an Adam state:
// ckpt_load, the stored config and class names, state_load strict and not,
// and the fine-tuning reader. FUZZ_WRITE_SEEDS=DIR writes valid seed files.
#include "tests/fuzz/fuzz_util.h"
#include "train/checkpoint.h"

static param_store fzc_store;
static optimizer *fzc_opt;

static void fzc_setup(void) {
    if (fzc_opt) return;
    store_init(&fzc_store);
    store_add(&fzc_store, "body.weight", PARAM_TRAINABLE, T_SHAPE(4, 3));
    store_add(&fzc_store, "head.linear.bias", PARAM_TRAINABLE, T_SHAPE(2));
    store_add(&fzc_store, "lm.weight", PARAM_FROZEN, T_SHAPE(3));
    store_add(&fzc_store, "bn.running_mean", PARAM_BUFFER, T_SHAPE(4));
    store_add(&fzc_store, "bn.num_batches_tracked", PARAM_COUNTER, 0, NULL);
    store_finalize(&fzc_store);
    optim_opts o;
    optim_opts_default(&o);
    fzc_opt = optim_create(&fzc_store, &o);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_h5_init();
    fzc_setup();
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (dir) {
        for (int64_t i = 0; i < fzc_store.n_float; i++) fzc_store.data[i] = 0.25f * (float)i;
        for (int64_t i = 0; i < fzc_store.n_train; i++) fzc_store.grad[i] = 0.1f;
        optim_step(fzc_opt);
        ckpt_info ci;
        ckpt_info_init(&ci);
        ci.epoch = 2;
        ci.best_epoch = 1;
        ci.best_acc = 0.5;
        rng r;
        rng_seed(&r, 1);
        ckpt_info_add_rng(&ci, "drop_path", &r);
        double row[CKPT_HIST_COLS] = {1, 1e-3, 2, 0.5, 2, 0.5, 0.5, 0.5, 1};
        ckpt_info_push_hist(&ci, row);
        ckpt_info_push_hist(&ci, row);
        ci.config_text = strdup("[train]\nepochs = 3\n");
        ci.class_names = strdup("a\nb\n");
        char p[1024], err[1024];
        snprintf(p, sizeof p, "%s/ckpt.h5", dir);
        if (ckpt_save(p, &fzc_store, fzc_opt, &ci, err, sizeof err)) fprintf(stderr, "%s\n", err);
        snprintf(p, sizeof p, "%s/state.h5", dir);
        if (state_save(p, &fzc_store, "model", err, sizeof err)) fprintf(stderr, "%s\n", err);
        ckpt_info_free(&ci);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fzc_setup();
    const char *p = fz_file("ckpt.h5", data, size);
    char err[2048] = "";
    ckpt_info ci;
    if (ckpt_load(p, &fzc_store, fzc_opt, &ci, err, sizeof err) == 0) {
        if (ci.n_hist < 0 || ci.epoch < 0) __builtin_trap();
        volatile double s = 0;
        for (int i = 0; i < ci.n_hist * CKPT_HIST_COLS; i++) s += ci.hist[i];
        ckpt_info_free(&ci);
    } else if (!err[0]) {
        __builtin_trap();
    }
    char *text = NULL;
    if (ckpt_read_config(p, &text, err, sizeof err) == 0) free(text);
    text = NULL;
    if (ckpt_read_class_names(p, &text, err, sizeof err) == 0) free(text);
    state_report rep;
    for (int strict = 0; strict < 2; strict++) {
        err[0] = 0;
        if (state_load(p, &fzc_store, strict, &rep, NULL, err, sizeof err) && !err[0])
            __builtin_trap();
    }
    ckpt_load_weights(p, &fzc_store, &rep, NULL, err, sizeof err);
    // Every file, group, dataset and attribute we opened is closed again.
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) __builtin_trap();
    return 0;
}
