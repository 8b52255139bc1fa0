// Accuracy, macro F1, the official score, per-class accuracy, confusion matrix.
#include "metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/tensor.h"
#include "common/atomic.h"

void confusion_init(confusion *c, int k) {
    AG_ASSERT(k > 0, "confusion with %d classes", k);
    c->k = k;
    c->m = calloc((size_t)k * k, sizeof(int64_t));
    AG_ASSERT(c->m != NULL, "out of memory");
    c->n = 0;
}

void confusion_free(confusion *c) {
    free(c->m);
    c->m = NULL;
    c->k = 0;
}

void confusion_reset(confusion *c) {
    memset(c->m, 0, (size_t)c->k * c->k * sizeof(int64_t));
    c->n = 0;
}

void confusion_add(confusion *c, int target, int pred) {
    AG_ASSERT(target >= 0 && target < c->k && pred >= 0 && pred < c->k,
              "class out of range: target %d pred %d of %d", target, pred, c->k);
    c->m[(int64_t)target * c->k + pred]++;
    c->n++;
}

int argmax_row(const float *x, int k) {
    int best = 0;
    for (int j = 1; j < k; j++)
        if (x[j] > x[best]) best = j;
    return best;
}

void confusion_add_logits(confusion *c, const float *logits, const int64_t *targets, int n) {
    for (int i = 0; i < n; i++)
        confusion_add(c, (int)targets[i], argmax_row(logits + (int64_t)i * c->k, c->k));
}

void metrics_compute(const confusion *c, metrics *out) {
    const int k = c->k;
    memset(out, 0, sizeof(*out));
    out->k = k;
    out->n = c->n;
    out->class_acc = calloc((size_t)k, sizeof(double));
    out->class_f1 = calloc((size_t)k, sizeof(double));
    out->precision = calloc((size_t)k, sizeof(double));
    AG_ASSERT(out->class_acc && out->class_f1 && out->precision, "out of memory");
    int64_t trace = 0;
    double f1_sum = 0;
    int f1_classes = 0;
    for (int a = 0; a < k; a++) {
        int64_t tp = c->m[(int64_t)a * k + a], row = 0, col = 0;
        for (int b = 0; b < k; b++) {
            row += c->m[(int64_t)a * k + b];
            col += c->m[(int64_t)b * k + a];
        }
        trace += tp;
        int64_t fn = row - tp, fp = col - tp;
        out->class_acc[a] = row ? (double)tp / row : 0.0;
        out->precision[a] = col ? (double)tp / col : 0.0;
        out->class_f1[a] = (2 * tp + fp + fn) ? 2.0 * tp / (double)(2 * tp + fp + fn) : 0.0;
        if (row || col) {   // sklearn averages over labels present in y_true or y_pred
            f1_sum += out->class_f1[a];
            f1_classes++;
        }
    }
    out->accuracy = c->n ? (double)trace / c->n : 0.0;
    out->macro_f1 = f1_classes ? f1_sum / f1_classes : 0.0;
    out->score = 0.67 * out->macro_f1 + 0.33 * out->accuracy;
}

void metrics_free(metrics *m) {
    free(m->class_acc);
    free(m->class_f1);
    free(m->precision);
    m->class_acc = m->class_f1 = m->precision = NULL;
}

static const char *cls_name(const char *const *names, int a, char *buf, size_t n) {
    if (names && names[a]) return names[a];
    snprintf(buf, n, "%d", a);
    return buf;
}

void metrics_print(const metrics *m, const confusion *c, const char *const *names, FILE *f) {
    char b1[32], b2[32];
    fprintf(f, "samples   %lld\naccuracy  %.4f\nmacro F1  %.4f\nscore     %.4f  (0.67*F1 + 0.33*acc)\n",
            (long long)m->n, m->accuracy, m->macro_f1, m->score);
    int w = 9;
    for (int a = 0; a < m->k; a++) {
        int l = (int)strlen(cls_name(names, a, b1, sizeof b1));
        if (l > w) w = l;
    }
    fprintf(f, "\n%-*s %8s %8s %9s %8s\n", w, "class", "samples", "accuracy", "precision", "F1");
    for (int a = 0; a < m->k; a++) {
        int64_t row = 0;
        for (int b = 0; b < m->k; b++) row += c->m[(int64_t)a * m->k + b];
        fprintf(f, "%-*s %8lld %8.4f %9.4f %8.4f\n", w, cls_name(names, a, b1, sizeof b1),
                (long long)row, m->class_acc[a], m->precision[a], m->class_f1[a]);
    }
    fprintf(f, "\nconfusion matrix (rows = target, columns = prediction)\n%-*s", w, "");
    for (int b = 0; b < m->k; b++) {
        const char *nm = cls_name(names, b, b2, sizeof b2);
        fprintf(f, " %8.8s", nm);
    }
    fputc('\n', f);
    for (int a = 0; a < m->k; a++) {
        fprintf(f, "%-*s", w, cls_name(names, a, b1, sizeof b1));
        for (int b = 0; b < m->k; b++) fprintf(f, " %8lld", (long long)c->m[(int64_t)a * m->k + b]);
        fputc('\n', f);
    }
}

int metrics_write_csv(const char *path, const metrics *m, const confusion *c,
                      const char *const *names, char *err, size_t errlen) {
    char tmp[1024], b[32];
    FILE *f = atomic_fopen(path, "w", tmp, sizeof tmp, err, errlen);
    if (!f) return -1;
    fprintf(f, "metric,value\nsamples,%lld\naccuracy,%.6f\nmacro_f1,%.6f\nscore,%.6f\n\n",
            (long long)m->n, m->accuracy, m->macro_f1, m->score);
    fprintf(f, "class,samples,accuracy,precision,f1\n");
    for (int a = 0; a < m->k; a++) {
        int64_t row = 0;
        for (int j = 0; j < m->k; j++) row += c->m[(int64_t)a * m->k + j];
        fprintf(f, "%s,%lld,%.6f,%.6f,%.6f\n", cls_name(names, a, b, sizeof b), (long long)row,
                m->class_acc[a], m->precision[a], m->class_f1[a]);
    }
    fprintf(f, "\ntarget\\prediction");
    for (int j = 0; j < m->k; j++) fprintf(f, ",%s", cls_name(names, j, b, sizeof b));
    fputc('\n', f);
    for (int a = 0; a < m->k; a++) {
        fprintf(f, "%s", cls_name(names, a, b, sizeof b));
        for (int j = 0; j < m->k; j++) fprintf(f, ",%lld", (long long)c->m[(int64_t)a * m->k + j]);
        fputc('\n', f);
    }
    return atomic_fclose(f, tmp, path, err, errlen);
}
