// A model's state in HDF5 (layers/state_io.h): group state_dict, one dataset
// per tensor under its dotted name, float32 (int64 scalars for
// num_batches_tracked); file attrs format = "poster-state", version = 1 and
// model_options. common/pth_read.c writes the same layout from PyTorch files.
#include "layers/state_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5io.h"
#include "layers/weights.h"

_Static_assert(H5_MAXDIM == T_MAXDIM, "h5io shape arrays hold a tensor's dimensions");

int state_write(hid_t f, const char *group, const param_store *s, char *err, size_t errlen) {
    AG_ASSERT(s->finalized, "state_write before store_finalize");
    h5_quiet();
    hid_t g = H5Gcreate2(f, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return snprintf(err, errlen, "cannot create group '%s'", group), -1;
    int rc = 0;
    for (int i = 0; i < s->n && !rc; i++) {
        const param *p = &s->params[i];
        if (p->kind == PARAM_COUNTER)
            rc = h5_write_int64s(g, p->name, p->counter, 0, NULL, err, errlen);
        else
            rc = h5_write_floats(g, p->name, p->t.data, p->ndim, p->shape, err, errlen);
    }
    H5Gclose(g);
    return rc ? -1 : 0;
}

// ---------------------------------------------------------------------------
// Reading

typedef struct name_list {
    char **names;
    int n, cap;
} name_list;

static int collect(const char *name, void *ctx) {
    name_list *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->names = realloc(l->names, (size_t)l->cap * sizeof(char *));
        AG_ASSERT(l->names != NULL, "out of memory");
    }
    l->names[l->n++] = strdup(name);
    return 0;
}

static void names_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
}

// Shapes were compared by state_read; the element count is checked again on
// the data actually read so nothing is copied past what the file held.
static int load_one(hid_t g, param *p, char *err, size_t errlen) {
    int nd, sh[T_MAXDIM];
    if (p->kind == PARAM_COUNTER) return h5_read_int64_scalar(g, p->name, p->counter, err, errlen);
    float *v;
    if (h5_read_floats(g, p->name, &v, &nd, sh, err, errlen)) return -1;
    if (shape_numel(nd, sh) != p->numel) {
        free(v);
        return snprintf(err, errlen, "tensor %s: %lld values in the file, the model expects %lld",
                        p->name, (long long)shape_numel(nd, sh), (long long)p->numel), -1;
    }
    memcpy(p->t.data, v, (size_t)p->numel * sizeof(float));
    free(v);
    return 0;
}

int state_read(hid_t f, const char *group, param_store *s, bool strict, state_report *rep,
               FILE *log, char *err, size_t errlen) {
    AG_ASSERT(s->finalized, "state_read before store_finalize");
    state_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof(*rep));
    h5_quiet();
    char fname[400] = "<hdf5>";
    if (H5Fget_name(f, fname, sizeof fname) < 0) snprintf(fname, sizeof fname, "<hdf5>");
    if (!h5_exists(f, group)) {
        snprintf(err, errlen, "%s: no group '%s' (not a poster state file?)", fname, group);
        return -1;
    }
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (g < 0) return snprintf(err, errlen, "%s: '%s' is not a group", fname, group), -1;
    name_list file = {0};
    if (h5_list_datasets(f, group, collect, &file) < 0) {
        H5Gclose(g);
        names_free(&file);
        return snprintf(err, errlen, "%s: cannot list group '%s'", fname, group), -1;
    }

    // Classify every tensor before changing anything (the one matcher,
    // layers/weights.h); a dataset whose shape cannot be read is misshaped.
    weights_entry *e = calloc((size_t)(file.n ? file.n : 1), sizeof *e);
    int (*shapes)[T_MAXDIM] = calloc((size_t)(file.n ? file.n : 1), sizeof *shapes);
    param **target = calloc((size_t)(file.n ? file.n : 1), sizeof *target);
    char (*why)[256] = calloc((size_t)(file.n ? file.n : 1), sizeof *why);
    AG_ASSERT(e && shapes && target && why, "out of memory");
    for (int i = 0; i < file.n; i++) {
        e[i].name = file.names[i];
        e[i].shape = shapes[i];
        if (h5_dataset_shape(g, file.names[i], &e[i].ndim, shapes[i], why[i], sizeof why[i]))
            e[i].problem = why[i];
    }
    weights_match(s, e, file.n, "", target, rep, log);
    int problems = rep->missing + rep->unexpected + rep->misshaped;
    int rc = 0;
    if (strict && problems) {
        snprintf(err, errlen,
                 "%s: the state does not match the model (%d missing, %d unexpected, %d "
                 "misshaped); first: %s", fname, rep->missing, rep->unexpected, rep->misshaped,
                 rep->first_problem);
        rc = -1;
    } else {
        for (int i = 0; i < file.n && !rc; i++)
            if (target[i]) rc = load_one(g, target[i], err, errlen);
        if (log && problems)
            fprintf(log, "state: %s: loaded %d tensors; %d missing, %d unexpected, %d misshaped "
                    "(skipped)\n", fname, rep->matched, rep->missing, rep->unexpected,
                    rep->misshaped);
    }
    free(e);
    free(why);
    free(shapes);
    free(target);
    names_free(&file);
    H5Gclose(g);
    return rc;
}

// ---------------------------------------------------------------------------
// Whole files

int state_save(const char *path, const param_store *s, const char *model_options, char *err,
               size_t errlen) {
    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return snprintf(err, errlen, "%s: path too long", path), -1;
    hid_t f = h5_create(tmp, err, errlen);
    if (f < 0) return -1;
    int rc = 0;
    if (h5_write_attr_str(f, "/", "format", STATE_FORMAT) ||
        h5_write_attr_i64(f, "/", "version", STATE_VERSION) ||
        h5_write_attr_str(f, "/", "model_options", model_options ? model_options : "")) {
        snprintf(err, errlen, "%s: cannot write attributes", tmp);
        rc = -1;
    }
    if (!rc) rc = state_write(f, "state_dict", s, err, errlen);
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0 && !rc) {
        snprintf(err, errlen, "%s: flush failed (disk full?)", tmp);
        rc = -1;
    }
    if (h5_close_tmp(f, tmp, rc != 0) && !rc) {
        snprintf(err, errlen, "%s: close failed (disk full?)", tmp);
        rc = -1;
    }
    if (!rc) {
        char e2[1000];
        if (atomic_commit(tmp, path, e2, sizeof e2)) {
            snprintf(err, errlen, "%s: %s", path, e2);
            rc = -1;
        }
    }
    if (rc) remove(tmp);
    return rc;
}

int state_load(const char *path, param_store *s, bool strict, state_report *rep, FILE *log,
               char *err, size_t errlen) {
    hid_t f = h5_open_read(path, err, errlen);
    if (f < 0) return -1;
    char fmt[64] = "";
    int64_t ver = 0;
    if (h5_read_attr_str(f, "/", "format", fmt, sizeof fmt) == 0 && strcmp(fmt, STATE_FORMAT) &&
        strcmp(fmt, STATE_CHECKPOINT_FORMAT)) {
        snprintf(err, errlen, "%s: format '%s', expected '%s'", path, fmt, STATE_FORMAT);
        h5_close(f);
        return -1;
    }
    if (!strcmp(fmt, STATE_FORMAT) && h5_read_attr_i64(f, "/", "version", &ver) == 0 &&
        ver > STATE_VERSION) {
        snprintf(err, errlen, "%s: state version %lld is newer than this program's (%d)", path,
                 (long long)ver, STATE_VERSION);
        h5_close(f);
        return -1;
    }
    int rc = state_read(f, "state_dict", s, strict, rep, log, err, errlen);
    h5_close(f);
    return rc;
}
