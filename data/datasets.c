// Datasets on disk (docs/POSTER.md, "Datasets on disk"): the data.* keys, the
// dataset structure, and the table of formats (one file each: rafdb.c,
// ferplus.c, affectnet.c, custom.c) through which a split is opened, its
// existence asked, and the channel order decided. Every problem names the file
// and line; with data.skip_bad the bad lines are named in the log, counted and
// left out, never dropped silently.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data_internal.h"

static const config_key k_data[] = {
    {"data.format", CK_ENUM, "rafdb", 0, 0, "rafdb|ferplus|affectnet|folder|csv",
     "dataset layout (README, \"Datasets\")"},
    {"data.root", CK_STR, "", 0, 0, NULL, "dataset folder"},
    {"data.num_classes", CK_INT, "0", 0, DATA_MAX_CLASSES, NULL,
     "classes (0 = the dataset's own: RAF-DB 7, FERPlus 8, AffectNet model.num_classes or 7, "
     "custom: from the train split)"},
    {"data.channel_order", CK_ENUM, "auto", 0, 0, "auto|bgr|rgb",
     "tensor channel order; auto = official (RAF-DB bgr as OpenCV, others rgb)"},
    {"data.skip_bad", CK_BOOL, "off", 0, 0, NULL,
     "skip bad samples (missing/corrupt images, bad lines), naming each, instead of stopping"},
    {"data.cache", CK_STR, "", 0, 0, NULL,
     "HDF5 cache from `poster data prepare` (read instead of data.root when set)"},
    {"data.workers", CK_INT, "2", 0, 256, NULL, "decoding threads (0 = decode in the caller)"},
    {"data.sampler", CK_ENUM, "auto", 0, 0, "auto|shuffle|balanced|sequential",
     "training order; auto = official (AffectNet balanced with replacement, else shuffle); "
     "sequential = file order every epoch (comparisons with another implementation)"},
    {"data.augment", CK_BOOL, "on", 0, 0, NULL,
     "official training augmentations; off = training images get the evaluation transform"},
    {"data.image_size", CK_ENUM, "224", 0, 0, "224|112",
     "224, or 112: only the pixels x[:, :, ::2, ::2] the network reads (same values)"},
    {"data.affectnet_layout", CK_ENUM, "auto", 0, 0, "auto|lists|original|npy",
     "AffectNet: (a) lists = train_set/train_annotations_Nclass.txt, (b) original = "
     "Manually_Annotated_file_lists/*.csv, (c) npy = train_set/annotations/N_exp.npy"},
    {"data.train_list", CK_STR, "", 0, 0, NULL, "csv format: train list (default ROOT/train.csv)"},
    {"data.val_list", CK_STR, "", 0, 0, NULL, "csv format: val list (default ROOT/val.csv)"},
    {"data.test_list", CK_STR, "", 0, 0, NULL, "csv format: test list (default ROOT/test.csv)"},
    {"data.classes", CK_STR, "", 0, 0, NULL,
     "csv/folder: class names in label order, comma-separated (default: sorted names)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void data_config_register(config *c) { config_register(c, k_data); }

// ---------------------------------------------------------------------------
// The structure

dataset *dataset_alloc(void) {
    dataset *d = calloc(1, sizeof *d);
    d->cache_fd = -1;
    return d;
}

void dataset_push(dataset *d, const char *path, int label) {
    // Capacity doubles at powers of two.
    if ((d->n & (d->n - 1)) == 0) {
        int cap = d->n ? 2 * d->n : 1;
        d->labels = realloc(d->labels, (size_t)cap * sizeof(int));
        d->paths = realloc(d->paths, (size_t)cap * sizeof(char *));
        AG_ASSERT(d->labels && d->paths, "out of memory");
    }
    d->labels[d->n] = label;
    d->paths[d->n] = strdup(path);
    d->n++;
}

void dataset_set_classes(dataset *d, int k, const char *const *names) {
    for (int i = 0; i < d->num_classes; i++) free(d->class_names[i]);
    free(d->class_names);
    d->num_classes = k;
    d->class_names = calloc((size_t)k, sizeof(char *));
    for (int i = 0; i < k; i++) d->class_names[i] = strdup(names[i]);
}

void dataset_close(dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) free(d->paths[i]);
    for (int i = 0; i < d->num_classes; i++) free(d->class_names[i]);
    free(d->paths);
    free(d->labels);
    free(d->class_names);
    free(d->pixels);
    free(d->cache_off);
    free(d->cache_h);
    free(d->cache_w);
    if (d->cache_fd >= 0) close(d->cache_fd);
    free(d);
}

int dataset_size(const dataset *d) { return d->n; }
int dataset_num_classes(const dataset *d) { return d->num_classes; }
const char *dataset_class_name(const dataset *d, int k) {
    return k >= 0 && k < d->num_classes ? d->class_names[k] : "?";
}
int dataset_label(const dataset *d, int i) { return d->labels[i]; }
const char *dataset_source(const dataset *d, int i) { return d->paths[i]; }

void dataset_print_counts(const dataset *d, FILE *f) {
    int *cnt = calloc((size_t)d->num_classes, sizeof(int));
    for (int i = 0; i < d->n; i++) cnt[d->labels[i]]++;
    fprintf(f, "%s %s: %d samples, %d classes\n", d->format, d->split, d->n, d->num_classes);
    for (int k = 0; k < d->num_classes; k++)
        fprintf(f, "  %2d %-12s %8d  (%.1f%%)\n", k, d->class_names[k], cnt[k],
                d->n ? 100.0 * cnt[k] / d->n : 0.0);
    free(cnt);
}

int dataset_load(const dataset *d, int i, void *tj, image_u8 *out, char *err, size_t errlen) {
    AG_ASSERT(i >= 0 && i < d->n, "sample %d of %d", i, d->n);
    if (d->kind == SRC_FILE) return image_load_jpeg(tj, d->paths[i], out, err, errlen);
    if (d->kind == SRC_PIXELS) {
        const size_t np = (size_t)d->ph * d->pw;
        out->h = d->ph;
        out->w = d->pw;
        out->px = malloc(np * 3);
        const uint8_t *g = d->pixels + (size_t)i * np;
        for (size_t p = 0; p < np; p++) out->px[3 * p] = out->px[3 * p + 1] = out->px[3 * p + 2] = g[p];
        return 0;
    }
    const size_t nb = (size_t)d->cache_h[i] * d->cache_w[i] * 3;
    out->h = d->cache_h[i];
    out->w = d->cache_w[i];
    out->px = malloc(nb ? nb : 1);
    ssize_t r = pread(d->cache_fd, out->px, nb, d->cache_off[i]);
    if (r != (ssize_t)nb) {
        snprintf(err, errlen, "%s: cache read failed (truncated file?)", d->paths[i]);
        image_free(out);
        return -1;
    }
    return 0;
}


// ---------------------------------------------------------------------------
// The table of formats

static const data_format *const k_formats[] = {&data_format_rafdb, &data_format_ferplus,
                                               &data_format_affectnet, &data_format_folder,
                                               &data_format_csv};

const data_format *data_format_find(const char *name) {
    for (size_t i = 0; i < sizeof k_formats / sizeof *k_formats; i++)
        if (!strcmp(k_formats[i]->name, name)) return k_formats[i];
    return NULL;
}

bool data_channel_bgr(const config *c, bool official_bgr) {
    const char *co = config_str(c, "data.channel_order");
    return !strcmp(co, "bgr") || (!strcmp(co, "auto") && official_bgr);
}

bool data_format_bgr(const config *c) {
    const data_format *f = data_format_find(config_str(c, "data.format"));
    return data_channel_bgr(c, f && f->bgr);
}

const char *data_split_stand_in(const char *split) {
    return !strcmp(split, "val") ? "test" : !strcmp(split, "test") ? "val" : split;
}

static int split_index(const char *split) {
    return !strcmp(split, "train") ? 0 : !strcmp(split, "val") ? 1 : !strcmp(split, "test") ? 2 : -1;
}

bool data_split_exists(const config *c, const char *split) {
    const data_format *f = data_format_find(config_str(c, "data.format"));
    const int s = split_index(split);
    if (!f || s < 0) return false;
    if (!f->split_path) return !strcmp(f->split_of[s], split);   // its own, not a stand-in
    char p[1200];
    f->split_path(c, config_str(c, "data.root"), split, p, sizeof p);
    return access(p, F_OK) == 0;
}

// ---------------------------------------------------------------------------

int dataset_open_ex(const config *c, const char *split, bool skip_bad, FILE *log, dataset **out,
                    char *err, size_t errlen) {
    *out = NULL;
    const int s = split_index(split);
    if (s < 0) {
        snprintf(err, errlen, "unknown split \"%s\" (train, val or test)", split);
        return -1;
    }
    const char *format = config_str(c, "data.format");
    const char *cache = config_str(c, "data.cache");
    if (*cache) return dataset_open_cache(c, cache, split, out, err, errlen);
    const data_format *fmt = data_format_find(format);
    AG_ASSERT(fmt != NULL, "data.format \"%s\" passed the config check but has no reader",
              format);
    dataset *d = dataset_alloc();
    snprintf(d->format, sizeof d->format, "%s", format);
    snprintf(d->split, sizeof d->split, "%s", split);
    snprintf(d->root, sizeof d->root, "%s", config_str(c, "data.root"));
    d->skip_bad = skip_bad;
    d->bgr = data_channel_bgr(c, fmt->bgr);
    if (!d->root[0] && fmt->needs_root) {
        snprintf(err, errlen, "data.root is empty: set it to the %s folder (--set data.root=...)",
                 format);
        dataset_close(d);
        return -1;
    }
    if (d->root[0] && !parse_is_dir(d->root)) {
        snprintf(err, errlen, "data.root = %s: no such folder", d->root);
        dataset_close(d);
        return -1;
    }
    pctx p = {.skip = skip_bad, .log = log, .err = err, .errlen = errlen};
    int rc = fmt->open(c, d, fmt->split_path ? split : fmt->split_of[s], &p);
    d->bad_at_open = p.nbad;
    long want = config_int(c, "data.num_classes");
    if (!rc && want && want != d->num_classes) {
        snprintf(err, errlen, "data.num_classes = %ld but the %s dataset has %d classes", want,
                 format, d->num_classes);
        rc = -1;
    }
    if (!rc && d->n == 0) {
        snprintf(err, errlen, "%s %s split under %s: no samples", format, split, d->root);
        rc = -1;
    }
    if (rc) {
        dataset_close(d);
        return -1;
    }
    if (p.nbad && log)
        fprintf(log, "%s %s: skipped %d bad line%s (data.skip_bad)\n", format, split, p.nbad,
                p.nbad == 1 ? "" : "s");
    *out = d;
    return 0;
}

int dataset_open(const config *c, const char *split, dataset **out, char *err, size_t errlen) {
    return dataset_open_ex(c, split, config_bool(c, "data.skip_bad"), stderr, out, err, errlen);
}
