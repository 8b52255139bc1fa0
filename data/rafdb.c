// RAF-DB basic (docs/POSTER.md, "Datasets on disk"): EmoLabel/list_patition_label.txt
// ("train_00001.jpg 5", labels 1..7) and Image/aligned/<name>_aligned.jpg. The
// split is the name prefix; there is no validation split (val reads test, as
// the official code evaluates on test). Official channel order BGR (OpenCV).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

static const char *const k_classes[] = {"Surprise", "Fear",    "Disgust", "Happiness",
                                        "Sadness",  "Anger",   "Neutral"};

// split: "train" or "test" (the table maps val onto test).
static int rafdb_open(const config *c, dataset *d, const char *split, pctx *p) {
    (void)c;
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%s_", split);
    char list[1024];
    snprintf(list, sizeof list, "%s/EmoLabel/list_patition_label.txt", d->root);
    FILE *f = parse_open_list(p, list);
    if (!f) return -1;
    char *buf = NULL, path[1200];
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && parse_line(f, &buf, &cap, &p->line)) {
        if (parse_blank(buf)) continue;
        char name[512], extra[8];
        long lab;
        char ls[64];
        int nf = sscanf(buf, "%511s %63s %7s", name, ls, extra);
        if (nf != 2) {
            rc = parse_bad(p, "expected \"<name>.jpg <label 1..7>\", got \"%.80s\"", buf);
            continue;
        }
        if (!parse_int(ls, &lab) || lab < 1 || lab > 7) {
            rc = parse_bad(p, "label \"%s\" is not in 1..7", ls);
            continue;
        }
        if (strncmp(name, "train_", 6) && strncmp(name, "test_", 5)) {
            rc = parse_bad(p, "name \"%s\" starts with neither train_ nor test_", name);
            continue;
        }
        if (strncmp(name, prefix, strlen(prefix))) continue;
        char *dot = strrchr(name, '.');
        if (dot) *dot = 0;
        snprintf(path, sizeof path, "%s/Image/aligned/%s_aligned.jpg", d->root, name);
        dataset_push(d, path, (int)lab - 1);
    }
    free(buf);
    fclose(f);
    dataset_set_classes(d, 7, k_classes);
    return rc;
}

const data_format data_format_rafdb = {
    .name = "rafdb",
    .open = rafdb_open,
    .split_of = {"train", "test", "test"},
    .bgr = true,
    .needs_root = true,
};
