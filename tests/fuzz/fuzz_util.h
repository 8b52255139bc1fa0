// Helpers of the libFuzzer targets in tests/fuzz/ (built by tools/fuzz.sh with
// clang -fsanitize=fuzzer,address,undefined; the same entry points run in
// `make test` through tests/test_fuzz_regress.c on the committed corpora).
// The parsers read files, so an input is written to a scratch folder in
// /dev/shm (memory) and opened from there, exactly as a user's file would be.
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/h5io.h"
#include "data/data_internal.h"
#include "train/trainer.h"

// The scratch folder of this process (created on first use).
static const char *fz_dir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/poster_fuzz_%d",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
        mkdir(dir, 0777);
    }
    return dir;
}

static inline void fz_mkdirs(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0777);
            *p = '/';
        }
    mkdir(buf, 0777);
}

// Writes data to DIR/rel (creating the folders), returns the full path (static).
static inline const char *fz_file(const char *rel, const uint8_t *data, size_t n) {
    static char path[4][1024];
    static int k;
    char *p = path[k++ & 3];
    snprintf(p, 1024, "%s/%s", fz_dir(), rel);
    char *slash = strrchr(p, '/');
    *slash = 0;
    fz_mkdirs(p);
    *slash = '/';
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
    return p;
}

// Splits an input in two: the first 2 bytes (little endian) give the length
// of the first part (clamped), the rest is the second part.
static inline void fz_split2(const uint8_t *d, size_t n, const uint8_t **a, size_t *na,
                             const uint8_t **b, size_t *nb) {
    size_t k = n >= 2 ? (size_t)(d[0] | d[1] << 8) : 0;
    d += n >= 2 ? 2 : n;
    n -= n >= 2 ? 2 : n;
    if (k > n) k = n;
    *a = d;
    *na = k;
    *b = d + k;
    *nb = n - k;
}

// A validated configuration with every `poster train` key, data.format and
// data.root set, plus extra "key=value" strings (NULL-terminated).
static inline config *fz_config(const char *format, const char *root, const char *extra1,
                                const char *extra2) {
    static config c;
    char err[2048], kv[1200];
    config_init(&c);
    train_config_register(&c);
    snprintf(kv, sizeof kv, "data.format=%s", format);
    if (config_set(&c, kv, err, sizeof err)) abort();
    snprintf(kv, sizeof kv, "data.root=%s", root);
    if (config_set(&c, kv, err, sizeof err)) abort();
    if (extra1 && config_set(&c, extra1, err, sizeof err)) abort();
    if (extra2 && config_set(&c, extra2, err, sizeof err)) abort();
    if (config_validate(&c, err, sizeof err)) abort();
    return &c;
}

// Opens a split with skip_bad off and on; a failure must say why, a success
// must give labels inside the classes (read back so ASan sees every byte) and,
// for the first `load` samples, images that load (the faces FERPlus holds).
static inline void fz_open_splits_load(config *c, const char *const *splits, int nsplits,
                                       int load) {
    for (int s = 0; s < nsplits; s++)
        for (int skip = 0; skip < 2; skip++) {
            char err[2048] = "";
            dataset *d = NULL;
            int rc = dataset_open_ex(c, splits[s], skip, NULL, &d, err, sizeof err);
            if (rc) {
                if (!err[0] || d) __builtin_trap();   // every failure says why
                continue;
            }
            const int K = dataset_num_classes(d);
            for (int i = 0; i < dataset_size(d); i++) {
                int l = dataset_label(d, i);
                if (l < 0 || l >= K) __builtin_trap();
                if (!dataset_source(d, i)) __builtin_trap();
            }
            for (int k = 0; k < K; k++)
                if (!dataset_class_name(d, k)) __builtin_trap();
            for (int i = 0; i < dataset_size(d) && i < load; i++) {
                image_u8 im;
                if (dataset_load(d, i, NULL, &im, err, sizeof err)) __builtin_trap();
                volatile unsigned sum = 0;
                for (int k = 0; k < im.h * im.w * 3; k++) sum += im.px[k];
                image_free(&im);
            }
            dataset_close(d);
        }
}

static inline void fz_open_splits(config *c, const char *const *splits, int nsplits) {
    fz_open_splits_load(c, splits, nsplits, 0);
}

// The HDF5 targets' setup: no error printing, damaged legacy files refused
// before libhdf5 parses them, and libhdf5's free lists unbounded. Every file
// open callocs a 512 KB metadata cache (H5C_t, a 64K-slot hash table); with the
// default per-list limit libhdf5 frees it at close, and under ASan each open then
// maps, faults in and zeroes fresh pages (~40% of the time), and the unbalanced
// mallocs and frees make libFuzzer run a full leak scan after most inputs. Kept
// on the free list, the block is reused. (libhdf5 is not instrumented: ASan sees
// its malloc and free calls only, so nothing it checked is lost.)
static inline void fz_h5_init(void) {
    h5_quiet();
    h5_set_legacy_ok(false);   // libhdf5 itself may crash on damaged unchecksummed files
    H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
}

// LeakSanitizer: libhdf5 1.10 keeps blocks of its free lists and metadata cache
// after failing to open some damaged files (allocated and lost inside the
// library). Our own HDF5 handles are checked instead: the HDF5 targets require
// H5Fget_obj_count(H5F_OBJ_ALL) == 0 after every input.
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libhdf5_serial.so\nleak:libhdf5.so\nleak:libfontconfig.so\n";
}
