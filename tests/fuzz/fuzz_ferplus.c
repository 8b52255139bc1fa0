// libFuzzer target: the FERPlus CSV pair, fer2013.csv (emotion, pixels, Usage)
// joined row by row with fer2013new.csv (votes). Input: 2 bytes giving the
// length of fer2013.csv, then fer2013.csv, then fer2013new.csv. Every opened
// split must give faces that load (each split opened once per skip_bad mode).
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
    fz_open_splits_load(c, splits, 3, 4);   // each opened split: 4 faces load
    return 0;
}
