// Random numbers and the one 64-bit hash. Everything seeded here is reproducible:
// the same seed gives the same stream on every machine, thread count and rank.
#pragma once
#include <stdint.h>

// splitmix64 (Steele, Lea, Flood 2014): the increment and the finalizer.
#define HASH_GOLDEN 0x9e3779b97f4a7c15ULL

// The finalizer alone: a bijective mix of 64 bits.
static inline uint64_t hash_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// splitmix64's output for the state x before its increment: the value of a
// counter-based stream at position x (the generator's n-th output is
// splitmix64(seed + n * HASH_GOLDEN)).
static inline uint64_t splitmix64(uint64_t x) { return hash_mix64(x + HASH_GOLDEN); }

// FNV-1a, 64 bits, of a NUL-terminated string (names -> stream offsets).
static inline uint64_t hash_fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

// ---- random numbers (seeded, reproducible, state can be saved) ----
typedef struct rng {
    uint64_t s[4];           // xoshiro256**
    int has_spare;           // Box-Muller spare normal
    double spare;
} rng;
void rng_seed(rng *r, uint64_t seed);
uint64_t rng_u64(rng *r);
double rng_uniform(rng *r);            // [0, 1)
double rng_normal(rng *r);             // N(0, 1)
int64_t rng_below(rng *r, int64_t n);  // uniform in [0, n)
