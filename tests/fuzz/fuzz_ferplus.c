// libFuzzer target: the FERPlus CSV pair, fer2013.csv (emotion, pixels, Usage)
// joined row by row with fer2013new.csv (votes). Input: 2 bytes giving the
// length of fer2013.csv, then fer2013.csv, then fer2013new.csv. Every opened
// split must give 48x48 faces that load.
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t na, nb;
    fz_split2(data, size, &a, &na, &b, &nb);
    fz_file("ferplus/fer2013.csv", a, na);
    fz_file("ferplus/fer2013new.csv", b, nb);
    char root[512];
    snprintf(root, sizeof root, "%s/ferplus", fz_dir());
    config *c = fz_config("ferplus", root, NULL, NULL);
    static const char *splits[] = {"train", "val", "test"};
    fz_open_splits(c, splits, 3);
    char err[2048];
    dataset *d = NULL;
    if (dataset_open_ex(c, "train", true, NULL, &d, err, sizeof err) == 0) {
        for (int i = 0; i < dataset_size(d) && i < 4; i++) {
            image_u8 im;
            if (dataset_load(d, i, NULL, &im, err, sizeof err)) __builtin_trap();
            volatile unsigned s = 0;
            for (int k = 0; k < im.h * im.w * 3; k++) s += im.px[k];
            image_free(&im);
        }
        dataset_close(d);
    }
    return 0;
}
