// The text and folder parsing shared by the dataset formats (rafdb.c,
// ferplus.c, affectnet.c, custom.c): bad lines fatal or skipped and named
// (data.skip_bad), lines, integers, CSV fields, and sorted folder listings.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/data_internal.h"

// A bad line: fatal (returns -1, err set) or, with skip_bad, logged (returns 0).
__attribute__((format(printf, 2, 3))) int parse_bad(pctx *p, const char *fmt, ...) {
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
bool parse_line(FILE *f, char **buf, size_t *cap, int *lineno) {
    ssize_t n = getline(buf, cap, f);
    if (n < 0) return false;
    (*lineno)++;
    while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r')) (*buf)[--n] = 0;
    return true;
}

bool parse_blank(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    return !*s;
}

bool parse_int(const char *s, long *v) {
    while (isspace((unsigned char)*s)) s++;
    if (!*s) return false;
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end)) end++;
    return !errno && !*end;
}

bool parse_is_dir(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}
bool parse_is_file(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

// Splits a CSV line in place (double quotes honoured). Returns the field count.
int parse_csv_split(char *s, char **fields, int max) {
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

char *parse_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

FILE *parse_open_list(pctx *p, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) snprintf(p->err, p->errlen, "%s: cannot open: %s", path, strerror(errno));
    p->file = path;
    p->line = 0;
    return f;
}

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
int parse_list_dir(const char *dir, bool want_dirs, dir_item **out, int *n, int *others) {
    DIR *dp = opendir(dir);
    if (!dp) return -1;
    int cap = 64, cnt = 0;
    dir_item *it = malloc((size_t)cap * sizeof *it);
    struct dirent *e;
    char full[2400];
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        bool isd = parse_is_dir(full);
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

void parse_free_items(dir_item *it, int n) {
    for (int i = 0; i < n; i++) free(it[i].name);
    free(it);
}


int parse_split_names(const char *s, char ***out) {
    int n = 0;
    char **v = NULL;
    char *tmp = strdup(s), *save = NULL;
    for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        v = realloc(v, (size_t)(n + 1) * sizeof(char *));
        v[n++] = strdup(parse_trim(t));
    }
    free(tmp);
    *out = v;
    return n;
}

void parse_free_names(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

int parse_cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int parse_find_name(char **names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}
