// libFuzzer target: the INI recipe reader and --set values. Input: 2 bytes of
// length, the INI file, then one --set assignment per line. Validation must
// accept or reject with a message; an accepted configuration must give every
// typed value, the resolved dump, and the model, training and loader options.
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // `include = /dev/zero` would read forever: device files are not recipes.
    for (size_t i = 0; i + 5 <= size; i++)
        if (!memcmp(data + i, "/dev", 4) || !memcmp(data + i, "/proc", 5) ||
            !memcmp(data + i, "/sys", 4))
            return 0;
    const uint8_t *ini, *sets;
    size_t nini, nsets;
    fz_split2(data, size, &ini, &nini, &sets, &nsets);
    static config c;
    config_init(&c);
    train_config_register(&c);
    char err[2048] = "";
    const char *path = fz_file("recipe.ini", ini, nini);
    int rc = config_load(&c, path, err, sizeof err);
    if (rc && !err[0]) __builtin_trap();
    char line[1024];
    for (size_t i = 0; i < nsets && rc == 0;) {
        size_t j = i;
        while (j < nsets && sets[j] != '\n') j++;
        size_t L = j - i < sizeof line - 1 ? j - i : sizeof line - 1;
        memcpy(line, sets + i, L);
        line[L] = 0;
        err[0] = 0;
        if (config_set(&c, line, err, sizeof err) && !err[0]) __builtin_trap();
        i = j + 1;
    }
    err[0] = 0;
    if (config_validate(&c, err, sizeof err)) {
        if (!err[0]) __builtin_trap();
        return 0;
    }
    char *dump = config_dump(&c);
    // The dump is itself a valid recipe that resolves to the same values.
    const char *p2 = fz_file("dump.ini", (const uint8_t *)dump, strlen(dump));
    static config c2;
    config_init(&c2);
    train_config_register(&c2);
    if (config_load(&c2, p2, err, sizeof err) || config_validate(&c2, err, sizeof err))
        __builtin_trap();
    char *dump2 = config_dump(&c2);
    if (strcmp(dump, dump2)) __builtin_trap();
    free(dump);
    free(dump2);
    train_opts to;
    train_opts_from_config(&c, &to, err, sizeof err);
    poster_opts po;
    train_model_opts(&c, 7, &po, err, sizeof err);
    loader_opts lo;
    train_loader_opts(&c, &lo, 8, true);
    return 0;
}
