// libFuzzer target: the JPEG decode wrapper (corrupt, truncated, huge
// dimensions, CMYK, grey, progressive), the header-only size probe, and the
// evaluation pipeline (PIL resize + normalize) on whatever decodes.
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static void *tj;
    if (!tj) tj = image_tj_decoder();
    image_u8 im = {0, 0, NULL};
    char err[512] = "";
    int rc = image_decode_jpeg(tj, data, size, &im, err, sizeof err);
    if (rc) {
        if (!err[0] || im.px) __builtin_trap();
    } else {
        if (im.h <= 0 || im.w <= 0 || !im.px) __builtin_trap();
        static aug_scratch sc;
        static float out[3 * 112 * 112];
        // Keep the resize cheap: only small images go through it.
        if ((int64_t)im.h * im.w <= 1 << 20) aug_apply(&im, NULL, im.w & 1, 224, 2, &sc, out);
        image_free(&im);
    }
    const char *p = fz_file("img.jpg", data, size);
    int h, w;
    err[0] = 0;
    if (image_jpeg_size(tj, p, &h, &w, err, sizeof err)) {
        if (!err[0]) __builtin_trap();
    } else if (h <= 0 || w <= 0) {
        __builtin_trap();
    }
    return 0;
}
