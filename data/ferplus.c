// FERPlus (docs/POSTER.md, "Datasets on disk"): fer2013.csv (emotion, pixels,
// Usage) joined row by row with fer2013new.csv (Usage, Image name, 10 vote
// columns). Splits: train = Training, val = PublicTest, test = PrivateTest. The
// 48x48 grey faces are held in memory (SRC_PIXELS). Official order RGB.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

static const char *const k_classes[] = {"Neutral", "Happiness", "Surprise", "Sadness",
                                        "Anger",   "Disgust",   "Fear",     "Contempt"};

// Majority mode as the FERPlus authors' code: votes <= 1 zeroed; the top class
// (first on ties) counts when its votes exceed half the remaining total, else
// the face is unknown; unknown/NF dropped.
int ferplus_majority(const double votes_in[10]) {
    double v[10], sum = 0, maxv = 0;
    int arg = 0;
    for (int k = 0; k < 10; k++) {
        v[k] = votes_in[k] < 1.0 + 2.220446049250313e-16 ? 0.0 : votes_in[k];
        sum += v[k];
    }
    for (int k = 0; k < 10; k++)
        if (v[k] > maxv) {
            maxv = v[k];
            arg = k;
        }
    if (!(maxv > 0.5 * sum)) return -1;   // unknown
    return arg < 8 ? arg : -1;            // unknown or NF: dropped
}

static int ferplus_open(const config *c, dataset *d, const char *split, pctx *p) {
    const char *usage = !strcmp(split, "train") ? "Training"
                        : !strcmp(split, "val") ? "PublicTest"
                                                : "PrivateTest";
    (void)c;
    char f1[1024], f2[1024];
    snprintf(f1, sizeof f1, "%s/fer2013.csv", d->root);
    snprintf(f2, sizeof f2, "%s/fer2013new.csv", d->root);
    FILE *a = parse_open_list(p, f1);
    if (!a) return -1;
    FILE *b = parse_open_list(p, f2);
    if (!b) {
        fclose(a);
        return -1;
    }
    char *la = NULL, *lb = NULL;
    size_t ca = 0, cb = 0;
    int na = 0, nb = 0, rc = 0, excluded = 0;
    size_t pcap = 0;
    d->ph = d->pw = 48;
    const int NP = 48 * 48;
    // Headers
    bool ha = parse_line(a, &la, &ca, &na), hb = parse_line(b, &lb, &cb, &nb);
    if (!ha || !strstr(la, "pixels")) {
        p->file = f1;
        p->line = na;
        rc = parse_bad(p, "expected the header \"emotion,pixels,Usage\"");
        if (p->skip) rc = -1;   // a missing header is not a sample: always fatal
    }
    if (!rc && (!hb || !strstr(lb, "Usage"))) {
        p->file = f2;
        p->line = nb;
        rc = parse_bad(p, "expected the header \"Usage,Image name,neutral,...,NF\"");
        if (p->skip) rc = -1;
    }
    while (!rc) {
        bool ga = parse_line(a, &la, &ca, &na), gb = parse_line(b, &lb, &cb, &nb);
        if (!ga && !gb) break;
        if (ga != gb) {
            p->file = ga ? f2 : f1;
            p->line = ga ? nb + 1 : na + 1;
            snprintf(p->err, p->errlen, "%s ends at line %d but %s has more rows: the two files "
                     "must have the same rows", ga ? f2 : f1, ga ? nb : na, ga ? f1 : f2);
            rc = -1;
            break;
        }
        char *fa[4], *fb[14];
        int nfa = parse_csv_split(la, fa, 4), nfb = parse_csv_split(lb, fb, 14);
        p->file = f2;
        p->line = nb;
        if (nfb != 12) {
            rc = parse_bad(p, "expected 12 columns (Usage, Image name, 10 votes), got %d", nfb);
            continue;
        }
        p->file = f1;
        p->line = na;
        if (nfa != 3) {
            rc = parse_bad(p, "expected 3 columns (emotion, pixels, Usage), got %d", nfa);
            continue;
        }
        char *ua = parse_trim(fa[2]), *ub = parse_trim(fb[0]);
        if (strcmp(ua, ub)) {
            rc = parse_bad(p, "Usage \"%s\" differs from \"%s\" in %s:%d", ua, ub, f2, nb);
            continue;
        }
        if (strcmp(ua, usage)) continue;
        if (!*parse_trim(fb[1])) {
            excluded++;   // no FERPlus image name: not part of FERPlus
            continue;
        }
        double votes[10];
        bool ok = true;
        for (int k = 0; k < 10 && ok; k++) {
            char *e;
            votes[k] = strtod(fb[2 + k], &e);
            ok = e != fb[2 + k] && parse_blank(e) && votes[k] >= 0;
        }
        if (!ok) {
            p->file = f2;
            p->line = nb;
            rc = parse_bad(p, "vote counts must be non-negative numbers");
            continue;
        }
        int lab = ferplus_majority(votes);
        if (lab < 0) {
            excluded++;
            continue;
        }
        // Pixels: 2304 grey values 0..255.
        if ((size_t)(d->n + 1) * NP > pcap) {
            pcap = pcap ? 2 * pcap : (size_t)NP * 1024;
            d->pixels = realloc(d->pixels, pcap);
            AG_ASSERT(d->pixels, "out of memory");
        }
        uint8_t *px = d->pixels + (size_t)d->n * NP;
        char *s = fa[1];
        int cnt = 0;
        ok = true;
        for (;;) {
            while (*s == ' ') s++;
            if (!*s) break;
            char *e;
            long v = strtol(s, &e, 10);
            if (e == s || v < 0 || v > 255 || (*e && *e != ' ')) {
                ok = false;
                break;
            }
            if (cnt < NP) px[cnt] = (uint8_t)v;
            cnt++;
            s = e;
        }
        if (!ok) {
            rc = parse_bad(p, "pixels must be integers 0..255 separated by spaces");
            continue;
        }
        if (cnt != NP) {
            rc = parse_bad(p, "wrong pixel count %d (expected 2304 = 48x48)", cnt);
            continue;
        }
        char src[1400];
        snprintf(src, sizeof src, "%s:%d (%s)", f1, na, parse_trim(fb[1]));
        dataset_push(d, src, lab);
    }
    free(la);
    free(lb);
    fclose(a);
    fclose(b);
    d->kind = SRC_PIXELS;
    dataset_set_classes(d, 8, k_classes);
    if (!rc && excluded && p->log)
        fprintf(p->log, "ferplus %s: %d rows left out by the majority vote (unknown, "
                "non-face or no FERPlus image name)\n", d->split, excluded);
    return rc;
}


const data_format data_format_ferplus = {
    .name = "ferplus",
    .open = ferplus_open,
    .split_of = {"train", "val", "test"},
    .bgr = false,
    .needs_root = true,
};
