// Helpers of the data tests: scratch trees under tu_tmpdir(), small JPEGs,
// configurations for a format and root.
#pragma once
#include <errno.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "train/trainer.h"


static inline void td_mkdirs(const char *path) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0777);
            *p = '/';
        }
    mkdir(buf, 0777);
}

static inline void td_rmrf(const char *path) {
    char cmd[2100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd)) fprintf(stderr, "rm -rf %s failed\n", path);
}

static inline void td_write(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

// A JPEG of a synthetic face of class k (size 100, or a tiled/cropped w x h).
static inline void td_jpeg(const char *path, int k, uint64_t seed, int h, int w) {
    uint8_t face[100 * 100 * 3];
    synth_face(k % 7, seed, face);
    uint8_t *rgb = malloc((size_t)h * w * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(rgb + ((size_t)y * w + x) * 3, face + ((size_t)(y * 100 / h) * 100 + x * 100 / w) * 3, 3);
    char err[512];
    int rc = image_save_jpeg(path, rgb, h, w, 90, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    free(rgb);
}

// A validated configuration: format, root and extra "k=v" settings (NULL-ended).
static inline config *td_config(const char *format, const char *root, ...) {
    static config c;
    char err[2048], kv[1200];
    config_init(&c);
    train_config_register(&c);
    snprintf(kv, sizeof kv, "data.format=%s", format);
    assert_int_equal(config_set(&c, kv, err, sizeof err), 0);
    snprintf(kv, sizeof kv, "data.root=%s", root);
    assert_int_equal(config_set(&c, kv, err, sizeof err), 0);
    va_list ap;
    va_start(ap, root);
    for (const char *s; (s = va_arg(ap, const char *));) {
        int rc = config_set(&c, s, err, sizeof err);
        if (rc) fprintf(stderr, "%s\n", err);
        assert_int_equal(rc, 0);
    }
    va_end(ap);
    int rc = config_validate(&c, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    return &c;
}

// A RAF-DB tree of synthetic faces: ntrain + ntest images, labels cycling 1..7.
static inline void td_rafdb(const char *root, int ntrain, int ntest) {
    char p[1200];
    td_rmrf(root);
    snprintf(p, sizeof p, "%s/EmoLabel", root);
    td_mkdirs(p);
    snprintf(p, sizeof p, "%s/Image/aligned", root);
    td_mkdirs(p);
    snprintf(p, sizeof p, "%s/EmoLabel/list_patition_label.txt", root);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < ntrain + ntest; i++) {
        bool tr = i < ntrain;
        char name[64];
        if (tr) snprintf(name, sizeof name, "train_%05d", i + 1);
        else snprintf(name, sizeof name, "test_%04d", i - ntrain + 1);
        fprintf(f, "%s.jpg %d\n", name, i % 7 + 1);
        snprintf(p, sizeof p, "%s/Image/aligned/%s_aligned.jpg", root, name);
        td_jpeg(p, i % 7, (uint64_t)i + 1, 100, 100);
    }
    fclose(f);
}
