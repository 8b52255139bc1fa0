// Images per second of the training input pipeline (decode + augment + batch),
// 2 worker threads, for 100x100 (RAF-DB size) and 256x256 JPEGs, 224 output
// and the 112 fast path. Model throughput is measured elsewhere.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "data/data_internal.h"
#include "train/trainer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// A RAF-DB tree of n synthetic faces of size sz (resized with the PIL resize).
static void make_tree(const char *root, int n, int sz) {
    char p[1024];
    mkdir("build", 0777);
    mkdir("build/tmp_data", 0777);
    mkdir(root, 0777);
    snprintf(p, sizeof p, "%s/EmoLabel", root);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/Image", root);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/Image/aligned", root);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/EmoLabel/list_patition_label.txt", root);
    FILE *f = fopen(p, "w");
    uint8_t face[100 * 100 * 3];
    uint8_t *big = malloc((size_t)sz * sz * 3);
    char err[512];
    for (int i = 0; i < n; i++) {
        synth_face(i % 7, (uint64_t)i, face);
        image_u8 im = {100, 100, face};
        const uint8_t *px = face;
        if (sz != 100) {
            image_resize_pil(&im, sz, 1, big);
            px = big;
        }
        fprintf(f, "train_%05d.jpg %d\n", i + 1, i % 7 + 1);
        snprintf(p, sizeof p, "%s/Image/aligned/train_%05d_aligned.jpg", root, i + 1);
        if (image_save_jpeg(p, px, sz, sz, 90, err, sizeof err)) fprintf(stderr, "%s\n", err);
    }
    fclose(f);
    free(big);
}

int main(int argc, char **argv) {
    const int n = argc > 1 ? atoi(argv[1]) : 600, workers = 2, B = 50;
    const int sizes[2] = {100, 256};
    printf("input pipeline: decode + official train augmentation + batch, %d workers, batch %d\n",
           workers, B);
    for (int si = 0; si < 2; si++) {
        char root[256];
        snprintf(root, sizeof root, "build/tmp_data/bench_%d", sizes[si]);
        make_tree(root, n, sizes[si]);
        static config c;
        char err[1024], kv[300];
        config_init(&c);
        train_config_register(&c);
        snprintf(kv, sizeof kv, "data.root=%s", root);
        config_set(&c, kv, err, sizeof err);
        dataset *d;
        if (dataset_open(&c, "train", &d, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        for (int S = 224; S >= 112; S /= 2) {
            loader_opts o = {.batch_size = B, .train_aug = true, .shuffle = true,
                             .workers = workers, .prefetch = 2, .image_size = S, .seed = 1};
            loader *l = loader_create(d, &o, err, sizeof err);
            float *img = malloc((size_t)B * 3 * S * S * sizeof(float));
            int64_t lab[64];
            // Warm-up epoch, then two timed epochs.
            loader_start_epoch(l, 0);
            while (loader_next(l, img, lab, err, sizeof err) > 0) {
            }
            double t0 = now_s();
            long cnt = 0;
            for (int e = 1; e <= 2; e++) {
                loader_start_epoch(l, e);
                int k;
                while ((k = loader_next(l, img, lab, err, sizeof err)) > 0) cnt += k;
            }
            double dt = now_s() - t0;
            printf("  %3dx%-3d JPEG -> %3d: %8.0f images/s\n", sizes[si], sizes[si], S, cnt / dt);
            loader_free(l);
            free(img);
        }
        dataset_close(d);
    }
    return 0;
}
