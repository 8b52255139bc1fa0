// `poster eval --checkpoint CKPT [--config FILE] [--split test] [--out DIR]`
// `poster predict --checkpoint CKPT IMAGE...`
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/h5io.h"
#include "autograd/ops.h"
#include "data/data_internal.h"
#include "eval/metrics.h"
#include "eval/plot.h"
#include "eval/tta.h"
#include "layers/pretrained.h"
#include "layers/state_io.h"
#include "layers/weights.h"
#include "train/checkpoint.h"
#include "cli/cli.h"
#include "train/trainer.h"

// Loads weights strictly from a training checkpoint, a poster-state file or an
// official PyTorch checkpoint (the format is detected).
static int load_weights_strict(const char *path, param_store *s, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");   // not HDF5: a PyTorch (official POSTER) checkpoint
    unsigned char sig[8] = {0};
    size_t got = fp ? fread(sig, 1, 8, fp) : 0;
    if (fp) fclose(fp);
    if (fp && (got < 8 || memcmp(sig, "\x89HDF\r\n\x1a\n", 8)))
        return poster_load_pth_strict(s, path, stdout, err, errlen);
    h5_quiet();
    hid_t f = h5_open_read(path, err, errlen);
    if (f < 0) return -1;
    char fmt[64] = "";
    h5_read_attr_str(f, "/", "format", fmt, sizeof fmt);
    h5_close(f);
    // a checkpoint's own checks (version, stored configuration) come with ckpt_load
    if (!strcmp(fmt, CKPT_FORMAT)) return ckpt_load(path, s, NULL, NULL, err, errlen);
    return weights_load(s, path, "", true, NULL, NULL, err, errlen);
}

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: poster eval --checkpoint CKPT [--config FILE] [--set k=v]... [--split NAME]\n"
            "                   [--out DIR]\n\n"
            "  --checkpoint CKPT  a training checkpoint (best.h5, last.h5) or a weights file;\n"
            "                     the configuration stored in a checkpoint is used, --config\n"
            "                     and --set apply on top (e.g. another data.root); an official\n"
            "                     POSTER checkpoint (.pth) is read directly, with --config\n"
            "  --split NAME       split to evaluate (default eval.split: val; test, train)\n"
            "  --out DIR          where eval_<split>.csv and eval_<split>_confusion.png go\n"
            "                     (default: the checkpoint's folder)\n"
            "  --set eval.tta=flip  average the softmax of every image and its horizontal flip\n");
}

// Shared by eval and predict: configuration from the checkpoint, then args.
static int load_config(config *c, const char *ckpt, int argc, char **argv, char **rest,
                       int *nrest, char *err, size_t errlen) {
    config_init(c);
    train_config_register(c);
    if (access(ckpt, R_OK) != 0) {
        snprintf(err, errlen, "%s: %s", ckpt, strerror(errno));
        return -1;
    }
    char e2[1024];
    bool from_ckpt = cli_load_ckpt_config(c, ckpt, e2, sizeof e2) == 0;
    if (config_from_args(c, argc, argv, rest, nrest, err, errlen)) return -1;
    if (!from_ckpt && !c->path[0]) {
        snprintf(err, errlen, "%s; give the model and data with --config FILE", e2);
        return -1;
    }
    return config_validate(c, err, errlen);
}

static const char *find_arg(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return NULL;
}

int cli_eval(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            eval_usage(stdout);
            return 0;
        }
    const char *ckpt = find_arg(argc, argv, "--checkpoint");
    if (!ckpt) {
        fprintf(stderr, "poster eval: --checkpoint CKPT is required\n\n");
        eval_usage(stderr);
        return 2;
    }
    static config c;
    char err[4096];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0;
    if (load_config(&c, ckpt, argc, argv, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "poster eval: %s\n", err);
        free(rest);
        return 1;
    }
    const char *split = config_str(&c, "eval.split"), *out = NULL;
    for (int i = 1; i < nrest; i++) {
        if (!strcmp(rest[i], "--checkpoint") && i + 1 < nrest) i++;
        else if (!strcmp(rest[i], "--split") && i + 1 < nrest) split = rest[++i];
        else if (!strcmp(rest[i], "--out") && i + 1 < nrest) out = rest[++i];
        else {
            fprintf(stderr, "poster eval: unknown argument '%s'\n\n", rest[i]);
            eval_usage(stderr);
            free(rest);
            return 2;
        }
    }
    free(rest);
    ops_set_threads((int)config_int(&c, "train.threads"));
    dataset *d = NULL;
    if (dataset_open(&c, split, &d, err, sizeof err)) {
        fprintf(stderr, "poster eval: %s\n", err);
        return 1;
    }
    poster_opts po;
    poster_model *m = NULL;
    int rc = 1;
    if (train_model_opts(&c, dataset_num_classes(d), &po, err, sizeof err) ||
        !(m = poster_create(&po, 0, err, sizeof err)) ||
        load_weights_strict(ckpt, poster_store(m), err, sizeof err)) {
        fprintf(stderr, "poster eval: %s\n", err);
        goto done;
    }
    loss_opts lo;
    if (loss_opts_from_config(&c, &lo, err, sizeof err)) {
        fprintf(stderr, "poster eval: %s\n", err);
        goto done;
    }
    loader_opts lopt;
    train_loader_opts(&c, &lopt, (int)config_int(&c, "eval.batch_size"), false);
    eval_args ea = {(int)config_int(&c, "eval.batch_size"), lopt.image_size, lopt.workers, &lo, 0,
                    tta_from_config(&c)};
    confusion cm;
    confusion_init(&cm, po.num_classes);
    double loss;
    fprintf(stderr, "evaluating %s on split '%s' (%d samples)%s\n", ckpt, split, dataset_size(d),
            ea.tta ? ", TTA: mean softmax of the image and its horizontal flip" : "");
    if (eval_model(m, d, &ea, &cm, &loss, NULL, err, sizeof err)) {
        fprintf(stderr, "poster eval: %s\n", err);
        confusion_free(&cm);
        goto done;
    }
    metrics mt;
    metrics_compute(&cm, &mt);
    const char **names = malloc((size_t)po.num_classes * sizeof(char *));
    for (int k = 0; k < po.num_classes; k++) names[k] = dataset_class_name(d, k);
    printf("checkpoint %s, split %s%s\nloss      %.4f\n", ckpt, split,
           ea.tta ? " (eval.tta = flip)" : "", loss);
    metrics_print(&mt, &cm, names, stdout);
    char dir[1024], path[1200], title[256];
    if (out) snprintf(dir, sizeof dir, "%s", out);
    else {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", ckpt);
        snprintf(dir, sizeof dir, "%s", dirname(tmp));
    }
    mkdir(dir, 0777);
    rc = 0;
    snprintf(path, sizeof path, "%s/eval_%s.csv", dir, split);
    if (metrics_write_csv(path, &mt, &cm, names, err, sizeof err)) {
        fprintf(stderr, "poster eval: %s\n", err);
        rc = 1;
    } else printf("\nwrote %s\n", path);
    snprintf(path, sizeof path, "%s/eval_%s_confusion.png", dir, split);
    snprintf(title, sizeof title, "%s: accuracy %.2f%%", split, 100 * mt.accuracy);
    if (plot_confusion(path, cm.m, cm.k, names, title, err, sizeof err)) {
        fprintf(stderr, "poster eval: %s\n", err);
        rc = 1;
    } else printf("wrote %s\n", path);
    free(names);
    metrics_free(&mt);
    confusion_free(&cm);
done:
    if (m) poster_free(m);
    dataset_close(d);
    ag_step_reset();
    return rc;
}

// ---------------------------------------------------------------------------
// predict

static void predict_usage(FILE *f) {
    fprintf(f,
            "usage: poster predict --checkpoint CKPT [--top K] [--set k=v]... IMAGE...\n\n"
            "  For each JPEG: the top K classes (default 3) with their probabilities.\n"
            "  Model, class names and preprocessing (channel order, resize, normalization,\n"
            "  as in evaluation) come from the checkpoint. --set eval.tta=flip averages the\n"
            "  probabilities of the image and its horizontal flip.\n");
}

int cli_predict(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            predict_usage(stdout);
            return 0;
        }
    const char *ckpt = find_arg(argc, argv, "--checkpoint");
    if (!ckpt) {
        fprintf(stderr, "poster predict: --checkpoint CKPT is required\n\n");
        predict_usage(stderr);
        return 2;
    }
    static config c;
    char err[4096];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0, top = 3, nimg = 0;
    const char **imgs = malloc((size_t)(argc + 1) * sizeof(char *));
    if (load_config(&c, ckpt, argc, argv, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "poster predict: %s\n", err);
        free(rest);
        free(imgs);
        return 1;
    }
    for (int i = 1; i < nrest; i++) {
        if (!strcmp(rest[i], "--checkpoint") && i + 1 < nrest) i++;
        else if (!strcmp(rest[i], "--top") && i + 1 < nrest) top = atoi(rest[++i]);
        else if (!strncmp(rest[i], "--", 2)) {
            fprintf(stderr, "poster predict: unknown option '%s'\n\n", rest[i]);
            predict_usage(stderr);
            free(rest);
            free(imgs);
            return 2;
        } else imgs[nimg++] = rest[i];
    }
    free(rest);
    if (!nimg) {
        fprintf(stderr, "poster predict: no images given\n\n");
        predict_usage(stderr);
        free(imgs);
        return 2;
    }
    ops_set_threads((int)config_int(&c, "train.threads"));
    poster_opts po;
    poster_model *m = NULL;
    int rc = 1;
    if (train_model_opts(&c, 0, &po, err, sizeof err) ||
        !(m = poster_create(&po, 0, err, sizeof err)) ||
        load_weights_strict(ckpt, poster_store(m), err, sizeof err)) {
        fprintf(stderr, "poster predict: %s\n", err);
        goto done;
    }
    const int K = po.num_classes;
    if (top < 1) top = 1;
    if (top > K) top = K;
    // Class names from the checkpoint, one per line; numbers when absent.
    char *names_text = NULL;
    const char **names = calloc((size_t)K, sizeof(char *));
    if (ckpt_read_class_names(ckpt, &names_text, err, sizeof err) == 0) {
        char *save = NULL;
        int k = 0;
        for (char *t = strtok_r(names_text, "\n", &save); t && k < K; t = strtok_r(NULL, "\n", &save))
            names[k++] = t;
    }
    const bool bgr = data_format_bgr(&c);   // the format table's channel rule
    const int S = (int)config_int(&c, "data.image_size"), step = 224 / S;
    float *x = malloc((size_t)3 * S * S * sizeof(float));
    float *prob = malloc((size_t)K * sizeof(float));
    const int tta = tta_from_config(&c);
    aug_scratch scr;
    memset(&scr, 0, sizeof scr);
    rc = 0;
    for (int i = 0; i < nimg; i++) {
        image_u8 im;
        memset(&im, 0, sizeof im);
        if (image_load_jpeg(NULL, imgs[i], &im, err, sizeof err)) {
            fprintf(stderr, "poster predict: %s\n", err);
            rc = 1;
            continue;
        }
        aug_apply(&im, NULL, bgr, 224, step, &scr, x);   // evaluation preprocessing
        image_free(&im);
        // eval.tta = flip: the mean softmax of the image and its mirror image
        tta_probs(m, tensor_from(4, (int[]){1, 3, S, S}, x), tta, prob);
        printf("%s", imgs[i]);
        bool *used = calloc((size_t)K, sizeof(bool));
        for (int t = 0; t < top; t++) {
            int best = -1;
            for (int k = 0; k < K; k++)
                if (!used[k] && (best < 0 || prob[k] > prob[best])) best = k;
            used[best] = true;
            char num[16];
            snprintf(num, sizeof num, "%d", best);
            printf("%s %s %.4f", t ? "," : ":", names[best] ? names[best] : num,
                   (double)prob[best]);
        }
        printf("\n");
        free(used);
        ag_step_reset();
    }
    aug_scratch_free(&scr);
    free(x);
    free(prob);
    free(names);
    free(names_text);
done:
    if (m) poster_free(m);
    free(imgs);
    return rc;
}
