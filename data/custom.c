// Your own data (docs/POSTER.md, "Datasets on disk"): a folder per class
// (data.format = folder: ROOT/<split>/<class name>/*.jpg) or "path,label" CSV
// lists (data.format = csv: ROOT/<split>.csv or data.<split>_list). Classes are
// data.classes, else the train split's sorted names (or 0..max for integer CSV
// labels). Splits are whatever exists on disk. Official order RGB.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data/data_internal.h"

// The classes named by data.classes (label order); false when the key is empty
// and the caller derives them from the train split.
static bool classes_named(const config *c, char ***names, int *K) {
    const char *cls = config_str(c, "data.classes");
    *names = NULL;
    *K = 0;
    if (!*cls) return false;
    *K = parse_split_names(cls, names);
    return true;
}

static void folder_split_path(const config *c, const char *root, const char *split, char *buf,
                              size_t n) {
    (void)c;
    snprintf(buf, n, "%s/%s", root, split);
}

static int folder_open(const config *c, dataset *d, const char *split, pctx *p) {
    char sdir[1100], tdir[1100], cdir[2400], path[3600];
    folder_split_path(c, d->root, split, sdir, sizeof sdir);
    if (!parse_is_dir(sdir) && strcmp(split, "train")) {
        // val and test stand in for each other when only one exists.
        folder_split_path(c, d->root, data_split_stand_in(split), sdir, sizeof sdir);
        if (!parse_is_dir(sdir)) folder_split_path(c, d->root, split, sdir, sizeof sdir);
    }
    folder_split_path(c, d->root, "train", tdir, sizeof tdir);
    char **names;
    int K, rc = 0;
    if (!classes_named(c, &names, &K)) {
        dir_item *it;
        int n;
        const char *from = parse_is_dir(tdir) ? tdir : sdir;
        if (parse_list_dir(from, true, &it, &n, NULL)) {
            snprintf(p->err, p->errlen, "%s: cannot open folder: %s (expected ROOT/<split>/<class "
                     "name>/*.jpg)", from, strerror(errno));
            return -1;
        }
        qsort(it, (size_t)n, sizeof *it, parse_cmp_str);   // by name (name is the first member)
        names = malloc((size_t)(n ? n : 1) * sizeof(char *));
        for (int i = 0; i < n; i++) names[i] = strdup(it[i].name);
        K = n;
        parse_free_items(it, n);
    }
    if (K == 0) {
        snprintf(p->err, p->errlen, "%s: no class folders", tdir);
        free(names);
        return -1;
    }
    dir_item *cd;
    int ncd;
    if (parse_list_dir(sdir, true, &cd, &ncd, NULL)) {
        snprintf(p->err, p->errlen, "%s: cannot open folder: %s", sdir, strerror(errno));
        parse_free_names(names, K);
        return -1;
    }
    qsort(cd, (size_t)ncd, sizeof *cd, parse_cmp_str);
    int others = 0;
    for (int i = 0; i < ncd && !rc; i++) {
        int k = parse_find_name(names, K, cd[i].name);
        snprintf(cdir, sizeof cdir, "%s/%s", sdir, cd[i].name);
        if (k < 0) {
            p->file = cdir;
            p->line = 0;
            rc = parse_bad(p, "unknown class name \"%s\" (not among the %d classes of the train split)",
                     cd[i].name, K);
            continue;
        }
        dir_item *fi;
        int nf;
        if (parse_list_dir(cdir, false, &fi, &nf, &others)) continue;
        qsort(fi, (size_t)nf, sizeof *fi, parse_cmp_str);
        for (int j = 0; j < nf; j++) {
            snprintf(path, sizeof path, "%s/%s", cdir, fi[j].name);
            dataset_push(d, path, k);
        }
        parse_free_items(fi, nf);
    }
    parse_free_items(cd, ncd);
    dataset_set_classes(d, K, (const char *const *)names);
    parse_free_names(names, K);
    if (!rc && others && p->log)
        fprintf(p->log, "folder %s: %d files that are not .jpg/.jpeg ignored\n", split, others);
    return rc;
}

// ROOT/<split>.csv unless data.<split>_list names the list.
static void csv_split_path(const config *c, const char *root, const char *split, char *buf,
                           size_t n) {
    char key[64];
    snprintf(key, sizeof key, "data.%s_list", split);
    const char *v = config_str(c, key);
    if (*v) snprintf(buf, n, "%s", v);
    else snprintf(buf, n, "%s/%s.csv", root, split);
}

typedef struct {
    char *path;
    char *label;
    int line;
} csv_row;

// Reads "path,label" rows (an optional header "path,label" is skipped).
static int read_csv_list(const char *list, csv_row **rows, int *n, pctx *p) {
    FILE *f = parse_open_list(p, list);
    if (!f) return -1;
    char *buf = NULL;
    size_t cap = 0;
    int cnt = 0, rcap = 0, rc = 0;
    csv_row *r = NULL;
    char *fields[4];
    while (rc == 0 && parse_line(f, &buf, &cap, &p->line)) {
        if (parse_blank(buf) || buf[0] == '#') continue;
        int nf = parse_csv_split(buf, fields, 4);
        if (nf != 2) {
            rc = parse_bad(p, "expected \"path,label\", got %d column%s", nf, nf == 1 ? "" : "s");
            continue;
        }
        char *a = parse_trim(fields[0]), *b = parse_trim(fields[1]);
        if (p->line == 1 && !strcasecmp(a, "path") && !strcasecmp(b, "label")) continue;
        if (!*a || !*b) {
            rc = parse_bad(p, "empty %s", *a ? "label" : "path");
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

static int csv_open(const config *c, dataset *d, const char *split, pctx *p) {
    char list[1100], tlist[1100];
    csv_split_path(c, d->root, split, list, sizeof list);
    csv_split_path(c, d->root, "train", tlist, sizeof tlist);
    char **names;
    int K, rc = 0;
    if (!classes_named(c, &names, &K)) {
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
        int maxline = 0;
        for (int i = 0; i < nt; i++) {
            long v;
            if (parse_int(tr[i].label, &v)) {
                if (v > maxv) {
                    maxv = v;
                    maxline = tr[i].line;
                }
            } else {
                all_int = false;
            }
        }
        if (all_int) {
            K = (int)config_int(c, "data.num_classes");
            // A stray huge label would make millions of classes (found by fuzz_lists).
            if (K == 0 && maxv >= DATA_MAX_CLASSES) {
                snprintf(p->err, p->errlen, "%s:%d: label %ld: integer labels are class indices "
                         "0..%d (name the classes with data.classes)", tlist, maxline, maxv,
                         DATA_MAX_CLASSES - 1);
                free_rows(tr, nt);
                return -1;
            }
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
                if (!parse_int(tr[i].label, &v) && parse_find_name(names, K, tr[i].label) < 0)
                    names[K++] = strdup(tr[i].label);
            }
            qsort(names, (size_t)K, sizeof(char *), parse_cmp_str);
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
        int k = parse_int(rows[i].label, &v) ? (int)v : parse_find_name(names, K, rows[i].label);
        if (k < 0 || k >= K) {
            if (parse_int(rows[i].label, &v))
                rc = parse_bad(p, "label %ld out of range 0..%d", v, K - 1);
            else
                rc = parse_bad(p, "unknown class name \"%s\"", rows[i].label);
            continue;
        }
        if (rows[i].path[0] == '/') snprintf(path, sizeof path, "%s", rows[i].path);
        else snprintf(path, sizeof path, "%s/%s", dir, rows[i].path);
        dataset_push(d, path, k);
    }
    free_rows(rows, n);
    dataset_set_classes(d, K, (const char *const *)names);
    parse_free_names(names, K);
    return rc;
}


const data_format data_format_folder = {
    .name = "folder",
    .open = folder_open,
    .split_path = folder_split_path,
    .bgr = false,
    .needs_root = true,
};

const data_format data_format_csv = {
    .name = "csv",
    .open = csv_open,
    .split_path = csv_split_path,
    .bgr = false,
    .needs_root = false,
};
