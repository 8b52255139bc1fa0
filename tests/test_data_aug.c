// Augmentation statistics, the 112 fast path (== x[:, :, ::2, ::2] of 224,
// augmentations included), samplers, and the loader's determinism.
#include "tests/test_util.h"
#include "tests/test_data_util.h"

static void test_draw_rates(void **state) {
    (void)state;
    const int N = 40000;
    int none = 0, bflip = 0, noise = 0, rflip = 0, flip = 0, erase = 0;
    double area = 0;
    for (int i = 0; i < N; i++) {
        aug_plan p;
        aug_draw(7, 3, i, &p);
        none += p.basic == -1;
        bflip += p.basic == 0;
        noise += p.basic == 1;
        assert_int_equal(p.noise, p.basic == 1);
        rflip += p.rand_flip;
        flip += p.flip;
        assert_int_equal(p.flip, (p.basic == 0) != p.rand_flip);
        if (p.erase) {
            erase++;
            assert_true(p.ei >= 0 && p.ej >= 0 && p.eh > 0 && p.ew > 0);
            assert_true(p.ei + p.eh <= 224 && p.ej + p.ew <= 224);
            // h, w are rounded square roots of area*ratio, area/ratio
            double a = (double)p.eh * p.ew / (224.0 * 224.0);
            double lo = (sqrt(0.02 * 224 * 224 / 3.3) - 0.5) * (sqrt(0.02 * 224 * 224 * 0.3) - 0.5);
            assert_true(a * 224 * 224 >= lo - 1e-9);
            assert_true(a <= 0.1 * 1.2);
            double r = (double)p.eh / p.ew;
            assert_true(r > 0.25 && r < 4.0);
            area += a;
        }
    }
    double s = 4.0 / sqrt(N);   // ~4 sigma of a rate near 0.5
    assert_true(fabs((double)none / N - 0.5) < s);
    assert_true(fabs((double)bflip / N - 0.25) < s);
    assert_true(fabs((double)noise / N - 0.25) < s);
    assert_true(fabs((double)rflip / N - 0.5) < s);
    assert_true(fabs((double)flip / N - 0.5) < s);
    // Erasing: p 0.5; every try fits at these scales, so no failed draws.
    assert_true(fabs((double)erase / N - 0.5) < s);
    printf("basic none %.3f flip %.3f noise %.3f; flip %.3f; erase %.3f, mean area %.4f\n",
           (double)none / N, (double)bflip / N, (double)noise / N, (double)flip / N,
           (double)erase / N, area / erase);
    assert_true(fabs(area / erase - 0.06) < 0.003);   // uniform area in [0.02, 0.1]
    // Deterministic: same (seed, epoch, position) -> same plan; other epoch differs.
    aug_plan a, b;
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        aug_draw(7, 3, i, &a);
        aug_draw(7, 3, i, &b);
        assert_memory_equal(&a, &b, sizeof a);
        aug_draw(7, 4, i, &b);
        differ += memcmp(&a, &b, sizeof a) != 0;
    }
    assert_true(differ > 50);
}

// torchvision's algorithm falls back to no erasing when no try fits.
static void test_erase_no_fit(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 1);
    int i, j, h, w;
    // A 1-pixel-high image: every box is at least 8 pixels high.
    assert_false(aug_erase_params(&r, 1, 10000, &i, &j, &h, &w));
    assert_true(aug_erase_params(&r, 224, 224, &i, &j, &h, &w));
}

static void test_noise_stats(void **state) {
    (void)state;
    const size_t n = 300000;
    uint8_t *px = malloc(n);
    memset(px, 128, n);
    aug_add_noise(px, n, 99);
    double m = 0, v = 0;
    for (size_t i = 0; i < n; i++) m += px[i];
    m /= n;
    for (size_t i = 0; i < n; i++) v += (px[i] - m) * (px[i] - m);
    v /= n;
    printf("noise: mean %.3f var %.3f\n", m, v);
    // truncation toward zero lowers the mean by ~0.5 and adds ~1/12 of variance
    assert_true(fabs(m - 127.5) < 0.1);
    assert_true(fabs(v - (30 + 1.0 / 12)) < 0.6);
    // clipping at both ends
    memset(px, 0, n / 2);
    memset(px + n / 2, 255, n / 2);
    aug_add_noise(px, n, 5);
    int zeros = 0, top = 0;
    for (size_t i = 0; i < n / 2; i++) zeros += px[i] == 0;
    for (size_t i = n / 2; i < n; i++) top += px[i] == 255;
    // 0 + g stays 0 when g < 1 (clip, then truncation): P = Phi(1/sqrt(30)) = 0.5724
    assert_true(fabs((double)zeros / (n / 2) - 0.5724) < 0.01);
    // 255 + g stays 255 only when g >= 0 (clip); else it truncates below
    assert_true(fabs((double)top / (n / 2) - 0.5) < 0.01);
    free(px);
}

static void test_fast_path_equal(void **state) {
    (void)state;
    char err[512];
    const char *files[] = {FIXTURE_DIR "/data_img0.jpg", FIXTURE_DIR "/data_img1.jpg",
                           FIXTURE_DIR "/data_img2.jpg"};
    float *full = malloc(3 * 224 * 224 * sizeof(float)), *half = malloc(3 * 112 * 112 * sizeof(float));
    aug_scratch s = {0};
    int seen_noise = 0, seen_erase = 0, seen_flip = 0;
    for (int f = 0; f < 3; f++) {
        image_u8 im;
        assert_int_equal(image_load_jpeg(NULL, files[f], &im, err, sizeof err), 0);
        for (int pos = 0; pos < 24; pos++) {
            aug_plan p;
            aug_draw(123, 0, pos, &p);
            seen_noise += p.noise;
            seen_erase += p.erase;
            seen_flip += p.flip;
            for (int bgr = 0; bgr <= 1; bgr++) {
                aug_apply(&im, &p, bgr, 224, 1, &s, full);
                aug_apply(&im, &p, bgr, 224, 2, &s, half);
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < 112; y++)
                        for (int x = 0; x < 112; x++)
                            assert_true(half[(c * 112 + y) * 112 + x] ==
                                        full[((size_t)c * 224 + 2 * y) * 224 + 2 * x]);
            }
            if (p.erase) {   // the erased box is zero in the 224 image
                assert_true(full[(size_t)p.ei * 224 + p.ej] == 0.0f);
                assert_true(full[2 * 224 * 224 + (size_t)(p.ei + p.eh - 1) * 224 + p.ej + p.ew - 1] == 0.0f);
            }
        }
        image_free(&im);
    }
    assert_true(seen_noise > 0 && seen_erase > 0 && seen_flip > 0);
    aug_scratch_free(&s);
    free(full);
    free(half);
}

static void test_samplers(void **state) {
    (void)state;
    enum { N = 1000 };
    int order[N], seen[N];
    sampler_shuffle(order, N, 5, 2);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++) seen[order[i]]++;
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    int other[N];
    sampler_shuffle(other, N, 5, 3);
    assert_true(memcmp(order, other, sizeof order) != 0);
    sampler_shuffle(other, N, 5, 2);
    assert_memory_equal(order, other, sizeof order);
    // Balanced: class 0 has 900 samples, class 1 90, class 2 10.
    int labels[N];
    for (int i = 0; i < N; i++) labels[i] = i < 900 ? 0 : i < 990 ? 1 : 2;
    long cnt[3] = {0};
    int hit_rare[10] = {0};
    for (int e = 0; e < 30; e++) {
        sampler_balanced(order, N, labels, 3, 11, e);
        for (int i = 0; i < N; i++) {
            cnt[labels[order[i]]]++;
            if (order[i] >= 990) hit_rare[order[i] - 990]++;
        }
    }
    for (int k = 0; k < 3; k++) assert_true(fabs(cnt[k] / 30000.0 - 1.0 / 3) < 0.015);
    for (int i = 0; i < 10; i++) assert_true(hit_rare[i] > 600 && hit_rare[i] < 1400);   // ~1000
}

static float *run_epoch(dataset *d, int workers, int prefetch, int size, int epoch, int seek,
                        int *total) {
    loader_opts o = {.batch_size = 7, .train_aug = true, .shuffle = true, .workers = workers,
                     .prefetch = prefetch, .image_size = size, .seed = 42, .log = stderr};
    char err[512];
    loader *l = loader_create(d, &o, err, sizeof err);
    assert_non_null(l);
    const size_t per = (size_t)3 * size * size;
    float *all = calloc((size_t)d->n * per, sizeof(float));
    int64_t lab[7];
    loader_start_epoch(l, epoch);
    if (seek) loader_seek(l, epoch, seek);
    assert_int_equal(loader_position(l), seek);
    int n, at = seek * 7;
    while ((n = loader_next(l, all + (size_t)at * per, lab, err, sizeof err)) > 0) {
        for (int k = 0; k < n; k++) assert_true(lab[k] >= 0 && lab[k] < 7);
        at += n;
    }
    assert_int_equal(n, 0);
    assert_int_equal(loader_batches_per_epoch(l), (d->n + 6) / 7);
    *total = at;
    loader_free(l);
    return all;
}

static void test_loader_deterministic(void **state) {
    (void)state;
    td_rafdb(tu_path("/aug_rafdb"), 30, 5);
    config *c = td_config("rafdb", tu_path("/aug_rafdb"), NULL);
    dataset *d;
    char err[512];
    assert_int_equal(dataset_open(c, "train", &d, err, sizeof err), 0);
    const size_t per = 3 * 224 * 224;
    int t0, t1, t2, t3;
    float *a = run_epoch(d, 0, 1, 224, 1, 0, &t0);
    float *b = run_epoch(d, 2, 2, 224, 1, 0, &t1);
    float *cc = run_epoch(d, 3, 1, 224, 1, 0, &t2);
    assert_int_equal(t0, 30);
    assert_int_equal(t1, 30);
    assert_int_equal(t2, 30);
    assert_memory_equal(a, b, 30 * per * sizeof(float));
    assert_memory_equal(a, cc, 30 * per * sizeof(float));
    // Resume mid-epoch: batches 2.. equal the uninterrupted run's.
    float *s = run_epoch(d, 2, 3, 224, 1, 2, &t3);
    assert_int_equal(t3, 30);
    assert_memory_equal(a + 14 * per, s + 14 * per, 16 * per * sizeof(float));
    // Another epoch differs.
    float *e2 = run_epoch(d, 2, 2, 224, 2, 0, &t3);
    assert_true(memcmp(a, e2, 30 * per * sizeof(float)) != 0);
    // The fast path through the loader is the subsample of the 224 batches.
    float *h = run_epoch(d, 2, 2, 112, 1, 0, &t3);
    for (int i = 0; i < 30; i++)
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 112; y++)
                for (int x = 0; x < 112; x++)
                    assert_true(h[i * 3 * 112 * 112 + (ch * 112 + y) * 112 + x] ==
                                a[i * per + ((size_t)ch * 224 + 2 * y) * 224 + 2 * x]);
    free(a);
    free(b);
    free(cc);
    free(s);
    free(e2);
    free(h);
    dataset_close(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_draw_rates),   cmocka_unit_test(test_erase_no_fit),
        cmocka_unit_test(test_noise_stats),  cmocka_unit_test(test_fast_path_equal),
        cmocka_unit_test(test_samplers),     cmocka_unit_test(test_loader_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
