// libFuzzer target: the label lists of RAF-DB (list_patition_label.txt),
// AffectNet (POSTER's annotation lists and the original training.csv) and the
// custom "path,label" CSV list. The first input byte picks the parser, the
// rest is the file. Images are not needed to open a split.
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int which = data[0] % 6;
    data++;
    size--;
    char root[512];
    snprintf(root, sizeof root, "%s/lists%d", fz_dir(), which);
    static const char *two[] = {"train", "test"}, *val[] = {"train", "val"};
    switch (which) {
    case 0:
        fz_file("lists0/EmoLabel/list_patition_label.txt", data, size);
        fz_open_splits(fz_config("rafdb", root, NULL, NULL), two, 2);
        break;
    case 1:
    case 2:
        fz_file(which == 1 ? "lists1/train_set/train_annotations_7class.txt"
                           : "lists2/train_set/train_annotations_8class.txt", data, size);
        fz_file(which == 1 ? "lists1/valid_set/valid_annotations_7class.txt"
                           : "lists2/valid_set/valid_annotations_8class.txt", data, size);
        fz_open_splits(fz_config("affectnet", root, "data.affectnet_layout=lists",
                                 which == 1 ? "model.num_classes=7" : "model.num_classes=8"),
                       val, 2);
        break;
    case 3:
        fz_file("lists3/Manually_Annotated_file_lists/training.csv", data, size);
        fz_file("lists3/Manually_Annotated_file_lists/validation.csv", data, size);
        fz_open_splits(fz_config("affectnet", root, "data.affectnet_layout=original", NULL),
                       val, 2);
        break;
    case 4:
    case 5:
        // The same list as train and val; case 5 names the classes.
        fz_file(which == 4 ? "lists4/train.csv" : "lists5/train.csv", data, size);
        fz_file(which == 4 ? "lists4/val.csv" : "lists5/val.csv", data, size);
        fz_open_splits(fz_config("csv", root, which == 5 ? "data.classes=a,b,c" : NULL, NULL),
                       val, 2);
        break;
    }
    return 0;
}
