// AffectNet (docs/POSTER.md, "Datasets on disk") in its three common layouts,
// detected under data.root or forced by data.affectnet_layout: (a) POSTER's
// lists <set>/<prefix>_annotations_<K>class.txt, (b) the original release's
// Manually_Annotated_file_lists/*.csv, (c) one .npy label per image. 7 or 8
// classes; codes past the class count (8-10: None, Uncertain, No-Face) are left
// out. Splits: train and val (test reads val). Official order RGB.
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

static const char *const k_classes[] = {"Neutral", "Happy",   "Sad",   "Surprise",
                                        "Fear",    "Disgust", "Anger", "Contempt"};


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
            // A damaged header may hold any digits: each extent and the product
            // stay within 2^31 (found by the npy fuzz target: an overflowing product).
            errno = 0;
            long d = strtol(s, &s, 10);
            if (errno == ERANGE || d > INT32_MAX || (d > 0 && count > INT32_MAX / d)) {
                snprintf(err, errlen, "%s: .npy shape extent out of range, expected one label",
                         path);
                goto done;
            }
            count *= d;
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
        if (parse_is_dir(buf)) return buf;
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
        if (parse_is_file(list)) break;
    }
    FILE *f = parse_open_list(p, list);
    if (!f) return -1;
    char *buf = NULL, path[2400];
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && parse_line(f, &buf, &cap, &p->line)) {
        if (parse_blank(buf)) continue;
        char name[1024], ls[64], extra[8];
        long lab;
        int nf = sscanf(buf, "%1023s %63s %7s", name, ls, extra);
        if (nf != 2) {
            rc = parse_bad(p, "expected \"<name>.jpg <label>\", got \"%.80s\"", buf);
            continue;
        }
        if (!parse_int(ls, &lab) || lab < 0 || lab >= K) {
            rc = parse_bad(p, "label \"%s\" is not in 0..%d", ls, K - 1);
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
    FILE *f = parse_open_list(p, list);
    if (!f) return -1;
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0, col_path = -1, col_exp = -1, ncol = 0, excluded = 0;
    char *fields[64];
    if (parse_line(f, &buf, &cap, &p->line)) {
        ncol = parse_csv_split(buf, fields, 64);
        for (int i = 0; i < ncol; i++) {
            char *t = parse_trim(fields[i]);
            if (!strcmp(t, "subDirectory_filePath")) col_path = i;
            if (!strcmp(t, "expression")) col_exp = i;
        }
    }
    if (col_path < 0 || col_exp < 0) {
        snprintf(p->err, p->errlen, "%s:1: expected a header with the columns "
                 "subDirectory_filePath and expression", list);
        rc = -1;
    }
    while (rc == 0 && parse_line(f, &buf, &cap, &p->line)) {
        if (parse_blank(buf)) continue;
        int nf = parse_csv_split(buf, fields, 64);
        if (nf < ncol) {
            rc = parse_bad(p, "short row: %d columns, the header has %d", nf, ncol);
            continue;
        }
        long code;
        if (!parse_int(fields[col_exp], &code) || code < 0 || code > 10) {
            rc = parse_bad(p, "expression \"%s\" is not a code 0..10", fields[col_exp]);
            continue;
        }
        if (code >= K) {
            excluded++;
            continue;
        }
        char *rel = parse_trim(fields[col_path]);
        if (!*rel) {
            rc = parse_bad(p, "empty subDirectory_filePath");
            continue;
        }
        snprintf(path, sizeof path, "%s/Manually_Annotated_Images/%s", d->root, rel);
        dataset_push(d, path, (int)code);
    }
    free(buf);
    fclose(f);
    if (!rc && excluded && p->log)
        fprintf(p->log, "affectnet %s: %d rows with codes %d..10 left out (%d-class)\n", d->split,
                excluded, K, K);
    return rc;
}

// (c) <set>/images/N.jpg with <set>/annotations/N_exp.npy
static int affectnet_npy(dataset *d, const char *split, int K, pctx *p) {
    char set[1024], dir[1100], npy[2400], path[2400];
    affectnet_set_dir(d, split, set, sizeof set);
    snprintf(dir, sizeof dir, "%s/images", set);
    dir_item *it;
    int n, others = 0, rc = 0, excluded = 0;
    if (parse_list_dir(dir, false, &it, &n, &others)) {
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
            rc = parse_bad(p, "%s", strchr(e, ':') ? strchr(e, ':') + 2 : e);
            continue;
        }
        if (code < 0 || code > 10) {
            rc = parse_bad(p, "expression code %ld is not in 0..10", code);
            continue;
        }
        if (code >= K) {
            excluded++;
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, it[i].name);
        dataset_push(d, path, (int)code);
    }
    parse_free_items(it, n);
    if (!rc && p->log && (excluded || others))
        fprintf(p->log, "affectnet %s: %d images with codes %d..10 left out (%d-class), %d "
                "non-JPEG files ignored in %s\n", d->split, excluded, K, K, others, dir);
    return rc;
}

static int affectnet_open(const config *c, dataset *d, const char *split, pctx *p) {
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
        if (parse_is_dir(probe)) {
            layout = "original";
        } else {
            snprintf(probe, sizeof probe, "%s/train_set/annotations", d->root);
            layout = parse_is_dir(probe) ? "npy" : "lists";
        }
    }
    int rc = !strcmp(layout, "lists")      ? affectnet_lists(d, split, K, p)
             : !strcmp(layout, "original") ? affectnet_original(d, split, K, p)
                                            : affectnet_npy(d, split, K, p);
    dataset_set_classes(d, K, k_classes);
    return rc;
}


const data_format data_format_affectnet = {
    .name = "affectnet",
    .open = affectnet_open,
    .split_of = {"train", "val", "val"},
    .bgr = false,
    .needs_root = true,
};
