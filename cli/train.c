// `poster train --config FILE [--set k=v] [--resume CKPT] [--init CKPT] [--out DIR]`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/checkpoint.h"
#include "common/dist.h"
#include "cli/cli.h"
#include "train/trainer.h"

static void usage(FILE *f, const config *c) {
    fprintf(f,
            "usage: poster train --config FILE [--set section.key=value]... [--resume CKPT]\n"
            "                    [--init WEIGHTS] [--out DIR]\n\n"
            "  --config FILE    INI recipe (configs/rafdb.ini, configs/demo.ini, ...)\n"
            "  --set k=v        override one key (repeatable), e.g. --set train.epochs=10\n"
            "  --resume CKPT    continue a run from its last.h5 (configuration read from the\n"
            "                   checkpoint; --config/--set still apply on top), bit-identical\n"
            "                   to an uninterrupted run with the same thread count\n"
            "  --init WEIGHTS   start from these weights (fine-tuning): every tensor whose name\n"
            "                   and shape match is loaded, the rest (e.g. a head with another\n"
            "                   number of classes) keeps its fresh initialization\n"
            "  --out DIR        output folder (train.out_dir)\n\nkeys:\n");
    if (c) config_print_keys(c, f);
}

// The configuration text a checkpoint stores, parsed in memory.
int cli_load_ckpt_config(config *c, const char *ckpt, char *err, size_t errlen) {
    char *text = NULL;
    if (ckpt_read_config(ckpt, &text, err, errlen)) return -1;
    char label[1200];
    snprintf(label, sizeof label, "%.1000s (stored configuration)", ckpt);
    int rc = config_load_text(c, text, label, err, errlen);
    free(text);
    return rc;
}

static int train_main(int argc, char **argv) {
    static config c;   // large: keep it off the stack
    config_init(&c);
    train_config_register(&c);
    char err[4096];
    const char *resume = NULL, *init = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout, &c);
            return 0;
        }
        if (!strcmp(argv[i], "--resume") && i + 1 < argc) resume = argv[i + 1];
    }
    if (resume && cli_load_ckpt_config(&c, resume, err, sizeof err)) {
        fprintf(stderr, "poster train: %s\n", err);
        return 1;
    }
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0;
    if (config_from_args(&c, argc, argv, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "poster train: %s\n", err);
        free(rest);
        return 1;
    }
    for (int i = 1; i < nrest; i++) {
        const char *a = rest[i];
        const char **dst = !strcmp(a, "--resume") ? &resume
                           : !strcmp(a, "--init") ? &init
                           : !strcmp(a, "--out")  ? &out
                                                  : NULL;
        if (!dst || i + 1 >= nrest) {
            fprintf(stderr, "poster train: %s '%s'\n\n", dst ? "missing value after" : "unknown argument", a);
            usage(stderr, NULL);
            free(rest);
            return 2;
        }
        *dst = rest[++i];
    }
    free(rest);
    if (!c.path[0] && !resume) {
        fprintf(stderr, "poster train: --config FILE (or --resume CKPT) is required\n\n");
        usage(stderr, NULL);
        return 2;
    }
    if (resume && init) {
        fprintf(stderr, "poster train: --resume and --init exclude each other\n");
        return 2;
    }
    if (out) {
        char kv[700];
        snprintf(kv, sizeof kv, "train.out_dir=%s", out);
        if (config_set(&c, kv, err, sizeof err)) {
            fprintf(stderr, "poster train: %s\n", err);
            return 2;
        }
    }
    if (config_validate(&c, err, sizeof err)) {
        fprintf(stderr, "poster train: %s\n", err);
        return 1;
    }
    train_args a = {resume, init, stderr};
    int rc = train_run(&c, &a, NULL, err, sizeof err);
    if (rc) {
        fprintf(stderr, "poster train: %s\n", err);
        return 1;
    }
    return 0;
}

// Under mpirun every rank runs the same command (see common/dist.h); a rank that
// fails ends the whole job (dist_finalize), so no rank waits for a failed one.
int cli_train(int argc, char **argv) {
    char err[512];
    if (dist_init(&argc, &argv, err, sizeof err)) {
        fprintf(stderr, "poster train: %s\n", err);
        return 1;
    }
    int rc = train_main(argc, argv);
    dist_finalize(rc);
    return rc;
}
