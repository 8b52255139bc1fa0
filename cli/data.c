// `poster data check|dump|prepare|synth`: inspect, export, cache and generate
// datasets.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5io.h"
#include "data/data_internal.h"
#include "cli/cli.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: poster data <command> [options]\n\n"
            "  check   --config FILE [--set k=v]... [--split S]\n"
            "          counts per split and class; every missing, unreadable or corrupt image\n"
            "          and malformed line (file:line); exit status 1 if there is any problem\n"
            "  dump    --config FILE --split S --count N --output OUT.h5 [--train-aug --seed S]\n"
            "          the first N preprocessed samples: input [N,3,224,224] float32, target int64\n"
            "  prepare --config FILE --output CACHE.h5\n"
            "          decode every split once into an HDF5 cache; train with data.cache=CACHE.h5\n"
            "  synth   --output DIR [--per-class N] [--seed S]\n"
            "          synthetic cartoon-face expression dataset in the RAF-DB layout (7 classes,\n"
            "          100x100 JPEGs, ~80%% train), plus DIR/montage.png\n\n"
            "Common: --set data.root=PATH (and any data.* key) overrides the config.\n");
}

typedef struct {
    const char *output, *split;
    int count;
    bool train_aug;
    long long seed;
    int per_class;
} cli_args;

// Parses the config options and the command's own flags.
static int parse(int argc, char **argv, config *c, bool need_config, cli_args *a) {
    char err[4096];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0;
    config_init(c);
    train_config_register(c);
    if (config_from_args(c, argc, argv, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "poster data %s: %s\n", argv[0], err);
        free(rest);
        return 2;
    }
    int rc = 0;
    for (int i = 1; i < nrest && !rc; i++) {
        const char *o = rest[i];
        const char *v = i + 1 < nrest ? rest[i + 1] : NULL;
        if (!strcmp(o, "--train-aug")) {
            a->train_aug = true;
            continue;
        }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            rc = 1;
            break;
        }
        if (!v) {
            fprintf(stderr, "poster data %s: unknown or incomplete option %s\n", argv[0], o);
            rc = 2;
            break;
        }
        char *end;
        if (!strcmp(o, "--output") || !strcmp(o, "--out")) a->output = v;
        else if (!strcmp(o, "--split")) a->split = v;
        else if (!strcmp(o, "--count") || !strcmp(o, "--per-class")) {
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 100000000) {
                fprintf(stderr, "poster data %s: %s wants a positive integer, got \"%s\"\n",
                        argv[0], o, v);
                rc = 2;
            }
            if (!strcmp(o, "--count")) a->count = (int)n;
            else a->per_class = (int)n;
        } else if (!strcmp(o, "--seed")) {
            a->seed = strtoll(v, &end, 10);
            if (*end || a->seed < 0) {
                fprintf(stderr, "poster data %s: --seed wants a non-negative integer\n", argv[0]);
                rc = 2;
            }
        } else {
            fprintf(stderr, "poster data %s: unknown option %s\n", argv[0], o);
            rc = 2;
        }
        i++;
    }
    free(rest);
    if (rc) return rc;
    if (need_config && !c->path[0] && c->n == 0) {
        fprintf(stderr, "poster data %s: --config FILE is required\n", argv[0]);
        return 2;
    }
    if (need_config && config_validate(c, err, sizeof err)) {
        fprintf(stderr, "poster data %s: %s\n", argv[0], err);
        return 2;
    }
    return 0;
}

static int cmd_check(config *c, const cli_args *a) {
    const char *splits[] = {"train", "val", "test"};
    int problems = 0, total = 0, nseen = 0;
    char err[4096], **seen = NULL;
    for (int s = 0; s < 3; s++) {
        if (a->split ? strcmp(a->split, splits[s]) : !data_split_exists(c, splits[s])) continue;
        dataset *d;
        char *logbuf = NULL;
        size_t loglen = 0;
        FILE *log = open_memstream(&logbuf, &loglen);
        int orc = dataset_open_ex(c, splits[s], true, log, &d, err, sizeof err);
        fclose(log);
        // Bad lines as errors, each once (RAF-DB's splits share one list).
        for (char *line = logbuf, *e; line && *line; line = e + 1) {
            e = strchr(line, '\n');
            if (!e) e = line + strlen(line);
            const bool last = !*e;
            *e = 0;
            if (!strncmp(line, "skipping: ", 10)) {
                bool dup = false;
                for (int k = 0; k < nseen && !dup; k++) dup = !strcmp(seen[k], line + 10);
                if (!dup) {
                    printf("ERROR %s\n", line + 10);
                    problems++;
                    seen = realloc(seen, (size_t)(nseen + 1) * sizeof(char *));
                    seen[nseen++] = strdup(line + 10);
                }
            } else if (!strstr(line, "(data.skip_bad)")) {
                printf("%s\n", line);
            }
            if (last) break;
        }
        free(logbuf);
        if (orc) {
            printf("ERROR %s\n", err);
            problems++;
            continue;
        }
        dataset_print_counts(d, stdout);
        // Decode everything (in parallel), report in sample order.
        char (*msg)[512] = calloc((size_t)d->n, 512);
#pragma omp parallel
        {
            void *tj = image_tj_decoder();
#pragma omp for schedule(dynamic, 16)
            for (int i = 0; i < d->n; i++) {
                image_u8 im;
                if (!dataset_load(d, i, tj, &im, msg[i], 512)) image_free(&im);
            }
            image_tj_free(tj);
        }
        int bad = 0;
        for (int i = 0; i < d->n; i++)
            if (msg[i][0]) {
                printf("ERROR %s\n", msg[i]);
                bad++;
            }
        printf("  %d of %d images decode%s\n", d->n - bad, d->n, bad ? "; see the errors above" : "");
        problems += bad;
        total += d->n;
        free(msg);
        dataset_close(d);
    }
    for (int k = 0; k < nseen; k++) free(seen[k]);
    free(seen);
    if (problems) printf("check: %d problem%s found\n", problems, problems == 1 ? "" : "s");
    else printf("check: OK, %d samples\n", total);
    return problems ? 1 : 0;
}

static int cmd_dump(config *c, const cli_args *a) {
    char err[4096];
    if (!a->output || !a->count) {
        fprintf(stderr, "poster data dump: --output OUT.h5 and --count N are required\n");
        return 2;
    }
    dataset *d;
    if (dataset_open(c, a->split ? a->split : "test", &d, err, sizeof err)) {
        fprintf(stderr, "poster data dump: %s\n", err);
        return 1;
    }
    const int n = a->count < d->n ? a->count : d->n;
    loader_opts lo = {.batch_size = n, .train_aug = a->train_aug, .workers = 0, .prefetch = 1,
                      .image_size = 224, .seed = (uint64_t)a->seed, .log = stderr};
    loader *l = loader_create(d, &lo, err, sizeof err);
    int rc = 1;
    float *img = malloc((size_t)n * 3 * 224 * 224 * sizeof(float));
    int64_t *lab = malloc((size_t)n * sizeof(int64_t));
    if (l) {
        loader_start_epoch(l, 0);
        int got = loader_next(l, img, lab, err, sizeof err);
        if (got > 0) {
            char tmp[1100];
            snprintf(tmp, sizeof tmp, "%s.tmp", a->output);
            h5_quiet();
            hid_t f = h5_create(tmp, err, sizeof err);
            if (f >= 0) {
                int r = h5_write_floats(f, "input", img, 4, (int[]){got, 3, 224, 224}, err, sizeof err);
                r |= h5_write_int64s(f, "target", lab, 1, (int[]){got}, err, sizeof err);
                h5_write_attr_i64(f, "/", "version", 1);
                h5_write_attr_str(f, "/", "split", d->split);
                if (h5_close(f)) r = -1;
                char e2[1200];
                if (r) unlink(tmp);
                else if (atomic_commit(tmp, a->output, e2, sizeof e2)) {
                    snprintf(err, sizeof err, "%s", e2);
                    r = -1;
                }
                if (!r) {
                    fprintf(stderr, "wrote %d samples of %s %s to %s\n", got, d->format, d->split,
                            a->output);
                    rc = 0;
                } else {
                    unlink(tmp);
                }
            }
        }
        loader_free(l);
    }
    if (rc) fprintf(stderr, "poster data dump: %s\n", err);
    free(img);
    free(lab);
    dataset_close(d);
    return rc;
}

int cli_data(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static config c;
    cli_args a = {.per_class = 200, .seed = 123};
    const char *cmd = argv[1];
    const bool synth = !strcmp(cmd, "synth");
    if (strcmp(cmd, "check") && strcmp(cmd, "dump") && strcmp(cmd, "prepare") && !synth) {
        fprintf(stderr, "poster data: unknown command '%s'\n\n", cmd);
        usage(stderr);
        return 2;
    }
    int rc = parse(argc - 1, argv + 1, &c, !synth, &a);
    if (rc) return rc == 1 ? 0 : rc;
    char err[4096];
    if (!strcmp(cmd, "check")) return cmd_check(&c, &a);
    if (!strcmp(cmd, "dump")) return cmd_dump(&c, &a);
    if (!strcmp(cmd, "prepare")) {
        if (!a.output) {
            fprintf(stderr, "poster data prepare: --output CACHE.h5 is required\n");
            return 2;
        }
        if (cache_prepare(&c, a.output, stderr, err, sizeof err)) {
            fprintf(stderr, "poster data prepare: %s\n", err);
            return 1;
        }
        fprintf(stderr, "wrote %s; train with --set data.cache=%s\n", a.output, a.output);
        return 0;
    }
    if (!a.output) {
        fprintf(stderr, "poster data synth: --output DIR is required\n");
        return 2;
    }
    if (synth_write(a.output, a.per_class, (uint64_t)a.seed, err, sizeof err)) {
        fprintf(stderr, "poster data synth: %s\n", err);
        return 1;
    }
    fprintf(stderr, "wrote %d faces (7 classes x %d) to %s (RAF-DB layout); preview: "
            "%s/montage.png (rows: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral)\n",
            7 * a.per_class, a.per_class, a.output, a.output);
    return 0;
}
