// HDF5 helpers: datasets of float32 / int64 / uint8 and string attributes.
#include "common/h5io.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void h5_file_name(hid_t loc, char *buf, size_t n) {
    buf[0] = 0;
    if (H5Fget_name(loc, buf, n) < 0) snprintf(buf, n, "<hdf5>");
}

hid_t h5_open_read(const char *path, char *err, size_t errlen) {
    h5_quiet();
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open file", path);
        return -1;
    }
    fclose(fp);
    if (H5Fis_hdf5(path) <= 0) {
        snprintf(err, errlen, "%s: not an HDF5 file", path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) snprintf(err, errlen, "%s: HDF5 cannot open it (corrupt or truncated?)", path);
    return f;
}

// Files we write use the 1.8+ file format (superblock 2, object header 2):
// every piece of metadata carries a checksum that HDF5 verifies when reading,
// so a damaged file is refused before the library parses its structures
// (libhdf5 1.10 can crash on damaged unchecksummed metadata). h5py and
// HDF5 >= 1.8 read these files.
hid_t h5_create(const char *path, char *err, size_t errlen) {
    h5_quiet();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) snprintf(err, errlen, "%s: cannot create HDF5 file", path);
    return f;
}

static bool g_legacy_ok = true;
void h5_set_legacy_ok(bool ok) { g_legacy_ok = ok; }

hid_t h5_open_ours(const char *path, const char *what, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open file", path);
        return -1;
    }
    unsigned char head[9] = {0};
    size_t n = fread(head, 1, sizeof head, fp);
    fclose(fp);
    if (n == sizeof head && !memcmp(head, "\x89HDF\r\n\x1a\n", 8) && head[8] < 2) {
        if (!g_legacy_ok) {
            snprintf(err, errlen, "%s: HDF5 superblock version %d: not a %s written by this "
                     "program (ours are version 2 or later, with checksummed metadata)", path,
                     head[8], what);
            return -1;
        }
        // Written by an earlier version of this program (or by h5py): the user's
        // work, so it loads; its metadata has no checksums, so damage may go unseen.
        fprintf(stderr, "note: %s: a %s without checksummed metadata (HDF5 superblock %d, "
                "written by an earlier version); it loads, and the next save writes the "
                "checksummed format\n", path, what, head[8]);
    }
    return h5_open_read(path, err, errlen);
}

int h5_close(hid_t f) { return H5Fclose(f) < 0 ? -1 : 0; }

int h5_close_tmp(hid_t f, const char *path, bool failed) {
    if (!failed) return H5Fclose(f) < 0 ? -1 : 0;
    // After a failed write (disk full) HDF5 cannot flush its metadata and keeps
    // the file open (libhdf5 then crashes closing it at exit). Truncating the
    // temporary file first frees its space, so this one close can finish.
    // (Never close twice: a second H5Fclose of a failed file crashes libhdf5.)
    if (truncate(path, 0) != 0) { /* the close reports what it can */ }
    H5Fclose(f);
    return -1;
}

int h5_check_room(const char *path, uint64_t bytes, char *err, size_t errlen) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else snprintf(dir, sizeof dir, ".");
    struct statvfs vs;
    if (statvfs(dir, &vs) == 0) {
        uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
        if (avail < bytes)
            return ERR("%s: not enough free space in %s: about %.1f MB needed, %.1f MB free "
                       "(disk full?)", path, dir, bytes / 1e6, avail / 1e6);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (uint64_t)rl.rlim_cur < bytes)
        return ERR("%s: about %.1f MB to write but files are limited to %.1f MB (ulimit -f)",
                   path, bytes / 1e6, (double)rl.rlim_cur / 1e6);
    return 0;
}

bool h5_exists(hid_t loc, const char *path) {
    // H5Lexists fails on a missing intermediate group, so check each prefix.
    char buf[512];
    size_t n = strlen(path);
    if (n >= sizeof(buf)) return false;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            htri_t e = H5Lexists(loc, buf, H5P_DEFAULT);
            buf[i] = c;
            if (e <= 0) return false;
        }
    }
    return true;
}

// Checks a dataset before a byte of it is used: rank, every extent (fits an
// int), the element type's class (numbers only; uint8 wants 1-byte integers),
// and that the stored bytes can hold what the shape claims, so a damaged or
// hostile file can neither overflow the size computation nor make us allocate
// far more than the file holds (chunked/compressed data may expand up to 1024x).
static int check_dataset(hid_t ds, const char *fname, const char *name, hid_t memtype,
                         int *ndim, int *shape, size_t *count_out, char *err, size_t errlen) {
    hid_t sp = H5Dget_space(ds), ft = H5Dget_type(ds), pl = H5Dget_create_plist(ds);
    int rc = 0;
    if (sp < 0 || ft < 0 || pl < 0) {
        rc = ERR("%s: dataset '%s' has an unreadable header", fname, name);
        goto out;
    }
    H5S_class_t scls = H5Sget_simple_extent_type(sp);
    int nd = H5Sget_simple_extent_ndims(sp);
    if (scls == H5S_NULL || nd < 0 || nd > H5_MAXDIM) {
        rc = ERR("%s: dataset '%s' has %d dimensions (at most %d)", fname, name, nd, H5_MAXDIM);
        goto out;
    }
    hsize_t dims[H5_MAXDIM + 1];
    if (nd > 0 && H5Sget_simple_extent_dims(sp, dims, NULL) != nd) {
        rc = ERR("%s: dataset '%s': cannot read its shape", fname, name);
        goto out;
    }
    H5T_class_t tcls = H5Tget_class(ft);
    size_t tsize = H5Tget_size(ft);
    bool want_u8 = H5Tequal(memtype, H5T_NATIVE_UINT8) > 0;
    bool want_int = want_u8 || H5Tequal(memtype, H5T_NATIVE_INT64) > 0;
    bool type_ok = tsize >= 1 && tsize <= 8 &&
                   (tcls == H5T_INTEGER || (!want_int && tcls == H5T_FLOAT)) &&
                   (!want_u8 || tsize == 1);
    if (!type_ok) {
        static const char *cls[] = {"integer", "float", "time", "string", "bitfield", "opaque",
                                    "compound", "reference", "enum", "variable-length", "array"};
        rc = ERR("%s: dataset '%s' holds %s elements of %zu bytes, expected %s", fname, name,
                 tcls >= 0 && tcls < 11 ? cls[tcls] : "unknown", tsize,
                 want_u8 ? "uint8" : want_int ? "an integer" : "a float or integer");
        goto out;
    }
    // Element count with overflow checks (limit 2^40 elements).
    uint64_t count = 1;
    for (int i = 0; i < nd; i++) {
        if (dims[i] > (hsize_t)INT32_MAX || (dims[i] && count > ((uint64_t)1 << 40) / dims[i])) {
            rc = ERR("%s: dataset '%s' has an absurd extent %llu in dimension %d", fname, name,
                     (unsigned long long)dims[i], i);
            goto out;
        }
        count *= dims[i];
        shape[i] = (int)dims[i];
    }
    uint64_t need = count * tsize, have = H5Dget_storage_size(ds);
    H5D_layout_t lay = H5Pget_layout(pl);
    bool ok = lay == H5D_CHUNKED ? need <= 1024 * have + (1u << 20) : need <= have;
    if (count > 0 && !ok) {
        rc = ERR("%s: dataset '%s' claims %llu elements (%llu bytes) but stores %llu bytes "
                 "(truncated or corrupt file?)", fname, name, (unsigned long long)count,
                 (unsigned long long)need, (unsigned long long)have);
        goto out;
    }
    *ndim = nd;
    *count_out = (size_t)count;
out:
    if (pl >= 0) H5Pclose(pl);
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

static int read_any(hid_t loc, const char *name, hid_t memtype, size_t elsize, void **out,
                    int *ndim, int *shape, char *err, size_t errlen) {
    char fname[256];
    h5_file_name(loc, fname, sizeof fname);
    *out = NULL;
    if (!h5_exists(loc, name)) return ERR("%s: dataset '%s' is missing", fname, name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return ERR("%s: '%s' is not a dataset", fname, name);
    size_t count = 0;
    if (check_dataset(ds, fname, name, memtype, ndim, shape, &count, err, errlen)) {
        H5Dclose(ds);
        return -1;
    }
    void *buf = calloc(count ? count : 1, elsize);
    int rc = 0;
    if (!buf) rc = ERR("%s: out of memory reading '%s'", fname, name);
    else if (count && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        buf = NULL;
        rc = ERR("%s: cannot read dataset '%s' (corrupt data or type not convertible)", fname,
                 name);
    }
    H5Dclose(ds);
    *out = buf;
    return rc;
}

int h5_read_floats(hid_t loc, const char *name, float **out, int *ndim, int *shape,
                   char *err, size_t errlen) {
    return read_any(loc, name, H5T_NATIVE_FLOAT, sizeof(float), (void **)out, ndim, shape,
                    err, errlen);
}

int h5_read_int64s(hid_t loc, const char *name, int64_t **out, int *ndim, int *shape,
                   char *err, size_t errlen) {
    return read_any(loc, name, H5T_NATIVE_INT64, sizeof(int64_t), (void **)out, ndim,
                    shape, err, errlen);
}

int h5_read_uint8s(hid_t loc, const char *name, uint8_t **out, int *ndim, int *shape,
                   char *err, size_t errlen) {
    return read_any(loc, name, H5T_NATIVE_UINT8, 1, (void **)out, ndim, shape, err,
                    errlen);
}

int h5_dataset_shape(hid_t loc, const char *name, int *ndim, int *shape, char *err,
                     size_t errlen) {
    char fname[256];
    h5_file_name(loc, fname, sizeof fname);
    if (!h5_exists(loc, name)) return ERR("%s: dataset '%s' is missing", fname, name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return ERR("%s: '%s' is not a dataset", fname, name);
    size_t count;
    int rc = check_dataset(ds, fname, name, H5T_NATIVE_FLOAT, ndim, shape, &count, err, errlen);
    H5Dclose(ds);
    return rc;
}

int h5_read_int64_scalar(hid_t loc, const char *name, int64_t *v, char *err, size_t errlen) {
    int64_t *p = NULL;
    int nd, shape[H5_MAXDIM];
    if (h5_read_int64s(loc, name, &p, &nd, shape, err, errlen)) return -1;
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    if (n != 1) {
        char fname[256];
        h5_file_name(loc, fname, sizeof fname);
        free(p);
        return ERR("%s: '%s' has %lld values, expected one", fname, name, (long long)n);
    }
    *v = p[0];
    free(p);
    return 0;
}

static int write_any(hid_t loc, const char *name, hid_t filetype, hid_t memtype,
                     const void *data, int ndim, const int *shape, char *err,
                     size_t errlen) {
    char fname[256];
    h5_file_name(loc, fname, sizeof fname);
    hsize_t dims[H5_MAXDIM];
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
    hid_t sp = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t ds = H5Dcreate2(loc, name, filetype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    int rc = 0;
    if (ds < 0) rc = ERR("%s: cannot create dataset '%s'", fname, name);
    else if (H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        rc = ERR("%s: cannot write dataset '%s' (disk full?)", fname, name);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(lcpl);
    H5Sclose(sp);
    return rc;
}

int h5_write_floats(hid_t loc, const char *name, const float *data, int ndim,
                    const int *shape, char *err, size_t errlen) {
    return write_any(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, ndim, shape, err,
                     errlen);
}

int h5_write_int64s(hid_t loc, const char *name, const int64_t *data, int ndim,
                    const int *shape, char *err, size_t errlen) {
    return write_any(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, data, ndim, shape, err,
                     errlen);
}

int h5_write_uint8s(hid_t loc, const char *name, const uint8_t *data, int ndim,
                    const int *shape, char *err, size_t errlen) {
    return write_any(loc, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, data, ndim, shape, err,
                     errlen);
}

int h5_write_attr_str(hid_t loc, const char *obj, const char *name, const char *value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    hid_t sp = H5Screate(H5S_SCALAR);
    if (H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) > 0)
        H5Adelete_by_name(loc, obj, name, H5P_DEFAULT);
    hid_t a = H5Acreate_by_name(loc, obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT);
    int rc = (a >= 0 && H5Awrite(a, t, value) >= 0) ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

int h5_write_attr_i64(hid_t loc, const char *obj, const char *name, int64_t value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) > 0)
        H5Adelete_by_name(loc, obj, name, H5P_DEFAULT);
    hid_t a = H5Acreate_by_name(loc, obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT);
    int rc = (a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &value) >= 0) ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

int h5_read_attr_str(hid_t loc, const char *obj, const char *name, char *out, size_t n) {
    out[0] = 0;
    if (H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) <= 0) return -1;
    hid_t a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {
            // h5py writes variable-length strings by default.
            char *s = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ft));   // h5py writes UTF-8; no ASCII<->UTF-8 conversion
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(out, n, "%s", s);
                H5free_memory(s);
                rc = 0;
            }
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(ft);
            char *buf = calloc(sz + 1, 1);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, sz + 1);
            H5Tset_cset(mt, H5Tget_cset(ft));
            if (buf && H5Aread(a, mt, buf) >= 0) {
                snprintf(out, n, "%s", buf);
                rc = 0;
            }
            H5Tclose(mt);
            free(buf);
        }
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int h5_read_attr_i64(hid_t loc, const char *obj, const char *name, int64_t *out) {
    if (H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) <= 0) return -1;
    hid_t a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, H5T_NATIVE_INT64, out) >= 0 ? 0 : -1;
    H5Aclose(a);
    return rc;
}

typedef struct {
    int (*fn)(const char *, void *);
    void *ctx;
    int stop;
} list_ctx;

static herr_t list_cb(hid_t obj, const char *name, const H5O_info_t *info, void *op) {
    (void)obj;
    list_ctx *c = op;
    if (info->type != H5O_TYPE_DATASET) return 0;
    c->stop = c->fn(name, c->ctx);
    return c->stop ? 1 : 0;
}

int h5_list_datasets(hid_t loc, const char *group,
                     int (*fn)(const char *name, void *ctx), void *ctx) {
    if (!h5_exists(loc, group) && strcmp(group, "/") != 0) return -1;
    hid_t g = H5Gopen2(loc, group, H5P_DEFAULT);
    if (g < 0) return -1;
    list_ctx c = {fn, ctx, 0};
    herr_t r = H5Ovisit2(g, H5_INDEX_NAME, H5_ITER_INC, list_cb, &c, H5O_INFO_BASIC);
    H5Gclose(g);
    return r < 0 ? -1 : c.stop;
}
