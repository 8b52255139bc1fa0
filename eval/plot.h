// PNG pictures with cairo: the confusion matrix heat map (row-normalized, class
// names on both axes, the value in every cell, as in the paper's figures) and
// the training curves (loss and accuracy per epoch, train and validation).
// Both write PATH.tmp and rename, so a reader never sees half a picture.
#pragma once
#include <stddef.h>
#include <stdint.h>

// m: [k, k] counts, rows = target, columns = prediction. names may be NULL.
int plot_confusion(const char *path, const int64_t *m, int k, const char *const *names,
                   const char *title, char *err, size_t errlen);

// Series over epochs; NaN values are skipped (e.g. no validation that epoch).
typedef struct plot_curves_data {
    int n;                     // epochs
    const double *epoch;       // [n] x values
    const double *train_loss, *val_loss;   // [n]
    const double *train_acc, *val_acc;     // [n], fractions
    const char *title;
} plot_curves_data;

int plot_curves(const char *path, const plot_curves_data *d, char *err, size_t errlen);

// A sweep's accuracy per combination with the spread over seeds: every seed's
// value (dots), the mean (line), mean +- sample std (box) and min-max (whiskers).
typedef struct plot_spread_data {
    int n;                          // combinations
    const char *const *labels;      // [n]
    const double *const *values;    // [n][counts[i]] fractions (NaN skipped)
    const int *counts;              // [n]
    const char *title, *ylabel;
} plot_spread_data;

int plot_spread(const char *path, const plot_spread_data *d, char *err, size_t errlen);

// Hands back what cairo and fontconfig keep for the life of the process (font
// caches, the parsed fontconfig configuration). Call once at exit, after the
// last picture; no cairo object may be alive. Lets valgrind and LeakSanitizer
// see 0 bytes lost without suppressions.
void plot_release_fonts(void);
