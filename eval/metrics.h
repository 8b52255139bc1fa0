// Classification metrics as the papers report them: accuracy, macro F1, the
// official score 0.67 * F1 + 0.33 * accuracy, per-class accuracy (recall), and
// the confusion matrix (rows = target, columns = prediction).
#pragma once
#include <stdint.h>
#include <stdio.h>

typedef struct confusion {
    int k;            // classes
    int64_t *m;       // [k, k] counts, m[target * k + pred]
    int64_t n;        // samples added
} confusion;

void confusion_init(confusion *c, int k);
void confusion_free(confusion *c);
void confusion_reset(confusion *c);
void confusion_add(confusion *c, int target, int pred);
// Adds a batch: predictions are the argmax of logits [n, k] (first maximum wins,
// as torch.max does on CPU).
void confusion_add_logits(confusion *c, const float *logits, const int64_t *targets, int n);
int argmax_row(const float *x, int k);

typedef struct metrics {
    int k;
    int64_t n;
    double accuracy;      // trace / n
    double macro_f1;      // sklearn f1_score(average='macro'): mean over classes that
                          // occur as target or prediction; F1 = 2TP/(2TP+FP+FN)
    double score;         // 0.67 * macro_f1 + 0.33 * accuracy (official)
    double *class_acc;    // [k] TP / row sum (0 for a class with no samples)
    double *class_f1;     // [k]
    double *precision;    // [k]
} metrics;

void metrics_compute(const confusion *c, metrics *out);   // allocates the arrays
void metrics_free(metrics *m);
// Human-readable report: totals, per-class table and the confusion matrix.
// names may be NULL (classes printed as numbers).
void metrics_print(const metrics *m, const confusion *c, const char *const *names, FILE *f);
// CSV: per-class rows then the matrix. Returns 0 or -1 (err names the file).
int metrics_write_csv(const char *path, const metrics *m, const confusion *c,
                      const char *const *names, char *err, size_t errlen);
