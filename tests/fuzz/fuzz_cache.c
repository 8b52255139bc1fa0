// libFuzzer target: the HDF5 dataset cache of `poster data prepare`: open each
// split and read every image of it (pread at the offsets the file gives).
// FUZZ_WRITE_SEEDS=DIR writes a valid cache of a few 8x8 faces.
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_h5_init();
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (!dir) return 0;
    char root[512], p[1024], err[1024];
    snprintf(root, sizeof root, "%s/seedraf", fz_dir());
    snprintf(p, sizeof p, "%s/EmoLabel", root);
    fz_mkdirs(p);
    snprintf(p, sizeof p, "%s/Image/aligned", root);
    fz_mkdirs(p);
    snprintf(p, sizeof p, "%s/EmoLabel/list_patition_label.txt", root);
    FILE *f = fopen(p, "w");
    fprintf(f, "train_00001.jpg 1\ntrain_00002.jpg 4\ntest_0001.jpg 7\n");
    fclose(f);
    const char *names[] = {"train_00001", "train_00002", "test_0001"};
    for (int i = 0; i < 3; i++) {
        uint8_t face[100 * 100 * 3], small[8 * 8 * 3];
        synth_face(i, (uint64_t)i + 1, face);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                memcpy(small + 3 * (y * 8 + x), face + 3 * ((y * 12) * 100 + x * 12), 3);
        snprintf(p, sizeof p, "%s/Image/aligned/%s_aligned.jpg", root, names[i]);
        if (image_save_jpeg(p, small, 8, 8, 90, err, sizeof err)) fprintf(stderr, "%s\n", err);
    }
    snprintf(p, sizeof p, "%s/cache.h5", dir);
    if (cache_prepare(fz_config("rafdb", root, NULL, NULL), p, NULL, err, sizeof err))
        fprintf(stderr, "%s\n", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_file("cache.h5", data, size);
    config *c = fz_config("rafdb", fz_dir(), NULL, NULL);
    static const char *splits[] = {"train", "val", "test"};
    for (int s = 0; s < 3; s++) {
        char err[2048] = "";
        dataset *d = NULL;
        if (dataset_open_cache(c, p, splits[s], &d, err, sizeof err)) {
            if (!err[0] || d) __builtin_trap();
            continue;
        }
        for (int i = 0; i < dataset_size(d); i++) {
            if (dataset_label(d, i) < 0 || dataset_label(d, i) >= dataset_num_classes(d))
                __builtin_trap();
            image_u8 im;
            if (dataset_load(d, i, NULL, &im, err, sizeof err) == 0) {
                volatile unsigned sum = 0;
                for (int64_t k = 0; k < (int64_t)im.h * im.w * 3; k++) sum += im.px[k];
                image_free(&im);
            }
        }
        dataset_close(d);
    }
    // Every file, group, dataset and attribute we opened is closed again.
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) __builtin_trap();
    return 0;
}
