// Atomic HDF5 training checkpoints (see checkpoint.h).
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5io.h"
#include "train/ema.h"

#ifdef POSTER_TEST_HOOKS
volatile int ckpt_fault_inject = 0;
#endif
#define CKPT_HIST_COLS_STR "9"
_Static_assert(CKPT_HIST_COLS == 9, "update CKPT_HIST_COLS_STR");

void ckpt_info_init(ckpt_info *ci) {
    memset(ci, 0, sizeof(*ci));
    ci->best_acc = -1;
}

void ckpt_info_free(ckpt_info *ci) {
    free(ci->hist);
    free(ci->config_text);
    free(ci->class_names);
    ci->hist = NULL;
    ci->config_text = NULL;
    ci->class_names = NULL;
    ci->n_hist = 0;
}

void ckpt_info_add_rng(ckpt_info *ci, const char *name, const rng *r) {
    for (int i = 0; i < ci->n_rng; i++)
        if (!strcmp(ci->rng_name[i], name)) {
            ci->rngs[i] = *r;
            return;
        }
    AG_ASSERT(ci->n_rng < CKPT_MAX_RNG, "too many RNGs in a checkpoint");
    snprintf(ci->rng_name[ci->n_rng], sizeof ci->rng_name[0], "%s", name);
    ci->rngs[ci->n_rng++] = *r;
}

int ckpt_info_get_rng(const ckpt_info *ci, const char *name, rng *r) {
    for (int i = 0; i < ci->n_rng; i++)
        if (!strcmp(ci->rng_name[i], name)) {
            *r = ci->rngs[i];
            return 0;
        }
    return -1;
}

void ckpt_info_push_hist(ckpt_info *ci, const double *row) {
    ci->hist = realloc(ci->hist, (size_t)(ci->n_hist + 1) * CKPT_HIST_COLS * sizeof(double));
    AG_ASSERT(ci->hist != NULL, "out of memory");
    memcpy(ci->hist + (size_t)ci->n_hist * CKPT_HIST_COLS, row, CKPT_HIST_COLS * sizeof(double));
    ci->n_hist++;
}

// ---- float64 datasets (h5io is float32/int64 only) ----

static int write_f64(hid_t f, const char *name, const double *v, int rows, int cols) {
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    hid_t sp = rows < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(2, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(f, name, H5T_IEEE_F64LE, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    int rc = -1;
    if (d >= 0) {
        rc = (rows == 0 || H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0)
                 ? 0 : -1;
        H5Dclose(d);
    }
    H5Pclose(lcpl);
    H5Sclose(sp);
    return rc;
}

// Reads a float64 dataset (malloc'ed); returns its element count or -1. The
// type must be a float and the stored bytes must cover the shape (damaged files).
static int64_t read_f64(hid_t f, const char *name, double **out) {
    *out = NULL;
    if (!h5_exists(f, name)) return -1;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t sp = H5Dget_space(d), ft = H5Dget_type(d);
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    bool ok = n >= 0 && n <= ((hssize_t)1 << 32) && ft >= 0 && H5Tget_class(ft) == H5T_FLOAT &&
              H5Tget_size(ft) <= 8 &&
              (n == 0 || H5Dget_storage_size(d) >= (hsize_t)n * H5Tget_size(ft));
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    int64_t rc = ok ? n : -1;
    if (ok) {
        *out = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
        AG_ASSERT(*out != NULL, "out of memory");
        if (n > 0 && H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
            rc = -1;
    }
    H5Dclose(d);
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

static int write_i64(hid_t f, const char *name, int64_t v, char *err, size_t errlen) {
    return h5_write_int64s(f, name, &v, 0, NULL, err, errlen);
}

static int read_i64(hid_t f, const char *name, int64_t *v, char *err, size_t errlen) {
    return h5_read_int64_scalar(f, name, v, err, errlen);
}

// A progress value, checked against its range (a damaged file names the dataset).
static int read_i64_in(hid_t f, const char *name, int64_t *v, int64_t lo, int64_t hi, char *err,
                       size_t errlen) {
    if (read_i64(f, name, v, err, errlen)) return -1;
    if (*v < lo || *v > hi)
        return snprintf(err, errlen, "'%s' = %lld is out of range [%lld, %lld]", name,
                        (long long)*v, (long long)lo, (long long)hi), -1;
    return 0;
}

static int write_body(hid_t f, const param_store *s, const optimizer *opt, const ckpt_info *ci,
                      char *err, size_t errlen) {
    if (h5_write_attr_str(f, "/", "format", CKPT_FORMAT) ||
        h5_write_attr_i64(f, "/", "version", CKPT_VERSION)) {
        snprintf(err, errlen, "cannot write the format attributes");
        return -1;
    }
    if (state_write(f, "state_dict", s, err, errlen)) return -1;
#ifdef POSTER_TEST_HOOKS
    if (ckpt_fault_inject) raise(SIGKILL);
#endif
    if (opt && optim_write(opt, f, "optimizer", err, errlen)) return -1;
    if (!ci) return 0;
    if (ci->ema && ema_write(ci->ema, s, f, "ema", err, errlen)) return -1;
    if (ci->best_weights[0] && h5_write_attr_str(f, "/", "best_weights", ci->best_weights)) {
        snprintf(err, errlen, "cannot write the best_weights attribute");
        return -1;
    }
    if (write_i64(f, "progress/epoch", ci->epoch, err, errlen) ||
        write_i64(f, "progress/batches_done", ci->batches_done, err, errlen) ||
        write_i64(f, "progress/global_step", ci->global_step, err, errlen) ||
        write_i64(f, "progress/best_epoch", ci->best_epoch, err, errlen))
        return -1;
    if (ci->batches_done > 0 && write_f64(f, "progress/epoch_partial", ci->epoch_partial, 1, 3)) {
        snprintf(err, errlen, "cannot write progress/epoch_partial");
        return -1;
    }
    if (write_f64(f, "progress/best_acc", &ci->best_acc, -1, 0) ||
        write_f64(f, "progress/last_lr", &ci->last_lr, -1, 0) ||
        write_f64(f, "history", ci->hist, ci->n_hist, CKPT_HIST_COLS)) {
        snprintf(err, errlen, "cannot write progress datasets");
        return -1;
    }
    for (int i = 0; i < ci->n_rng; i++) {
        int64_t v[6];
        const rng *r = &ci->rngs[i];
        for (int k = 0; k < 4; k++) memcpy(&v[k], &r->s[k], 8);
        v[4] = r->has_spare;
        memcpy(&v[5], &r->spare, 8);
        char name[64];
        snprintf(name, sizeof name, "rng/%s", ci->rng_name[i]);
        if (h5_write_int64s(f, name, v, 1, (int[]){6}, err, errlen)) return -1;
    }
    if (ci->config_text) {
        int n = (int)strlen(ci->config_text);
        if (h5_write_uint8s(f, "config", (const uint8_t *)ci->config_text, 1, &n, err, errlen))
            return -1;
    }
    if (ci->class_names && ci->class_names[0]) {
        int n = (int)strlen(ci->class_names);
        if (h5_write_uint8s(f, "class_names", (const uint8_t *)ci->class_names, 1, &n, err,
                            errlen))
            return -1;
    }
    return 0;
}

int ckpt_save(const char *path, const param_store *s, const optimizer *opt,
              const ckpt_info *ci, char *err, size_t errlen) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    h5_quiet();
    // The tensors, the optimizer's moments and ~1 MB of metadata and history.
    uint64_t need = (uint64_t)s->n_float * 4 + (uint64_t)s->n_counters * 8 +
                    (opt ? (uint64_t)s->n_train * 8 : 0) + ((uint64_t)1 << 20) +
                    (ci ? (uint64_t)ci->n_hist * CKPT_HIST_COLS * 8 : 0);
    char e2[512] = "";
    if (h5_check_room(tmp, need, e2, sizeof e2)) {
        snprintf(err, errlen, "cannot write checkpoint %s: %s (the previous file is unchanged)",
                 path, e2);
        return -1;
    }
    hid_t f = h5_create(tmp, err, errlen);
    if (f < 0) return -1;
    int rc = write_body(f, s, opt, ci, e2, sizeof e2);
    if (rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) {
        snprintf(e2, sizeof e2, "flush failed");
        rc = -1;
    }
    if (h5_close_tmp(f, tmp, rc != 0) != 0 && rc == 0) {
        snprintf(e2, sizeof e2, "close failed (disk full?)");
        rc = -1;
    }
    if (rc == 0) rc = atomic_commit(tmp, path, e2, sizeof e2);
    if (rc) {
        snprintf(err, errlen, "cannot write checkpoint %s: %s (the previous file is unchanged)",
                 path, e2);
        remove(tmp);
    }
    return rc;
}

static hid_t open_checked(const char *path, char *err, size_t errlen) {
    h5_quiet();
    hid_t f = h5_open_ours(path, "checkpoint", err, errlen);
    if (f < 0) return -1;
    char fmt[64] = "";
    int64_t ver = 0;
    if (h5_read_attr_str(f, "/", "format", fmt, sizeof fmt) || strcmp(fmt, CKPT_FORMAT)) {
        snprintf(err, errlen, "%s: not a POSTER training checkpoint (format attribute '%s', "
                 "expected '%s')", path, fmt, CKPT_FORMAT);
        h5_close(f);
        return -1;
    }
    if (h5_read_attr_i64(f, "/", "version", &ver) || ver < 1 || ver > CKPT_VERSION) {
        snprintf(err, errlen, "%s: checkpoint version %lld is not supported (this build reads "
                 "1..%d)", path, (long long)ver, CKPT_VERSION);
        h5_close(f);
        return -1;
    }
    return f;
}

static int read_text(hid_t f, const char *name, char **text, char *err, size_t errlen) {
    uint8_t *b = NULL;
    int nd, shape[T_MAXDIM];
    if (h5_read_uint8s(f, name, &b, &nd, shape, err, errlen)) return -1;
    int64_t n = shape_numel(nd, shape);
    *text = malloc((size_t)n + 1);
    AG_ASSERT(*text != NULL, "out of memory");
    memcpy(*text, b, (size_t)n);
    (*text)[n] = 0;
    free(b);
    return 0;
}

static int read_info(hid_t f, ckpt_info *ci, char *err, size_t errlen) {
    ckpt_info_init(ci);
    int64_t v;
    if (read_i64_in(f, "progress/epoch", &v, 0, 100000000, err, errlen)) return -1;
    ci->epoch = (int)v;
    if (read_i64_in(f, "progress/batches_done", &v, 0, INT32_MAX, err, errlen)) return -1;
    ci->batches_done = (int)v;
    if (read_i64_in(f, "progress/global_step", &ci->global_step, 0, INT64_MAX, err, errlen))
        return -1;
    if (read_i64_in(f, "progress/best_epoch", &v, 0, ci->epoch, err, errlen)) return -1;
    ci->best_epoch = (int)v;
    double *d = NULL;
    const char *what = "progress/best_acc";
    if (read_f64(f, what, &d) != 1) goto bad;
    ci->best_acc = d[0];
    free(d);
    what = "progress/last_lr";
    if (read_f64(f, what, &d) != 1) goto bad;
    ci->last_lr = d[0];
    free(d);
    what = "progress/epoch_partial";   // optional: absent at epoch ends and in older files
    if (h5_exists(f, what)) {
        if (read_f64(f, what, &d) != 3 || !(d[0] >= 0) || !(d[1] >= 0) || !(d[2] >= d[1])) {
            free(d);
            snprintf(err, errlen, "%s: expected 3 values (loss sum, correct, samples) with "
                     "0 <= correct <= samples", what);
            return -1;
        }
        memcpy(ci->epoch_partial, d, sizeof ci->epoch_partial);
        free(d);
    }
    what = "history";
    int64_t n = read_f64(f, what, &d);
    if (n < 0 || n % CKPT_HIST_COLS) goto bad;
    ci->hist = d;
    ci->n_hist = (int)(n / CKPT_HIST_COLS);
    if (h5_read_attr_str(f, "/", "best_weights", ci->best_weights, sizeof ci->best_weights))
        ci->best_weights[0] = 0;   // version 1, or not recorded
    if (h5_exists(f, "config") && read_text(f, "config", &ci->config_text, err, errlen))
        return -1;
    if (h5_exists(f, "class_names") &&
        read_text(f, "class_names", &ci->class_names, err, errlen))
        return -1;
    static const char *names[] = {"drop_path", "trainer", "sam", "aux"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "rng/%s", names[i]);
        if (!h5_exists(f, path)) continue;
        int64_t *r = NULL;
        int nd, shape[T_MAXDIM];
        if (h5_read_int64s(f, path, &r, &nd, shape, err, errlen)) return -1;
        if (shape_numel(nd, shape) != 6) {
            free(r);
            snprintf(err, errlen, "%s: expected 6 values", path);
            return -1;
        }
        rng g;
        for (int k = 0; k < 4; k++) memcpy(&g.s[k], &r[k], 8);
        g.has_spare = (int)r[4];
        memcpy(&g.spare, &r[5], 8);
        free(r);
        ckpt_info_add_rng(ci, names[i], &g);
    }
    return 0;
bad:
    free(d);
    snprintf(err, errlen, "dataset '%s' is missing or malformed (expected float64, %s)", what,
             strcmp(what, "history") ? "one value" : "[epochs, " CKPT_HIST_COLS_STR "]");
    return -1;
}

int ckpt_load(const char *path, param_store *s, optimizer *opt, ckpt_info *ci, char *err,
              size_t errlen) {
    if (ci) ckpt_info_init(ci);   // freeable whatever happens below
    hid_t f = open_checked(path, err, errlen);
    if (f < 0) return -1;
    char e2[1024] = "";
    state_report rep;
    int rc = state_read(f, "state_dict", s, true, &rep, NULL, e2, sizeof e2);
    if (rc == 0 && opt) rc = optim_read(opt, f, "optimizer", e2, sizeof e2);
    if (rc == 0 && ci) rc = read_info(f, ci, e2, sizeof e2);
    h5_close(f);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, e2);
        if (ci) ckpt_info_free(ci);
    }
    return rc;
}

int ckpt_read_config(const char *path, char **text, char *err, size_t errlen) {
    hid_t f = open_checked(path, err, errlen);
    if (f < 0) return -1;
    int rc = 0;
    if (!h5_exists(f, "config")) {
        snprintf(err, errlen, "%s: the checkpoint stores no configuration", path);
        rc = -1;
    } else {
        char e2[512];
        rc = read_text(f, "config", text, e2, sizeof e2);
        if (rc) snprintf(err, errlen, "%s: %s", path, e2);
    }
    h5_close(f);
    return rc;
}

int ckpt_read_class_names(const char *path, char **text, char *err, size_t errlen) {
    hid_t f = open_checked(path, err, errlen);
    if (f < 0) return -1;
    int rc = -1;
    if (h5_exists(f, "class_names")) {
        char e2[512];
        rc = read_text(f, "class_names", text, e2, sizeof e2);
        if (rc) snprintf(err, errlen, "%s: %s", path, e2);
    } else {
        snprintf(err, errlen, "%s: no class names stored", path);
    }
    h5_close(f);
    return rc;
}

int ckpt_load_weights(const char *path, param_store *s, state_report *rep, FILE *log,
                      char *err, size_t errlen) {
    h5_quiet();
    hid_t f = h5_open_read(path, err, errlen);
    if (f < 0) return -1;
    if (!h5_exists(f, "state_dict")) {
        snprintf(err, errlen, "%s: no 'state_dict' group (expected a poster checkpoint or a "
                 "state file from `poster import`)", path);
        h5_close(f);
        return -1;
    }
    char e2[1024] = "";
    int rc = state_read(f, "state_dict", s, false, rep, log, e2, sizeof e2);
    h5_close(f);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, e2);
        return -1;
    }
    if (log)
        fprintf(log, "init %s: loaded %d tensors; %d missing from the file (kept their "
                "initialization), %d in the file but not in the model, %d with another shape "
                "(kept their initialization)%s%s\n",
                path, rep->matched, rep->missing, rep->unexpected, rep->misshaped,
                rep->first_problem[0] ? "; first: " : "", rep->first_problem);
    return 0;
}
