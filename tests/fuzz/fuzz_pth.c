// libFuzzer target for the PyTorch checkpoint reader (zip and legacy containers,
// the restricted unpickler, tensor materialization). Built and run by tools/fuzz.sh
// (clang -fsanitize=fuzzer,address,undefined); its corpus also runs in `make test`
// (tests/test_fuzz_regress.c).
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/pth_read.h"
#include "common/unpickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[1024];
    pth_state *st = pth_load_mem(data, size, "fuzz", err, sizeof err);
    if (st) {
        // touch every element so a wrong length shows up under ASan
        volatile double sum = 0;
        for (int i = 0; i < st->n; i++)
            for (int64_t k = 0; k < st->t[i].numel; k++)
                sum += st->t[i].is_int ? (double)st->t[i].i64[k] : (double)st->t[i].f32[k];
        (void)sum;
        pth_free(st);
    } else if (!err[0]) {
        __builtin_trap();   // every failure must say why
    }
    // The bare unpickler on the same bytes (no persistent loader).
    up_arena *a = up_arena_new(64 * size + 4096);
    if (a) {
        size_t used;
        up_load(a, data, size, &used, NULL, NULL, NULL, err, sizeof err);
        up_arena_free(a);
    }
    return 0;
}
