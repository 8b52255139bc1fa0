// A held-out validation set carved out of the training split (data.val_split):
// stratified (the same fraction of every class), seeded (data.val_seed), and
// disjoint from the samples that stay in training. Model selection (best.h5)
// then uses it, and the test split is evaluated once at the end.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "data/dataset.h"
#include "common/config.h"

// Registers data.val_split and data.val_seed.
void split_config_register(config *c);

// Per class k with count c_k: round(frac * c_k) samples (at most c_k - 1) drawn by a
// seeded partial shuffle of that class's samples go to held[]; the others to rest[].
// Both lists are ascending indices into labels[0..n). Returns *n_held.
int split_stratified(const int *labels, int n, int num_classes, double frac, uint64_t seed,
                     int *held, int *n_held, int *rest, int *n_rest);

// A new dataset of samples idx[0..n) of d (any source kind), named split_name.
dataset *dataset_subset(const dataset *d, const int *idx, int n, const char *split_name);

// The datasets of a training run. data.val_split = 0: train, and val = eval_split
// (the official behaviour), *test = NULL. > 0: train without the held-out samples,
// val = the held-out samples, test = eval_split (evaluated once at the end).
int dataset_open_holdout(const config *c, const char *eval_split, dataset **train,
                         dataset **val, dataset **test, FILE *log, char *err, size_t errlen);
