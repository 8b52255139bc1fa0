// INI configuration through libinih, with registered, typed keys.
#include "common/config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/check.h"

void config_init(config *c) { memset(c, 0, sizeof(*c)); }

void config_register(config *c, const config_key *table) {
    for (int i = 0; i < c->n_tables; i++)
        if (c->tables[i] == table) return;
    AG_ASSERT(c->n_tables < CONFIG_MAX_TABLES, "too many config tables");
    c->tables[c->n_tables++] = table;
}

const config_key *config_find_key(const config *c, const char *key) {
    for (int t = 0; t < c->n_tables; t++)
        for (const config_key *k = c->tables[t]; k->key; k++)
            if (!strcmp(k->key, key)) return k;
    return NULL;
}

static config_entry *find_entry(const config *c, const char *key) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->entries[i].key, key)) return (config_entry *)&c->entries[i];
    return NULL;
}

// libinih reads a recipe line into a buffer of INI_MAX_LINE bytes (200 in Debian's
// build); a longer line comes back in pieces that parse as garbage. So every value
// we accept must fit on one line of the dump (`name = value`), or the run's
// config.ini could not be read back (found by the config fuzz target).
#define CONFIG_LINE_MAX (INI_MAX_LINE - 2)   // characters, without the newline

static int put(config *c, const char *key, const char *value, const char *source,
               char *err, size_t errlen) {
    const char *dot = strchr(key, '.');
    size_t line = strlen(dot ? dot + 1 : key) + 3 + strlen(value);
    if (line > CONFIG_LINE_MAX) {
        snprintf(err, errlen, "%s: the value of %s is %zu characters: a recipe line holds at "
                 "most %d ('name = value'), so config.ini could not be read back; shorten it "
                 "(a shorter path, or a symbolic link)", source, key, strlen(value),
                 CONFIG_LINE_MAX);
        return -1;
    }
    config_entry *e = find_entry(c, key);
    if (!e) {
        if (c->n == CONFIG_MAX_ENTRIES) {
            snprintf(err, errlen, "%s: too many configuration keys", source);
            return -1;
        }
        e = &c->entries[c->n++];
    }
    if (strlen(key) >= sizeof e->key || strlen(value) >= sizeof e->value) {
        snprintf(err, errlen, "%s: key or value too long for '%s'", source, key);
        return -1;
    }
    snprintf(e->key, sizeof e->key, "%s", key);
    snprintf(e->value, sizeof e->value, "%s", value);
    snprintf(e->source, sizeof e->source, "%s", source);
    return 0;
}

typedef struct {
    config *c;
    FILE *fp;
    int lineno;          // counted by line_reader: inih reads one line per call
    int overlong;        // the line number of a line longer than inih's buffer, or 0
    int maxline;         // the longest line inih's buffer holds
    const char *path;
    char *err;
    size_t errlen;
    int depth;
    int failed;
} load_ctx;

static int load_file(config *c, const char *path, int depth, char *err, size_t errlen);

static char *line_reader(char *buf, int n, void *stream) {
    load_ctx *l = stream;
    if (l->overlong) return NULL;
    char *r = fgets(buf, n, l->fp);
    if (!r) return NULL;
    l->lineno++;
    size_t k = strlen(buf);
    if (k == (size_t)n - 1 && buf[k - 1] != '\n' && !feof(l->fp)) {
        int ch = fgetc(l->fp);   // exactly n - 1 characters and then the newline is fine
        if (ch != '\n' && ch != EOF) {
            l->overlong = l->lineno;
            l->maxline = n - 1;
            return NULL;   // inih stops here; load_stream reports it
        }
    }
    return r;
}

static int cfg_ini_handler(void *user, const char *section, const char *name,
                           const char *value) {
    load_ctx *l = user;
    int lineno = l->lineno;
    if (l->failed) return 0;
    char source[300];
    snprintf(source, sizeof source, "%s:%d", l->path, lineno);
    if (!section[0] && !strcmp(name, "include")) {
        char inc[1024];
        const char *slash = strrchr(l->path, '/');
        if (value[0] == '/' || !slash)
            snprintf(inc, sizeof inc, "%s", value);
        else
            snprintf(inc, sizeof inc, "%.*s/%s", (int)(slash - l->path), l->path, value);
        if (load_file(l->c, inc, l->depth + 1, l->err, l->errlen) != 0) {
            size_t k = strlen(l->err);
            snprintf(l->err + k, l->errlen - k, " (included from %s)", source);
            l->failed = 1;
            return 0;
        }
        return 1;
    }
    char key[200];
    if (section[0]) snprintf(key, sizeof key, "%s.%s", section, name);
    else snprintf(key, sizeof key, "%s", name);
    if (put(l->c, key, value, source, l->err, l->errlen) != 0) {
        l->failed = 1;
        return 0;
    }
    return 1;
}

// Parses the open stream f (named path in messages) and closes it.
static int load_stream(config *c, FILE *f, const char *path, int depth, char *err,
                       size_t errlen);

static int load_file(config *c, const char *path, int depth, char *err, size_t errlen) {
    if (depth > 8) {
        snprintf(err, errlen, "%s: includes nest deeper than 8 (a cycle?)", path);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open config file: %s", path, strerror(errno));
        return -1;
    }
    return load_stream(c, f, path, depth, err, errlen);
}

static int load_stream(config *c, FILE *f, const char *path, int depth, char *err,
                       size_t errlen) {
    load_ctx l = {c, f, 0, 0, 0, path, err, errlen, depth, 0};
    int rc = ini_parse_stream(line_reader, &l, cfg_ini_handler, &l);
    fclose(f);
    if (l.failed) return -1;
    if (l.overlong) {
        snprintf(err, errlen, "%s:%d: line longer than %d characters (the INI reader's limit); "
                 "shorten it (a shorter path, or a symbolic link)", path, l.overlong,
                 l.maxline);
        return -1;
    }
    if (rc > 0) {
        snprintf(err, errlen, "%s:%d: syntax error (expected 'key = value' or '[section]')",
                 path, rc);
        return -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot read config file", path);
        return -1;
    }
    return 0;
}

int config_load(config *c, const char *path, char *err, size_t errlen) {
    if (!c->path[0]) snprintf(c->path, sizeof c->path, "%s", path);
    return load_file(c, path, 0, err, errlen);
}

int config_load_text(config *c, const char *text, const char *label, char *err,
                     size_t errlen) {
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read the configuration text: %s", label,
                 strerror(errno));
        return -1;
    }
    if (!c->path[0]) snprintf(c->path, sizeof c->path, "%s", label);
    return load_stream(c, f, label, 0, err, errlen);
}

static void trim(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    size_t i = 0;
    while (s[i] == ' ' || s[i] == '\t') i++;
    if (i) memmove(s, s + i, n - i + 1);
}

int config_set(config *c, const char *assignment, char *err, size_t errlen) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) {
        snprintf(err, errlen, "--set %s: expected section.key=value", assignment);
        return -1;
    }
    char key[200], value[600];
    snprintf(key, sizeof key, "%.*s", (int)(eq - assignment), assignment);
    snprintf(value, sizeof value, "%s", eq + 1);
    trim(key);
    trim(value);
    char source[300];
    snprintf(source, sizeof source, "--set %s", assignment);
    return put(c, key, value, source, err, errlen);
}

// ---------------------------------------------------------------------------
// Parsing and validation

static bool parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s) return false;
    while (*end == ' ') end++;
    if (*end) return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v)) return false;
    while (*end == ' ') end++;
    if (*end) return false;
    *out = v;
    return true;
}

static int parse_bool(const char *s) {
    const char *t[] = {"on", "true", "yes", "1"}, *f[] = {"off", "false", "no", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) return 1;
        if (!strcasecmp(s, f[i])) return 0;
    }
    return -1;
}

static bool enum_has(const char *choices, const char *v) {
    size_t n = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

static int parse_intlist(const char *s, int *out, int max, double lo, double hi) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < lo || v > hi || n >= max) return -1;
        out[n++] = (int)v;
        while (*end == ' ') end++;
        if (*end == ',') end++;
        else if (*end) return -1;
        while (*end == ' ') end++;
        p = end;
    }
    return n;
}

static const char *type_name(config_type t) {
    switch (t) {
    case CK_INT: return "an integer";
    case CK_FLOAT: return "a number";
    case CK_BOOL: return "on or off";
    case CK_STR: return "text";
    case CK_ENUM: return "one of";
    case CK_INTLIST: return "comma-separated integers";
    }
    return "?";
}

static int check_value(const config_key *k, const char *v, const char *source, char *err,
                       size_t errlen) {
    long l;
    double d;
    int ints[CONFIG_INTLIST_MAX];
    switch (k->type) {
    case CK_INT:
        if (!parse_long(v, &l) || l < k->lo || l > k->hi) {
            snprintf(err, errlen, "%s: %s = '%s' is invalid: expected an integer in [%.0f, %.0f]",
                     source, k->key, v, k->lo, k->hi);
            return -1;
        }
        return 0;
    case CK_FLOAT:
        if (!parse_double(v, &d) || d < k->lo || d > k->hi) {
            snprintf(err, errlen, "%s: %s = '%s' is invalid: expected a number in [%g, %g]",
                     source, k->key, v, k->lo, k->hi);
            return -1;
        }
        return 0;
    case CK_BOOL:
        if (parse_bool(v) < 0) {
            snprintf(err, errlen, "%s: %s = '%s' is invalid: expected on or off", source,
                     k->key, v);
            return -1;
        }
        return 0;
    case CK_ENUM:
        if (!enum_has(k->choices, v)) {
            snprintf(err, errlen, "%s: %s = '%s' is invalid: expected one of %s", source,
                     k->key, v, k->choices);
            return -1;
        }
        return 0;
    case CK_INTLIST:
        if (parse_intlist(v, ints, CONFIG_INTLIST_MAX, k->lo, k->hi) <= 0) {
            snprintf(err, errlen,
                     "%s: %s = '%s' is invalid: expected comma-separated integers in "
                     "[%.0f, %.0f]",
                     source, k->key, v, k->lo, k->hi);
            return -1;
        }
        return 0;
    case CK_STR: return 0;
    }
    return 0;
}

int config_validate(const config *c, char *err, size_t errlen) {
    for (int i = 0; i < c->n; i++) {
        const config_entry *e = &c->entries[i];
        const config_key *k = config_find_key(c, e->key);
        if (!k) {
            // List the valid keys of the same section, or the sections.
            const char *dot = strchr(e->key, '.');
            size_t sec = dot ? (size_t)(dot - e->key) : 0;
            size_t len = (size_t)snprintf(err, errlen, "%s: unknown key '%s'; valid keys:",
                                          e->source, e->key);
            int listed = 0;
            for (int t = 0; t < c->n_tables; t++)
                for (const config_key *q = c->tables[t]; q->key; q++) {
                    if (sec && strncmp(q->key, e->key, sec + 1)) continue;
                    if (len < errlen)
                        len += (size_t)snprintf(err + len, errlen - len, " %s", q->key);
                    listed++;
                }
            if (!listed) {
                for (int t = 0; t < c->n_tables; t++)
                    for (const config_key *q = c->tables[t]; q->key; q++)
                        if (len < errlen)
                            len += (size_t)snprintf(err + len, errlen - len, " %s", q->key);
            }
            return -1;
        }
        if (check_value(k, e->value, e->source, err, errlen) != 0) return -1;
    }
    for (int t = 0; t < c->n_tables; t++)
        for (const config_key *q = c->tables[t]; q->key; q++)
            if (!find_entry(c, q->key) && q->def && q->def[0] &&
                check_value(q, q->def, "default", err, errlen) != 0)
                return -1;
    return 0;
}

bool config_has(const config *c, const char *key) { return find_entry(c, key) != NULL; }

const char *config_str(const config *c, const char *key) {
    const config_key *k = config_find_key(c, key);
    AG_ASSERT(k != NULL, "config key %s is not registered", key);
    const config_entry *e = find_entry(c, key);
    return e ? e->value : (k->def ? k->def : "");
}

long config_int(const config *c, const char *key) {
    long v = 0;
    bool ok = parse_long(config_str(c, key), &v);
    AG_ASSERT(ok, "config %s is not an integer (validate first)", key);
    return v;
}

double config_float(const config *c, const char *key) {
    double v = 0;
    bool ok = parse_double(config_str(c, key), &v);
    AG_ASSERT(ok, "config %s is not a number (validate first)", key);
    return v;
}

bool config_bool(const config *c, const char *key) {
    int b = parse_bool(config_str(c, key));
    AG_ASSERT(b >= 0, "config %s is not on/off (validate first)", key);
    return b == 1;
}

int config_intlist(const config *c, const char *key, int *out, int max) {
    const config_key *k = config_find_key(c, key);
    AG_ASSERT(k != NULL, "config key %s is not registered", key);
    // Parsed against the validator's bound, not the caller's: a valid list longer
    // than max is the caller's user error to report (found by the config fuzz target).
    int all[CONFIG_INTLIST_MAX];
    int n = parse_intlist(config_str(c, key), all, CONFIG_INTLIST_MAX, k->lo, k->hi);
    AG_ASSERT(n > 0, "config %s is not an integer list (validate first)", key);
    memcpy(out, all, (size_t)(n < max ? n : max) * sizeof(int));
    return n;
}

char *config_dump(const config *c) {
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    AG_ASSERT(s != NULL, "out of memory");
    s[0] = 0;
    char last_sec[96] = "";
    for (int t = 0; t < c->n_tables; t++)
        for (const config_key *q = c->tables[t]; q->key; q++) {
            const char *dot = strchr(q->key, '.');
            char sec[96] = "";
            if (dot) snprintf(sec, sizeof sec, "%.*s", (int)(dot - q->key), q->key);
            const char *name = dot ? dot + 1 : q->key;
            const char *v = config_str(c, q->key);
            size_t need = strlen(sec) + strlen(name) + strlen(v) + 16;
            if (len + need >= cap) {
                cap = (cap + need) * 2;
                s = realloc(s, cap);
                AG_ASSERT(s != NULL, "out of memory");
            }
            if (strcmp(sec, last_sec)) {
                len += (size_t)snprintf(s + len, cap - len, "%s[%s]\n", len ? "\n" : "", sec);
                snprintf(last_sec, sizeof last_sec, "%s", sec);
            }
            len += (size_t)snprintf(s + len, cap - len, "%s = %s\n", name, v);
        }
    return s;
}

void config_print_keys(const config *c, FILE *f) {
    for (int t = 0; t < c->n_tables; t++)
        for (const config_key *q = c->tables[t]; q->key; q++) {
            fprintf(f, "  %-28s %s", q->key, type_name(q->type));
            if (q->type == CK_ENUM) fprintf(f, " %s", q->choices);
            if (q->type == CK_INT || q->type == CK_INTLIST)
                fprintf(f, " in [%.0f, %.0f]", q->lo, q->hi);
            if (q->type == CK_FLOAT) fprintf(f, " in [%g, %g]", q->lo, q->hi);
            fprintf(f, " (default %s): %s\n", q->def && q->def[0] ? q->def : "none", q->doc);
        }
}

int config_from_args(config *c, int argc, char **argv, char **rest, int *nrest,
                     char *err, size_t errlen) {
    int nr = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (i > 0 && (!strcmp(a, "--config") || !strcmp(a, "--set"))) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", a);
                return -1;
            }
            int rc = !strcmp(a, "--config") ? config_load(c, argv[i + 1], err, errlen)
                                            : config_set(c, argv[i + 1], err, errlen);
            if (rc) return rc;
            i++;
        } else if (i > 0 && !strncmp(a, "--config=", 9)) {
            if (config_load(c, a + 9, err, errlen)) return -1;
        } else if (i > 0 && !strncmp(a, "--set=", 6)) {
            if (config_set(c, a + 6, err, errlen)) return -1;
        } else {
            rest[nr++] = argv[i];
        }
    }
    *nrest = nr;
    return 0;
}
