// Sample orders of an epoch. Each depends only on (seed, epoch), so a resumed
// run and any number of loader threads see the same order.
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

uint64_t data_mix_seed(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t h = splitmix64(a);
    h = splitmix64(h ^ b);
    h = splitmix64(h ^ c);
    return splitmix64(h ^ d);
}

void sampler_sequential(int *order, int n) {
    for (int i = 0; i < n; i++) order[i] = i;
}

void sampler_shuffle(int *order, int n, uint64_t seed, int epoch) {
    rng r;
    rng_seed(&r, data_mix_seed(seed, 0x5A3, (uint64_t)epoch, 0));
    for (int i = 0; i < n; i++) order[i] = i;
    // Fisher-Yates
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(&r, i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

// Weight 1/count(class) per sample gives every present class the same total
// weight: draw a class uniformly among the present ones, then a member of it
// uniformly. Same distribution as torch's WeightedRandomSampler(replacement).
void sampler_balanced(int *order, int n, const int *labels, int num_classes, uint64_t seed,
                      int epoch) {
    if (n <= 0) return;
    int *count = calloc((size_t)num_classes, sizeof(int));
    int *start = calloc((size_t)num_classes + 1, sizeof(int));
    int *members = malloc((size_t)n * sizeof(int));
    int *present = malloc((size_t)num_classes * sizeof(int));
    for (int i = 0; i < n; i++) {
        AG_ASSERT(labels[i] >= 0 && labels[i] < num_classes, "label %d", labels[i]);
        count[labels[i]]++;
    }
    int np = 0;
    for (int k = 0; k < num_classes; k++) {
        start[k + 1] = start[k] + count[k];
        if (count[k]) present[np++] = k;
    }
    int *fill = calloc((size_t)num_classes, sizeof(int));
    for (int i = 0; i < n; i++) members[start[labels[i]] + fill[labels[i]]++] = i;
    rng r;
    rng_seed(&r, data_mix_seed(seed, 0xBA1, (uint64_t)epoch, 0));
    for (int i = 0; i < n; i++) {
        int k = present[rng_below(&r, np)];
        order[i] = members[start[k] + rng_below(&r, count[k])];
    }
    free(fill);
    free(count);
    free(start);
    free(members);
    free(present);
}
