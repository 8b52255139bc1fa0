// libFuzzer target: AffectNet's one-label-per-image .npy files (any NumPy
// header: version, dtype, shape, order), read alone and as a split of the npy
// layout (train_set/annotations/N_exp.npy next to train_set/images/N.jpg).
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_file("npy/train_set/annotations/0_exp.npy", data, size);
    long v;
    char err[2048] = "";
    if (npy_read_label(p, &v, err, sizeof err) && !err[0]) __builtin_trap();
    static int once;
    if (!once) {   // one (empty) image next to it: the split lists it
        fz_file("npy/train_set/images/0.jpg", (const uint8_t *)"", 0);
        fz_file("npy/valid_set/images/0.jpg", (const uint8_t *)"", 0);
        once = 1;
    }
    fz_file("npy/valid_set/annotations/0_exp.npy", data, size);
    char root[512];
    snprintf(root, sizeof root, "%s/npy", fz_dir());
    static const char *splits[] = {"train", "val"};
    fz_open_splits(fz_config("affectnet", root, "data.affectnet_layout=npy", NULL), splits, 2);
    return 0;
}
