// Datasets on disk (docs/POSTER.md, "Datasets on disk"): RAF-DB basic,
// FERPlus (fer2013.csv + fer2013new.csv, majority vote), AffectNet in three
// layouts, and custom data (a folder per class, or a "path,label" CSV list).
// Every problem names the file and line; with data.skip_bad the bad lines are
// named in the log, counted and left out, never dropped silently.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"

static const config_key k_data[] = {
    {"data.format", CK_ENUM, "rafdb", 0, 0, "rafdb|ferplus|affectnet|folder|csv",
     "dataset layout (README, \"Datasets\")"},
    {"data.root", CK_STR, "", 0, 0, NULL, "dataset folder"},
    {"data.num_classes", CK_INT, "0", 0, 10000, NULL,
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

static const char *const k_rafdb_classes[] = {"Surprise", "Fear",    "Disgust", "Happiness",
                                              "Sadness",  "Anger",   "Neutral"};
static const char *const k_ferplus_classes[] = {"Neutral", "Happiness", "Surprise", "Sadness",
                                                "Anger",   "Disgust",   "Fear",     "Contempt"};
static const char *const k_affectnet_classes[] = {"Neutral", "Happy",   "Sad",   "Surprise",
                                                  "Fear",    "Disgust", "Anger", "Contempt"};

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
// Parsing helpers

typedef struct pctx {
    const char *file;
    int line;
    bool skip;      // data.skip_bad
    FILE *log;
    int nbad;
    char *err;
    size_t errlen;
} pctx;

// A bad line: fatal (returns -1, err set) or, with skip_bad, logged (returns 0).
__attribute__((format(printf, 2, 3))) static int bad(pctx *p, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->line > 0) snprintf(p->err, p->errlen, "%s:%d: %s", p->file, p->line, msg);
    else snprintf(p->err, p->errlen, "%s: %s", p->file, msg);
    if (!p->skip) return -1;
    p->nbad++;
    if (p->log) fprintf(p->log, "skipping: %s\n", p->err);
    return 0;
}

// Reads a line without its end-of-line; false at EOF.
static bool read_line(FILE *f, char **buf, size_t *cap, int *lineno) {
    ssize_t n = getline(buf, cap, f);
    if (n < 0) return false;
    (*lineno)++;
    while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r')) (*buf)[--n] = 0;
    return true;
}

static bool blank(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    return !*s;
}

static bool parse_int(const char *s, long *v) {
    while (isspace((unsigned char)*s)) s++;
    if (!*s) return false;
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end)) end++;
    return !errno && !*end;
}

static bool is_dir(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}
static bool is_file(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

// Splits a CSV line in place (double quotes honoured). Returns the field count.
static int csv_split(char *s, char **fields, int max) {
    int n = 0;
    while (n < max) {
        char *out = s;
        fields[n++] = s;
        if (*s == '"') {
            s++;
            for (;;) {
                if (!*s) break;
                if (*s == '"' && s[1] == '"') {
                    *out++ = '"';
                    s += 2;
                } else if (*s == '"') {
                    s++;
                    break;
                } else {
                    *out++ = *s++;
                }
            }
            while (*s && *s != ',') s++;
        } else {
            while (*s && *s != ',') *out++ = *s++;
        }
        char sep = *s;
        *out = 0;
        if (sep != ',') return n;
        s++;
    }
    return n;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static FILE *open_list(pctx *p, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) snprintf(p->err, p->errlen, "%s: cannot open: %s", path, strerror(errno));
    return f;
}

// ---------------------------------------------------------------------------
// RAF-DB basic

static int open_rafdb(dataset *d, const char *split, pctx *p) {
    const char *prefix = !strcmp(split, "train") ? "train_" : "test_";
    char list[1024];
    snprintf(list, sizeof list, "%s/EmoLabel/list_patition_label.txt", d->root);
    FILE *f = open_list(p, list);
    if (!f) return -1;
    p->file = list;
    p->line = 0;
    char *buf = NULL, path[1200];
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && read_line(f, &buf, &cap, &p->line)) {
        if (blank(buf)) continue;
        char name[512], extra[8];
        long lab;
        char ls[64];
        int nf = sscanf(buf, "%511s %63s %7s", name, ls, extra);
        if (nf != 2) {
            rc = bad(p, "expected \"<name>.jpg <label 1..7>\", got \"%.80s\"", buf);
            continue;
        }
        if (!parse_int(ls, &lab) || lab < 1 || lab > 7) {
            rc = bad(p, "label \"%s\" is not in 1..7", ls);
            continue;
        }
        if (strncmp(name, "train_", 6) && strncmp(name, "test_", 5)) {
            rc = bad(p, "name \"%s\" starts with neither train_ nor test_", name);
            continue;
        }
        if (strncmp(name, prefix, strlen(prefix))) continue;
        char *dot = strrchr(name, '.');
        if (dot) *dot = 0;
        snprintf(path, sizeof path, "%s/Image/aligned/%s_aligned.jpg", d->root, name);
        dataset_push(d, path, (int)lab - 1);
    }
    free(buf);
    fclose(f);
    dataset_set_classes(d, 7, k_rafdb_classes);
    return rc;
}

// ---------------------------------------------------------------------------
// FERPlus: fer2013.csv (emotion, pixels, Usage) row by row with fer2013new.csv
// (Usage, Image name, 10 vote columns). Majority mode as the FERPlus authors'
// code: votes <= 1 zeroed; the top class (first on ties) counts when its votes
// exceed half the remaining total, else the face is unknown; unknown/NF dropped.

int ferplus_majority(const double votes_in[10]) {
    double v[10], sum = 0, maxv = 0;
    int arg = 0;
    for (int k = 0; k < 10; k++) {
        v[k] = votes_in[k] < 1.0 + 2.220446049250313e-16 ? 0.0 : votes_in[k];
        sum += v[k];
    }
    for (int k = 0; k < 10; k++)
        if (v[k] > maxv) {
            maxv = v[k];
            arg = k;
        }
    if (!(maxv > 0.5 * sum)) return -1;   // unknown
    return arg < 8 ? arg : -1;            // unknown or NF: dropped
}

static int open_ferplus(dataset *d, const char *split, pctx *p) {
    const char *usage = !strcmp(split, "train") ? "Training"
                        : !strcmp(split, "val") ? "PublicTest"
                                                : "PrivateTest";
    char f1[1024], f2[1024];
    snprintf(f1, sizeof f1, "%s/fer2013.csv", d->root);
    snprintf(f2, sizeof f2, "%s/fer2013new.csv", d->root);
    FILE *a = open_list(p, f1);
    if (!a) return -1;
    FILE *b = open_list(p, f2);
    if (!b) {
        fclose(a);
        return -1;
    }
    char *la = NULL, *lb = NULL;
    size_t ca = 0, cb = 0;
    int na = 0, nb = 0, rc = 0, excluded = 0;
    size_t pcap = 0;
    d->ph = d->pw = 48;
    const int NP = 48 * 48;
    // Headers
    bool ha = read_line(a, &la, &ca, &na), hb = read_line(b, &lb, &cb, &nb);
    if (!ha || !strstr(la, "pixels")) {
        p->file = f1;
        p->line = na;
        rc = bad(p, "expected the header \"emotion,pixels,Usage\"");
        if (p->skip) rc = -1;   // a missing header is not a sample: always fatal
    }
    if (!rc && (!hb || !strstr(lb, "Usage"))) {
        p->file = f2;
        p->line = nb;
        rc = bad(p, "expected the header \"Usage,Image name,neutral,...,NF\"");
        if (p->skip) rc = -1;
    }
    while (!rc) {
        bool ga = read_line(a, &la, &ca, &na), gb = read_line(b, &lb, &cb, &nb);
        if (!ga && !gb) break;
        if (ga != gb) {
            p->file = ga ? f2 : f1;
            p->line = ga ? nb + 1 : na + 1;
            snprintf(p->err, p->errlen, "%s ends at line %d but %s has more rows: the two files "
                     "must have the same rows", ga ? f2 : f1, ga ? nb : na, ga ? f1 : f2);
            rc = -1;
            break;
        }
        char *fa[4], *fb[14];
        int nfa = csv_split(la, fa, 4), nfb = csv_split(lb, fb, 14);
        p->file = f2;
        p->line = nb;
        if (nfb != 12) {
            rc = bad(p, "expected 12 columns (Usage, Image name, 10 votes), got %d", nfb);
            continue;
        }
        p->file = f1;
        p->line = na;
        if (nfa != 3) {
            rc = bad(p, "expected 3 columns (emotion, pixels, Usage), got %d", nfa);
            continue;
        }
        char *ua = trim(fa[2]), *ub = trim(fb[0]);
        if (strcmp(ua, ub)) {
            rc = bad(p, "Usage \"%s\" differs from \"%s\" in %s:%d", ua, ub, f2, nb);
            continue;
        }
        if (strcmp(ua, usage)) continue;
        if (!*trim(fb[1])) {
            excluded++;   // no FERPlus image name: not part of FERPlus
            continue;
        }
        double votes[10];
        bool ok = true;
        for (int k = 0; k < 10 && ok; k++) {
            char *e;
            votes[k] = strtod(fb[2 + k], &e);
            ok = e != fb[2 + k] && blank(e) && votes[k] >= 0;
        }
        if (!ok) {
            p->file = f2;
            p->line = nb;
            rc = bad(p, "vote counts must be non-negative numbers");
            continue;
        }
        int lab = ferplus_majority(votes);
        if (lab < 0) {
            excluded++;
            continue;
        }
        // Pixels: 2304 grey values 0..255.
        if ((size_t)(d->n + 1) * NP > pcap) {
            pcap = pcap ? 2 * pcap : (size_t)NP * 1024;
            d->pixels = realloc(d->pixels, pcap);
            AG_ASSERT(d->pixels, "out of memory");
        }
        uint8_t *px = d->pixels + (size_t)d->n * NP;
        char *s = fa[1];
        int cnt = 0;
        ok = true;
        for (;;) {
            while (*s == ' ') s++;
            if (!*s) break;
            char *e;
            long v = strtol(s, &e, 10);
            if (e == s || v < 0 || v > 255 || (*e && *e != ' ')) {
                ok = false;
                break;
            }
            if (cnt < NP) px[cnt] = (uint8_t)v;
            cnt++;
            s = e;
        }
        if (!ok) {
            rc = bad(p, "pixels must be integers 0..255 separated by spaces");
            continue;
        }
        if (cnt != NP) {
            rc = bad(p, "wrong pixel count %d (expected 2304 = 48x48)", cnt);
            continue;
        }
        char src[1400];
        snprintf(src, sizeof src, "%s:%d (%s)", f1, na, trim(fb[1]));
        dataset_push(d, src, lab);
    }
    free(la);
    free(lb);
    fclose(a);
    fclose(b);
    d->kind = SRC_PIXELS;
    dataset_set_classes(d, 8, k_ferplus_classes);
    if (!rc && excluded && p->log)
        fprintf(p->log, "ferplus %s: %d rows left out by the majority vote (unknown, "
                "non-face or no FERPlus image name)\n", split, excluded);
    return rc;
}

// ---------------------------------------------------------------------------
// AffectNet

// Reads the single label of a NumPy .npy file: integer dtypes, or a string
// ('<U..' UTF-32, '|S..' bytes) holding an integer. Returns 0 and *v.
int npy_read_label(const char *path, long *v, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    uint8_t head[12];
    char *hdr = NULL;
    uint8_t *data = NULL;
    int rc = -1;
    if (fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY", 6)) {
        snprintf(err, errlen, "%s: not a NumPy .npy file", path);
        goto done;
    }
    size_t hlen;
    if (head[6] == 1) {
        hlen = head[8] | (size_t)head[9] << 8;
    } else if (head[6] == 2 || head[6] == 3) {
        if (fread(head + 10, 1, 2, f) != 2) goto trunc;
        hlen = head[8] | (size_t)head[9] << 8 | (size_t)head[10] << 16 | (size_t)head[11] << 24;
    } else {
        snprintf(err, errlen, "%s: unsupported .npy version %d", path, head[6]);
        goto done;
    }
    if (hlen > 65536) goto trunc;
    hdr = calloc(hlen + 1, 1);
    if (fread(hdr, 1, hlen, f) != hlen) goto trunc;
    char *dp = strstr(hdr, "'descr'"), *sp = strstr(hdr, "'shape'");
    char descr[32] = "";
    if (!dp || sscanf(strchr(dp + 7, '\'') ? strchr(dp + 7, '\'') + 1 : "", "%31[^']", descr) != 1 ||
        !sp) {
        snprintf(err, errlen, "%s: malformed .npy header", path);
        goto done;
    }
    // Shape: () or (1,) or (1, 1): exactly one element.
    char *lp = strchr(sp, '('), *rp = lp ? strchr(lp, ')') : NULL;
    long count = 1;
    if (!lp || !rp) {
        snprintf(err, errlen, "%s: malformed .npy shape", path);
        goto done;
    }
    for (char *s = lp + 1; s < rp;) {
        if (isdigit((unsigned char)*s)) {
            count *= strtol(s, &s, 10);
        } else {
            s++;
        }
    }
    if (count != 1) {
        snprintf(err, errlen, "%s: holds %ld values, expected one label", path, count);
        goto done;
    }
    char order = descr[0], kind = descr[1];
    int size = atoi(descr + 2);
    if (!strchr("<>|=", order) || size <= 0 || size > 1024) {
        snprintf(err, errlen, "%s: unsupported dtype '%s'", path, descr);
        goto done;
    }
    size_t nbytes = kind == 'U' ? (size_t)size * 4 : (size_t)size;
    data = calloc(nbytes + 1, 1);
    if (fread(data, 1, nbytes, f) != nbytes) goto trunc;
    bool big = order == '>';
    if (kind == 'i' || kind == 'u') {
        if (size != 1 && size != 2 && size != 4 && size != 8) {
            snprintf(err, errlen, "%s: unsupported dtype '%s'", path, descr);
            goto done;
        }
        uint64_t u = 0;
        for (int b = 0; b < size; b++) u |= (uint64_t)data[big ? size - 1 - b : b] << (8 * b);
        if (kind == 'i' && size < 8 && (u >> (8 * size - 1)) & 1) u |= ~0ull << (8 * size);
        *v = (long)(int64_t)u;
        rc = 0;
    } else if (kind == 'U' || kind == 'S') {
        char txt[1100];
        int n = 0;
        for (int c = 0; c < size && n < (int)sizeof txt - 1; c++) {
            uint32_t ch;
            if (kind == 'S') {
                ch = data[c];
            } else {
                const uint8_t *q = data + 4 * c;
                ch = big ? (uint32_t)q[3] | q[2] << 8 | q[1] << 16 | (uint32_t)q[0] << 24
                         : (uint32_t)q[0] | q[1] << 8 | q[2] << 16 | (uint32_t)q[3] << 24;
            }
            if (!ch) break;
            txt[n++] = ch < 128 ? (char)ch : '?';
        }
        txt[n] = 0;
        if (!parse_int(txt, v)) {
            snprintf(err, errlen, "%s: label string \"%s\" is not an integer", path, txt);
            goto done;
        }
        rc = 0;
    } else {
        snprintf(err, errlen, "%s: unsupported dtype '%s' (expected an integer or a string)",
                 path, descr);
    }
    goto done;
trunc:
    snprintf(err, errlen, "%s: truncated .npy file", path);
done:
    free(hdr);
    free(data);
    fclose(f);
    return rc;
}

static const char *affectnet_set_dir(const dataset *d, const char *split, char *buf, size_t n) {
    if (!strcmp(split, "train")) {
        snprintf(buf, n, "%s/train_set", d->root);
        return buf;
    }
    const char *names[] = {"valid_set", "val_set", "validation_set"};
    for (int i = 0; i < 3; i++) {
        snprintf(buf, n, "%s/%s", d->root, names[i]);
        if (is_dir(buf)) return buf;
    }
    snprintf(buf, n, "%s/valid_set", d->root);
    return buf;
}

// (a) POSTER's lists: <set>/<prefix>_annotations_<K>class.txt, "<name>.jpg <label>"
static int affectnet_lists(dataset *d, const char *split, int K, pctx *p) {
    char set[1024], list[1200] = "";
    affectnet_set_dir(d, split, set, sizeof set);
    const char *prefixes[] = {"train", "valid", "val", "validation"};
    for (int i = 0; i < 4; i++) {
        snprintf(list, sizeof list, "%s/%s_annotations_%dclass.txt", set, prefixes[i], K);
        if (is_file(list)) break;
    }
    FILE *f = open_list(p, list);
    if (!f) return -1;
    p->file = list;
    p->line = 0;
    char *buf = NULL, path[2400];
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && read_line(f, &buf, &cap, &p->line)) {
        if (blank(buf)) continue;
        char name[1024], ls[64], extra[8];
        long lab;
        int nf = sscanf(buf, "%1023s %63s %7s", name, ls, extra);
        if (nf != 2) {
            rc = bad(p, "expected \"<name>.jpg <label>\", got \"%.80s\"", buf);
            continue;
        }
        if (!parse_int(ls, &lab) || lab < 0 || lab >= K) {
            rc = bad(p, "label \"%s\" is not in 0..%d", ls, K - 1);
            continue;
        }
        snprintf(path, sizeof path, "%s/images/%s", set, name);
        dataset_push(d, path, (int)lab);
    }
    free(buf);
    fclose(f);
    return rc;
}

// (b) the original release: Manually_Annotated_file_lists/{training,validation}.csv
static int affectnet_original(dataset *d, const char *split, int K, pctx *p) {
    char list[1024], path[2400];
    snprintf(list, sizeof list, "%s/Manually_Annotated_file_lists/%s.csv", d->root,
             !strcmp(split, "train") ? "training" : "validation");
    FILE *f = open_list(p, list);
    if (!f) return -1;
    p->file = list;
    p->line = 0;
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0, col_path = -1, col_exp = -1, ncol = 0, excluded = 0;
    char *fields[64];
    if (read_line(f, &buf, &cap, &p->line)) {
        ncol = csv_split(buf, fields, 64);
        for (int i = 0; i < ncol; i++) {
            char *t = trim(fields[i]);
            if (!strcmp(t, "subDirectory_filePath")) col_path = i;
            if (!strcmp(t, "expression")) col_exp = i;
        }
    }
    if (col_path < 0 || col_exp < 0) {
        snprintf(p->err, p->errlen, "%s:1: expected a header with the columns "
                 "subDirectory_filePath and expression", list);
        rc = -1;
    }
    while (rc == 0 && read_line(f, &buf, &cap, &p->line)) {
        if (blank(buf)) continue;
        int nf = csv_split(buf, fields, 64);
        if (nf < ncol) {
            rc = bad(p, "short row: %d columns, the header has %d", nf, ncol);
            continue;
        }
        long code;
        if (!parse_int(fields[col_exp], &code) || code < 0 || code > 10) {
            rc = bad(p, "expression \"%s\" is not a code 0..10", fields[col_exp]);
            continue;
        }
        if (code >= K) {
            excluded++;
            continue;
        }
        char *rel = trim(fields[col_path]);
        if (!*rel) {
            rc = bad(p, "empty subDirectory_filePath");
            continue;
        }
        snprintf(path, sizeof path, "%s/Manually_Annotated_Images/%s", d->root, rel);
        dataset_push(d, path, (int)code);
    }
    free(buf);
    fclose(f);
    if (!rc && excluded && p->log)
        fprintf(p->log, "affectnet %s: %d rows with codes %d..10 left out (%d-class)\n", split,
                excluded, K, K);
    return rc;
}

typedef struct {
    char *name;
    long num;      // numeric stem, or -1
} dir_item;

static int cmp_item(const void *a, const void *b) {
    const dir_item *x = a, *y = b;
    if (x->num >= 0 && y->num >= 0 && x->num != y->num) return x->num < y->num ? -1 : 1;
    return strcmp(x->name, y->name);
}

static bool has_jpeg_ext(const char *n) {
    const char *dot = strrchr(n, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

// Lists the entries of a folder (sorted: numerically when stems are numbers).
// want_dirs selects folders, else JPEG files; *others counts what was left out.
static int list_dir(const char *dir, bool want_dirs, dir_item **out, int *n, int *others) {
    DIR *dp = opendir(dir);
    if (!dp) return -1;
    int cap = 64, cnt = 0;
    dir_item *it = malloc((size_t)cap * sizeof *it);
    struct dirent *e;
    char full[2400];
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        bool isd = is_dir(full);
        if (want_dirs ? !isd : (isd || !has_jpeg_ext(e->d_name))) {
            if (others && !isd) (*others)++;
            continue;
        }
        if (cnt == cap) it = realloc(it, (size_t)(cap *= 2) * sizeof *it);
        it[cnt].name = strdup(e->d_name);
        char *end;
        long v = strtol(e->d_name, &end, 10);
        it[cnt].num = (end != e->d_name && (*end == '.' || !*end) && v >= 0) ? v : -1;
        cnt++;
    }
    closedir(dp);
    qsort(it, (size_t)cnt, sizeof *it, cmp_item);
    *out = it;
    *n = cnt;
    return 0;
}

static void free_items(dir_item *it, int n) {
    for (int i = 0; i < n; i++) free(it[i].name);
    free(it);
}

// (c) <set>/images/N.jpg with <set>/annotations/N_exp.npy
static int affectnet_npy(dataset *d, const char *split, int K, pctx *p) {
    char set[1024], dir[1100], npy[2400], path[2400];
    affectnet_set_dir(d, split, set, sizeof set);
    snprintf(dir, sizeof dir, "%s/images", set);
    dir_item *it;
    int n, others = 0, rc = 0, excluded = 0;
    if (list_dir(dir, false, &it, &n, &others)) {
        snprintf(p->err, p->errlen, "%s: cannot open folder: %s", dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n && !rc; i++) {
        char stem[1024];
        snprintf(stem, sizeof stem, "%s", it[i].name);
        char *dot = strrchr(stem, '.');
        if (dot) *dot = 0;
        snprintf(npy, sizeof npy, "%s/annotations/%s_exp.npy", set, stem);
        p->file = npy;
        p->line = 0;
        long code;
        char e[1024];
        if (npy_read_label(npy, &code, e, sizeof e)) {
            rc = bad(p, "%s", strchr(e, ':') ? strchr(e, ':') + 2 : e);
            continue;
        }
        if (code < 0 || code > 10) {
            rc = bad(p, "expression code %ld is not in 0..10", code);
            continue;
        }
        if (code >= K) {
            excluded++;
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, it[i].name);
        dataset_push(d, path, (int)code);
    }
    free_items(it, n);
    if (!rc && p->log && (excluded || others))
        fprintf(p->log, "affectnet %s: %d images with codes %d..10 left out (%d-class), %d "
                "non-JPEG files ignored in %s\n", split, excluded, K, K, others, dir);
    return rc;
}

static int open_affectnet(const config *c, dataset *d, const char *split, pctx *p) {
    int K = (int)config_int(c, "data.num_classes");
    if (K == 0) {
        K = 7;
        if (config_find_key(c, "model.num_classes") && config_has(c, "model.num_classes"))
            K = (int)config_int(c, "model.num_classes");
    }
    if (K != 7 && K != 8) {
        snprintf(p->err, p->errlen, "AffectNet has 7 or 8 classes, not %d (data.num_classes)", K);
        return -1;
    }
    const char *layout = config_str(c, "data.affectnet_layout");
    char probe[1200];
    if (!strcmp(layout, "auto")) {
        snprintf(probe, sizeof probe, "%s/Manually_Annotated_file_lists", d->root);
        if (is_dir(probe)) {
            layout = "original";
        } else {
            snprintf(probe, sizeof probe, "%s/train_set/annotations", d->root);
            layout = is_dir(probe) ? "npy" : "lists";
        }
    }
    int rc = !strcmp(layout, "lists")      ? affectnet_lists(d, split, K, p)
             : !strcmp(layout, "original") ? affectnet_original(d, split, K, p)
                                            : affectnet_npy(d, split, K, p);
    dataset_set_classes(d, K, k_affectnet_classes);
    return rc;
}

// ---------------------------------------------------------------------------
// Custom: folder per class, or a CSV list

static int split_names(const char *s, char ***out) {
    int n = 0;
    char **v = NULL;
    char *tmp = strdup(s), *save = NULL;
    for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        v = realloc(v, (size_t)(n + 1) * sizeof(char *));
        v[n++] = strdup(trim(t));
    }
    free(tmp);
    *out = v;
    return n;
}

static void free_names(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int find_name(char **names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

static int open_folder(const config *c, dataset *d, const char *split, pctx *p) {
    char sdir[1100], tdir[1100], cdir[2400], path[3600];
    snprintf(sdir, sizeof sdir, "%s/%s", d->root, split);
    if (!is_dir(sdir) && strcmp(split, "train")) {
        // val and test stand in for each other when only one exists.
        snprintf(sdir, sizeof sdir, "%s/%s", d->root, !strcmp(split, "val") ? "test" : "val");
        if (!is_dir(sdir)) snprintf(sdir, sizeof sdir, "%s/%s", d->root, split);
    }
    snprintf(tdir, sizeof tdir, "%s/train", d->root);
    char **names = NULL;
    int K = 0, rc = 0;
    const char *cls = config_str(c, "data.classes");
    if (*cls) {
        K = split_names(cls, &names);
    } else {
        dir_item *it;
        int n;
        const char *from = is_dir(tdir) ? tdir : sdir;
        if (list_dir(from, true, &it, &n, NULL)) {
            snprintf(p->err, p->errlen, "%s: cannot open folder: %s (expected ROOT/<split>/<class "
                     "name>/*.jpg)", from, strerror(errno));
            return -1;
        }
        qsort(it, (size_t)n, sizeof *it, cmp_str);   // by name (name is the first member)
        names = malloc((size_t)(n ? n : 1) * sizeof(char *));
        for (int i = 0; i < n; i++) names[i] = strdup(it[i].name);
        K = n;
        free_items(it, n);
    }
    if (K == 0) {
        snprintf(p->err, p->errlen, "%s: no class folders", tdir);
        free(names);
        return -1;
    }
    dir_item *cd;
    int ncd;
    if (list_dir(sdir, true, &cd, &ncd, NULL)) {
        snprintf(p->err, p->errlen, "%s: cannot open folder: %s", sdir, strerror(errno));
        free_names(names, K);
        return -1;
    }
    qsort(cd, (size_t)ncd, sizeof *cd, cmp_str);
    int others = 0;
    for (int i = 0; i < ncd && !rc; i++) {
        int k = find_name(names, K, cd[i].name);
        snprintf(cdir, sizeof cdir, "%s/%s", sdir, cd[i].name);
        if (k < 0) {
            p->file = cdir;
            p->line = 0;
            rc = bad(p, "unknown class name \"%s\" (not among the %d classes of the train split)",
                     cd[i].name, K);
            continue;
        }
        dir_item *fi;
        int nf;
        if (list_dir(cdir, false, &fi, &nf, &others)) continue;
        qsort(fi, (size_t)nf, sizeof *fi, cmp_str);
        for (int j = 0; j < nf; j++) {
            snprintf(path, sizeof path, "%s/%s", cdir, fi[j].name);
            dataset_push(d, path, k);
        }
        free_items(fi, nf);
    }
    free_items(cd, ncd);
    dataset_set_classes(d, K, (const char *const *)names);
    free_names(names, K);
    if (!rc && others && p->log)
        fprintf(p->log, "folder %s: %d files that are not .jpg/.jpeg ignored\n", split, others);
    return rc;
}

static void csv_list_path(const config *c, const dataset *d, const char *split, char *buf,
                          size_t n) {
    char key[64];
    snprintf(key, sizeof key, "data.%s_list", split);
    const char *v = config_str(c, key);
    if (*v) snprintf(buf, n, "%s", v);
    else snprintf(buf, n, "%s/%s.csv", d->root, split);
}

typedef struct {
    char *path;
    char *label;
    int line;
} csv_row;

// Reads "path,label" rows (an optional header "path,label" is skipped).
static int read_csv_list(const char *list, csv_row **rows, int *n, pctx *p) {
    FILE *f = open_list(p, list);
    if (!f) return -1;
    p->file = list;
    p->line = 0;
    char *buf = NULL;
    size_t cap = 0;
    int cnt = 0, rcap = 0, rc = 0;
    csv_row *r = NULL;
    char *fields[4];
    while (rc == 0 && read_line(f, &buf, &cap, &p->line)) {
        if (blank(buf) || buf[0] == '#') continue;
        int nf = csv_split(buf, fields, 4);
        if (nf != 2) {
            rc = bad(p, "expected \"path,label\", got %d column%s", nf, nf == 1 ? "" : "s");
            continue;
        }
        char *a = trim(fields[0]), *b = trim(fields[1]);
        if (p->line == 1 && !strcasecmp(a, "path") && !strcasecmp(b, "label")) continue;
        if (!*a || !*b) {
            rc = bad(p, "empty %s", *a ? "label" : "path");
            continue;
        }
        if (cnt == rcap) r = realloc(r, (size_t)(rcap = rcap ? 2 * rcap : 256) * sizeof *r);
        r[cnt].path = strdup(a);
        r[cnt].label = strdup(b);
        r[cnt].line = p->line;
        cnt++;
    }
    free(buf);
    fclose(f);
    *rows = r;
    *n = cnt;
    return rc;
}

static void free_rows(csv_row *r, int n) {
    for (int i = 0; i < n; i++) {
        free(r[i].path);
        free(r[i].label);
    }
    free(r);
}

static int open_csv(const config *c, dataset *d, const char *split, pctx *p) {
    char list[1100], tlist[1100];
    csv_list_path(c, d, split, list, sizeof list);
    csv_list_path(c, d, "train", tlist, sizeof tlist);
    char **names = NULL;
    int K = 0, rc = 0;
    const char *cls = config_str(c, "data.classes");
    if (*cls) {
        K = split_names(cls, &names);
    } else {
        // Classes from the train list: sorted names, or 0..max for integer labels.
        csv_row *tr;
        int nt;
        pctx q = *p;
        q.skip = true;
        q.log = NULL;
        if (read_csv_list(tlist, &tr, &nt, &q) && q.nbad == 0) {
            snprintf(p->err, p->errlen, "%s", q.err);
            return -1;
        }
        bool all_int = true;
        long maxv = -1;
        for (int i = 0; i < nt; i++) {
            long v;
            if (parse_int(tr[i].label, &v)) {
                if (v > maxv) maxv = v;
            } else {
                all_int = false;
            }
        }
        if (all_int) {
            K = (int)config_int(c, "data.num_classes");
            if (K == 0) K = (int)maxv + 1;
            names = malloc((size_t)(K > 0 ? K : 1) * sizeof(char *));
            for (int k = 0; k < K; k++) {
                char s[16];
                snprintf(s, sizeof s, "%d", k);
                names[k] = strdup(s);
            }
        } else {
            names = malloc((size_t)nt * sizeof(char *));
            for (int i = 0; i < nt; i++) {
                long v;
                if (!parse_int(tr[i].label, &v) && find_name(names, K, tr[i].label) < 0)
                    names[K++] = strdup(tr[i].label);
            }
            qsort(names, (size_t)K, sizeof(char *), cmp_str);
        }
        free_rows(tr, nt);
    }
    if (K <= 0) {
        snprintf(p->err, p->errlen, "%s: no labels to derive the classes from", tlist);
        free(names);
        return -1;
    }
    csv_row *rows;
    int n;
    rc = read_csv_list(list, &rows, &n, p);
    char dir[1100], path[2400];
    snprintf(dir, sizeof dir, "%s", list);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    p->file = list;
    for (int i = 0; i < n && !rc; i++) {
        p->line = rows[i].line;
        long v;
        int k = parse_int(rows[i].label, &v) ? (int)v : find_name(names, K, rows[i].label);
        if (k < 0 || k >= K) {
            if (parse_int(rows[i].label, &v))
                rc = bad(p, "label %ld out of range 0..%d", v, K - 1);
            else
                rc = bad(p, "unknown class name \"%s\"", rows[i].label);
            continue;
        }
        if (rows[i].path[0] == '/') snprintf(path, sizeof path, "%s", rows[i].path);
        else snprintf(path, sizeof path, "%s/%s", dir, rows[i].path);
        dataset_push(d, path, k);
    }
    free_rows(rows, n);
    dataset_set_classes(d, K, (const char *const *)names);
    free_names(names, K);
    return rc;
}

// ---------------------------------------------------------------------------

int dataset_open_ex(const config *c, const char *split, bool skip_bad, FILE *log, dataset **out,
                    char *err, size_t errlen) {
    *out = NULL;
    if (strcmp(split, "train") && strcmp(split, "val") && strcmp(split, "test")) {
        snprintf(err, errlen, "unknown split \"%s\" (train, val or test)", split);
        return -1;
    }
    const char *format = config_str(c, "data.format");
    const char *cache = config_str(c, "data.cache");
    if (*cache) return dataset_open_cache(c, cache, split, out, err, errlen);
    dataset *d = dataset_alloc();
    snprintf(d->format, sizeof d->format, "%s", format);
    snprintf(d->split, sizeof d->split, "%s", split);
    snprintf(d->root, sizeof d->root, "%s", config_str(c, "data.root"));
    d->skip_bad = skip_bad;
    const char *co = config_str(c, "data.channel_order");
    d->bgr = !strcmp(co, "bgr") || (!strcmp(co, "auto") && !strcmp(format, "rafdb"));
    if (!d->root[0] && strcmp(format, "csv")) {
        snprintf(err, errlen, "data.root is empty: set it to the %s folder (--set data.root=...)",
                 format);
        dataset_close(d);
        return -1;
    }
    if (d->root[0] && !is_dir(d->root)) {
        snprintf(err, errlen, "data.root = %s: no such folder", d->root);
        dataset_close(d);
        return -1;
    }
    pctx p = {.skip = skip_bad, .log = log, .err = err, .errlen = errlen};
    int rc;
    if (!strcmp(format, "rafdb")) rc = open_rafdb(d, split, &p);
    else if (!strcmp(format, "ferplus")) rc = open_ferplus(d, split, &p);
    else if (!strcmp(format, "affectnet")) rc = open_affectnet(c, d, split, &p);
    else if (!strcmp(format, "folder")) rc = open_folder(c, d, split, &p);
    else rc = open_csv(c, d, split, &p);
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
