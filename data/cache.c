// The HDF5 dataset cache: `poster data prepare` decodes every split once; the
// loader then reads uint8 pixels straight from the file (pread at the byte
// offset of a contiguous dataset: thread-safe, no HDF5 calls in the workers).
//
// Format (version 1), per split group "train" / "val" / "test":
//   pixels  uint8 [total]  every image [h, w, 3] RGB back to back (contiguous)
//   offset  int64 [n]      start of image i in pixels
//   height, width, label  int64 [n]
//   source  uint8 [bytes]  source names, '\n'-terminated, in sample order
// Root attributes: format "poster-data-cache", version 1, dataset_format,
// default_channel_order (the dataset's official order), classes ('\n'-joined).
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5io.h"
#include "data/data_internal.h"

#define CACHE_VERSION 1
#define CHUNK 256

static int write_split(hid_t f, const dataset *d, FILE *log, int *skipped, char *err,
                       size_t errlen) {
    const int n = d->n;
    int64_t *h = calloc((size_t)n, sizeof(int64_t)), *w = calloc((size_t)n, sizeof(int64_t));
    char (*msg)[512] = calloc((size_t)n, 512);
    int rc = -1;
    // Pass 1: sizes (JPEG headers only).
    void *tj = image_tj_decoder();
    for (int i = 0; i < n; i++) {
        if (d->kind == SRC_FILE) {
            int hh, ww;
            if (image_jpeg_size(tj, d->paths[i], &hh, &ww, msg[i], 512)) continue;
            h[i] = hh;
            w[i] = ww;
        } else {
            h[i] = d->ph;
            w[i] = d->pw;
        }
    }
    image_tj_free(tj);
    int64_t *off = malloc((size_t)n * sizeof(int64_t)), total = 0;
    for (int i = 0; i < n; i++) {
        off[i] = total;
        total += h[i] * w[i] * 3;
    }
    char name[64];
    snprintf(name, sizeof name, "%s/pixels", d->split);
    hid_t gcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(gcpl, 1);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_layout(dcpl, H5D_CONTIGUOUS);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hsize_t dims = (hsize_t)(total > 0 ? total : 1);
    hid_t space = H5Screate_simple(1, &dims, NULL);
    hid_t ds = H5Dcreate2(f, name, H5T_NATIVE_UINT8, space, gcpl, dcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    H5Pclose(dcpl);
    if (ds < 0) {
        snprintf(err, errlen, "cannot create %s in the cache", name);
        H5Sclose(space);
        goto out;
    }
    // Pass 2: decode in parallel chunks, write in order.
    image_u8 *ims = calloc(CHUNK, sizeof(image_u8));
    int64_t *lab = malloc((size_t)n * sizeof(int64_t));
    int m = 0;   // kept samples
    int64_t *koff = malloc((size_t)n * sizeof(int64_t)), *kh = malloc((size_t)n * sizeof(int64_t)),
            *kw = malloc((size_t)n * sizeof(int64_t));
    size_t src_cap = 4096, src_len = 0;
    uint8_t *src = malloc(src_cap);
    bool fail = false;
    for (int c0 = 0; c0 < n && !fail; c0 += CHUNK) {
        const int cn = n - c0 < CHUNK ? n - c0 : CHUNK;
#pragma omp parallel
        {
            void *tjl = image_tj_decoder();
#pragma omp for schedule(dynamic, 4)
            for (int k = 0; k < cn; k++) {
                const int i = c0 + k;
                if (msg[i][0]) continue;
                if (dataset_load(d, i, tjl, &ims[k], msg[i], 512)) continue;
                if (ims[k].h != h[i] || ims[k].w != w[i])
                    snprintf(msg[i], 512, "%s: decoded size %dx%d differs from its header",
                             d->paths[i], ims[k].w, ims[k].h);
            }
            image_tj_free(tjl);
        }
        for (int k = 0; k < cn && !fail; k++) {
            const int i = c0 + k;
            if (msg[i][0]) {
                if (!d->skip_bad) {
                    snprintf(err, errlen, "%s", msg[i]);
                    fail = true;
                    break;
                }
                (*skipped)++;
                if (log) fprintf(log, "skipping bad sample: %s\n", msg[i]);
                continue;
            }
            hsize_t start = (hsize_t)off[i], cnt = (hsize_t)(h[i] * w[i] * 3);
            hid_t fs = H5Dget_space(ds);
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &cnt, NULL);
            hid_t ms = H5Screate_simple(1, &cnt, NULL);
            herr_t e = H5Dwrite(ds, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, ims[k].px);
            H5Sclose(ms);
            H5Sclose(fs);
            if (e < 0) {
                snprintf(err, errlen, "writing the pixels of %s into the cache failed",
                         d->paths[i]);
                fail = true;
                break;
            }
            koff[m] = off[i];
            kh[m] = h[i];
            kw[m] = w[i];
            lab[m] = d->labels[i];
            size_t L = strlen(d->paths[i]) + 1;
            while (src_len + L > src_cap) src = realloc(src, src_cap *= 2);
            memcpy(src + src_len, d->paths[i], L - 1);
            src[src_len + L - 1] = '\n';
            src_len += L;
            m++;
        }
        for (int k = 0; k < cn; k++) image_free(&ims[k]);
    }
    H5Dclose(ds);
    H5Sclose(space);
    if (!fail) {
        char nm[64];
        int sh[1] = {m}, shs[1] = {(int)src_len};
        rc = 0;
        snprintf(nm, sizeof nm, "%s/offset", d->split);
        rc |= h5_write_int64s(f, nm, koff, 1, sh, err, errlen);
        snprintf(nm, sizeof nm, "%s/height", d->split);
        rc |= h5_write_int64s(f, nm, kh, 1, sh, err, errlen);
        snprintf(nm, sizeof nm, "%s/width", d->split);
        rc |= h5_write_int64s(f, nm, kw, 1, sh, err, errlen);
        snprintf(nm, sizeof nm, "%s/label", d->split);
        rc |= h5_write_int64s(f, nm, lab, 1, sh, err, errlen);
        snprintf(nm, sizeof nm, "%s/source", d->split);
        rc |= h5_write_uint8s(f, nm, src, 1, shs, err, errlen);
        rc = rc ? -1 : 0;
        if (log && !rc)
            fprintf(log, "cache %s: %d samples, %.1f MB of pixels\n", d->split, m, total / 1e6);
    }
    free(ims);
    free(lab);
    free(koff);
    free(kh);
    free(kw);
    free(src);
out:
    free(h);
    free(w);
    free(msg);
    free(off);
    return rc;
}

int cache_prepare(const config *c, const char *out_path, FILE *log, char *err, size_t errlen) {
    if (*config_str(c, "data.cache")) {
        snprintf(err, errlen, "data.cache is set: prepare reads data.root (clear data.cache)");
        return -1;
    }
    char tmp[1100];
    if (atomic_tmp_name(out_path, tmp, sizeof tmp, err, errlen)) return -1;
    h5_quiet();
    hid_t f = h5_create(tmp, err, errlen);
    if (f < 0) return -1;
    const char *splits[] = {"train", "val", "test"};
    int rc = 0, nsplits = 0, skipped = 0;
    char classes[8192] = "";
    bool bgr = false;
    for (int s = 0; s < 3 && !rc; s++) {
        if (!data_split_exists(c, splits[s])) continue;
        dataset *d;
        if (dataset_open(c, splits[s], &d, err, errlen)) {
            rc = -1;
            break;
        }
        if (nsplits == 0) {
            for (int k = 0; k < d->num_classes; k++) {
                strncat(classes, d->class_names[k], sizeof classes - strlen(classes) - 2);
                if (k + 1 < d->num_classes) strcat(classes, "\n");
            }
            const data_format *fmt = data_format_find(d->format);
            bgr = fmt && fmt->bgr;
        }
        rc = write_split(f, d, log, &skipped, err, errlen);
        dataset_close(d);
        nsplits++;
    }
    if (!rc) {
        h5_write_attr_str(f, "/", "format", "poster-data-cache");
        h5_write_attr_i64(f, "/", "version", CACHE_VERSION);
        h5_write_attr_str(f, "/", "dataset_format", config_str(c, "data.format"));
        h5_write_attr_str(f, "/", "default_channel_order", bgr ? "bgr" : "rgb");
        h5_write_attr_str(f, "/", "classes", classes);
        h5_write_attr_str(f, "/", "root", config_str(c, "data.root"));
    }
    if (h5_close_tmp(f, tmp, rc != 0) && !rc) {
        snprintf(err, errlen, "%s: close failed (disk full?)", tmp);
        rc = -1;
    }
    // fsync'ed and renamed over out_path by the one atomic writer (removes tmp on failure)
    if (!rc && atomic_commit(tmp, out_path, err, errlen)) rc = -1;
    if (rc) unlink(tmp);
    else if (log && skipped)
        fprintf(log, "prepare: skipped %d bad sample%s in total\n", skipped, skipped == 1 ? "" : "s");
    return rc;
}

// The per-sample arrays of a split: each must be int64 [n] with the same n as
// the labels (a damaged cache used to index past the shorter ones).
static int read_index(hid_t f, const char *path, const char *sp, const char *what, int64_t **v,
                      int64_t want_n, int64_t *n, char *err, size_t errlen) {
    char nm[64];
    int nd, sh[H5_MAXDIM];
    snprintf(nm, sizeof nm, "%s/%s", sp, what);
    if (h5_read_int64s(f, nm, v, &nd, sh, err, errlen)) return -1;
    if (nd != 1 || (want_n >= 0 && sh[0] != want_n)) {
        if (want_n < 0)
            snprintf(err, errlen, "%s: corrupt cache: '%s' has %d dimensions, expected 1", path,
                     nm, nd);
        else
            snprintf(err, errlen, "%s: corrupt cache: '%s' has %d dimensions and %d values, "
                     "expected 1 dimension of %lld (the label count)", path, nm, nd,
                     nd >= 1 ? sh[0] : 0, (long long)want_n);
        return -1;
    }
    *n = sh[0];
    return 0;
}

int dataset_open_cache(const config *c, const char *path, const char *split, dataset **out,
                       char *err, size_t errlen) {
    *out = NULL;
    h5_quiet();
    hid_t f = h5_open_ours(path, "dataset cache", err, errlen);
    if (f < 0) return -1;
    char fmt[64] = "", dfmt[16] = "", order[16] = "", root[512] = "";
    const size_t classes_cap = 1 << 16;
    char *classes = calloc(classes_cap, 1);
    AG_ASSERT(classes != NULL, "out of memory");
    int64_t ver = 0;
    int rc = -1;
    dataset *d = NULL;
    int64_t *off = NULL, *hh = NULL, *ww = NULL, *lab = NULL;
    uint8_t *src = NULL;
    if (h5_read_attr_str(f, "/", "format", fmt, sizeof fmt) || strcmp(fmt, "poster-data-cache") ||
        h5_read_attr_i64(f, "/", "version", &ver)) {
        snprintf(err, errlen, "%s: not a dataset cache from `poster data prepare`", path);
        goto done;
    }
    if (ver != CACHE_VERSION) {
        snprintf(err, errlen, "%s: cache version %lld, this program reads version %d (run "
                 "`poster data prepare` again)", path, (long long)ver, CACHE_VERSION);
        goto done;
    }
    h5_read_attr_str(f, "/", "dataset_format", dfmt, sizeof dfmt);
    h5_read_attr_str(f, "/", "default_channel_order", order, sizeof order);
    h5_read_attr_str(f, "/", "root", root, sizeof root);
    h5_read_attr_str(f, "/", "classes", classes, classes_cap);
    const char *sp = split;
    char probe[64];
    snprintf(probe, sizeof probe, "%s/label", sp);
    if (!h5_exists(f, probe)) {
        sp = data_split_stand_in(split);
        snprintf(probe, sizeof probe, "%s/label", sp);
        if (!h5_exists(f, probe)) {
            snprintf(err, errlen, "%s: no split \"%s\" in the cache", path, split);
            goto done;
        }
    }
    int64_t n = 0, n2;
    if (read_index(f, path, sp, "label", &lab, -1, &n, err, errlen) ||
        read_index(f, path, sp, "offset", &off, n, &n2, err, errlen) ||
        read_index(f, path, sp, "height", &hh, n, &n2, err, errlen) ||
        read_index(f, path, sp, "width", &ww, n, &n2, err, errlen))
        goto done;
    int nd, shs[H5_MAXDIM];
    char nm[64];
    snprintf(nm, sizeof nm, "%s/source", sp);
    if (h5_read_uint8s(f, nm, &src, &nd, shs, err, errlen)) goto done;
    if (nd != 1) {
        snprintf(err, errlen, "%s: corrupt cache: '%s' has %d dimensions, expected 1", path, nm,
                 nd);
        goto done;
    }
    // The pixels: a contiguous uint8 [total] dataset whose bytes lie inside the file.
    snprintf(nm, sizeof nm, "%s/pixels", sp);
    int64_t total = -1;
    haddr_t base = HADDR_UNDEF;
    if (h5_exists(f, nm)) {
        hid_t ds = H5Dopen2(f, nm, H5P_DEFAULT);
        if (ds >= 0) {
            hid_t ft = H5Dget_type(ds), dsp = H5Dget_space(ds), pl = H5Dget_create_plist(ds);
            hsize_t dims[2] = {0, 0};
            if (ft >= 0 && dsp >= 0 && pl >= 0 && H5Tget_class(ft) == H5T_INTEGER &&
                H5Tget_size(ft) == 1 && H5Sget_simple_extent_ndims(dsp) == 1 &&
                H5Sget_simple_extent_dims(dsp, dims, NULL) == 1 &&
                H5Pget_layout(pl) == H5D_CONTIGUOUS && H5Dget_storage_size(ds) >= dims[0] &&
                dims[0] < ((hsize_t)1 << 50)) {
                total = (int64_t)dims[0];
                base = H5Dget_offset(ds);
            }
            if (pl >= 0) H5Pclose(pl);
            if (dsp >= 0) H5Sclose(dsp);
            if (ft >= 0) H5Tclose(ft);
            H5Dclose(ds);
        }
    }
    struct stat st;
    if (base == HADDR_UNDEF || stat(path, &st) || (int64_t)base < 0 ||
        (int64_t)base + total > (int64_t)st.st_size) {
        snprintf(err, errlen, "%s: corrupt cache: %s is missing, not a contiguous uint8 [N] "
                 "dataset, or lies past the end of the file", path, nm);
        goto done;
    }
    if (n > INT32_MAX / 2) {
        snprintf(err, errlen, "%s: corrupt cache: %lld samples in %s", path, (long long)n, sp);
        goto done;
    }
    d = dataset_alloc();
    // Classes
    const char *names[1024];
    int K = 0;
    for (char *s = classes, *e; *s; s = e + 1) {
        if (K == 1024) {
            snprintf(err, errlen, "%s: corrupt cache: more than 1024 class names", path);
            goto done;
        }
        e = strchr(s, '\n');
        names[K++] = s;
        if (!e) break;
        *e = 0;
    }
    if (K == 0) {
        snprintf(err, errlen, "%s: corrupt cache: no class names (root attribute 'classes')",
                 path);
        goto done;
    }
    dataset_set_classes(d, K, names);
    char *s = (char *)src;
    const char *end = s + shs[0];
    for (int64_t i = 0; i < n; i++) {
        char *e = memchr(s, '\n', (size_t)(end - s));
        // Every image [h, w, 3] must lie inside the pixels dataset.
        bool size_ok = hh[i] >= 1 && hh[i] <= 65535 && ww[i] >= 1 && ww[i] <= 65535 &&
                       off[i] >= 0 && off[i] <= total && hh[i] * ww[i] * 3 <= total - off[i];
        if (!e || lab[i] < 0 || lab[i] >= K || !size_ok) {
            snprintf(err, errlen, "%s: corrupt cache: sample %lld of %s (%s)", path,
                     (long long)i, sp, !e ? "source names end early"
                     : !size_ok ? "offset/height/width outside the pixels"
                     : "label outside the classes");
            goto done;
        }
        *e = 0;
        dataset_push(d, s, (int)lab[i]);
        s = e + 1;
    }
    d->kind = SRC_CACHE;
    d->cache_off = malloc((size_t)n * sizeof(int64_t) + 8);
    d->cache_h = malloc((size_t)n * sizeof(int) + 4);
    d->cache_w = malloc((size_t)n * sizeof(int) + 4);
    for (int64_t i = 0; i < n; i++) {
        d->cache_off[i] = (int64_t)base + off[i];
        d->cache_h[i] = (int)hh[i];
        d->cache_w[i] = (int)ww[i];
    }
    d->cache_fd = open(path, O_RDONLY);
    if (d->cache_fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    snprintf(d->format, sizeof d->format, "%s", dfmt);
    snprintf(d->split, sizeof d->split, "%s", split);
    snprintf(d->root, sizeof d->root, "%s", root);
    d->bgr = data_channel_bgr(c, !strcmp(order, "bgr"));
    d->skip_bad = config_bool(c, "data.skip_bad");
    long want = config_int(c, "data.num_classes");
    if (want && want != K) {
        snprintf(err, errlen, "data.num_classes = %ld but the cache %s has %d classes", want, path,
                 K);
        goto done;
    }
    rc = 0;
done:
    h5_close(f);
    free(classes);
    free(off);
    free(hh);
    free(ww);
    free(lab);
    free(src);
    if (rc) dataset_close(d);
    else *out = d;
    return rc;
}
