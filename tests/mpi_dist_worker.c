// Helper program for tests/test_dist.c, started by mpirun (or alone, as the
// single-process reference). Each mode checks something about common/dist.c and
// exits 0 when it holds; results that must be compared across runs go to a file.
//
//   mpi_dist_worker collectives            allreduce/bcast/hash/shard checks
//   mpi_dist_worker train OUT [MICRO]      K SAM+Adam steps of a tiny model built
//                                          from autograd ops; writes the trainable
//                                          parameters (rank 0). MICRO: micro-batches
//                                          per rank (the single-process reference
//                                          uses the ranks' count)
//   mpi_dist_worker eval OUT               sharded evaluation, reduced metrics
//   mpi_dist_worker kill CKPT              rank 1 dies (SIGKILL) mid-run; rank 0
//                                          writes an atomic checkpoint every step
//   mpi_dist_worker hang                   rank 1 stops (SIGSTOP); the watchdog of
//                                          rank 0 must end the job (timeout 2 s)
//   mpi_dist_worker fail                   rank 1 fails with exit code 1
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "autograd/tensor.h"
#include "common/dist.h"
#include "train/dist_store.h"

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "rank %d: check failed at line %d: %s: ", dist_rank(), \
                    __LINE__, #cond);                                            \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
            dist_finalize(1);                                                    \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

// ---------------------------------------------------------------------------
// collectives

static int mode_collectives(void) {
    int r = dist_rank(), n = dist_size();
    dist_opts o;
    dist_opts_default(&o);
    o.bucket_mb = 1;   // 600k floats = 3 buckets: exercises the bucket loop
    dist_configure(&o);

    // mean over ranks, across bucket boundaries
    const int64_t len = 600001;
    float *x = malloc((size_t)len * sizeof(float));
    for (int64_t i = 0; i < len; i++) x[i] = (float)(r * 1000 + i % 97);
    dist_allreduce_mean(x, len);
    double rsum = 0;
    for (int q = 0; q < n; q++) rsum += q * 1000;
    for (int64_t i = 0; i < len; i++)
        CHECK(fabsf(x[i] - (float)(rsum / n + i % 97)) <= 1e-3f, "mean[%lld] = %g",
              (long long)i, (double)x[i]);

    // weighted gradient sum with unequal shards: sum_r (c_r/B) * g_r
    int64_t s0, c0;
    dist_shard(11, r, n, &s0, &c0);
    for (int64_t i = 0; i < len; i++) x[i] = (float)(r + 1);
    dist_allreduce_grads(x, len, (float)c0 / 11.0f);
    double want = 0;
    for (int q = 0; q < n; q++) {
        int64_t sq, cq;
        dist_shard(11, q, n, &sq, &cq);
        want += (double)(q + 1) * (double)cq / 11.0;
    }
    CHECK(fabs(x[0] - want) < 1e-5 && fabs(x[len - 1] - want) < 1e-5, "grads %g want %g",
          (double)x[0], want);
    free(x);

    double d[3] = {r + 0.5, -r, 1e300 * (r == 0)};
    dist_allreduce_sum_f64(d, 3);
    CHECK(d[0] == n * n / 2.0 && d[2] == 1e300, "f64 sum %g %g", d[0], d[2]);
    int64_t k[2] = {(int64_t)1 << 40, r};
    dist_allreduce_sum_i64(k, 2);
    CHECK(k[0] == ((int64_t)n << 40) && k[1] == (int64_t)n * (n - 1) / 2, "i64 sum %lld",
          (long long)k[0]);
    double mx = r, mn = r;
    dist_allreduce_max_f64(&mx, 1);
    dist_allreduce_min_f64(&mn, 1);
    CHECK(mx == n - 1 && mn == 0, "max %g min %g", mx, mn);

    // a store: rank 0's values reach everyone; buffers sync; hash check
    param_store s;
    store_init(&s);
    store_add(&s, "w", PARAM_TRAINABLE, T_SHAPE(3, 4));
    store_add(&s, "bn.running_mean", PARAM_BUFFER, T_SHAPE(4));
    store_add(&s, "bn.num_batches_tracked", PARAM_COUNTER, 0, NULL);
    store_finalize(&s);
    for (int64_t i = 0; i < s.n_float; i++) s.data[i] = (float)(r * 10 + i);
    s.counters[0] = 7 + r;
    dist_bcast_store(&s);
    for (int64_t i = 0; i < s.n_float; i++) CHECK(s.data[i] == (float)i, "bcast_store");
    CHECK(s.counters[0] == 7, "bcast counter");
    char err[512];
    CHECK(dist_param_hash_check(&s, "after bcast", err, sizeof err) == 0, "%s", err);
    uint64_t h = dist_store_hash(&s);
    uint64_t h0 = h;
    dist_bcast(&h0, sizeof h0);
    CHECK(h == h0, "store hash differs");

    s.data[s.n_train] = 100.0f + r;   // a running statistic, per rank
    s.counters[0] = 7 + 1 + r;        // rank r ran 1 + r forwards since the bcast
    dist_sync_buffers(&s);
    CHECK(s.data[s.n_train] == 100.0f, "sync_buffers");
    CHECK(s.counters[0] == 7 + n + (int64_t)n * (n - 1) / 2, "counter %lld",
          (long long)s.counters[0]);
    CHECK(s.data[0] == 0.0f, "sync_buffers touched a trainable value");

    if (n > 1 && r == n - 1) s.data[5] = nextafterf(s.data[5], 1e9f);   // one bit differs
    int rc = dist_param_hash_check(&s, "after epoch 1", err, sizeof err);
    if (n > 1) {
        CHECK(rc == -1, "mismatch not detected");
        CHECK(strstr(err, "'w'") && strstr(err, "after epoch 1"), "message: %s", err);
        if (dist_is_root()) printf("mismatch message: %s\n", err);
    } else {
        CHECK(rc == 0, "single process check failed");
    }
    store_free(&s);

    // shards cover [0, n) in order
    for (int64_t B = 0; B < 40; B++) {
        int64_t next = 0;
        for (int q = 0; q < n; q++) {
            int64_t st, c;
            dist_shard(B, q, n, &st, &c);
            CHECK(st == next && c >= B / n && c <= B / n + 1, "shard B %lld", (long long)B);
            next = st + c;
        }
        CHECK(next == B, "shards do not cover B");
    }
    dist_barrier();
    printf("rank %d of %d: collectives OK\n", r, n);
    return 0;
}

// ---------------------------------------------------------------------------
// A tiny model from autograd ops plus two ops of its own: a batch centering
// (y = h - mean over the batch: its output depends on which samples share a
// batch, like BatchNorm) and tanh.

static void center_backward(tape_entry *e) {
    tensor *x = e->in[0];
    if (!x->requires_grad) return;
    const float *gy = e->out->grad;
    float *gx = tensor_grad(x);
    int B = x->shape[0], D = (int)(x->numel / B);
    for (int j = 0; j < D; j++) {
        double m = 0;
        for (int b = 0; b < B; b++) m += gy[b * D + j];
        m /= B;
        for (int b = 0; b < B; b++) gx[b * D + j] += gy[b * D + j] - (float)m;
    }
}

static tensor *op_center(tensor *x) {
    tensor *y = tensor_like(x);
    int B = x->shape[0], D = (int)(x->numel / B);
    for (int j = 0; j < D; j++) {
        double m = 0;
        for (int b = 0; b < B; b++) m += x->data[b * D + j];
        m /= B;
        for (int b = 0; b < B; b++) y->data[b * D + j] = x->data[b * D + j] - (float)m;
    }
    if (ag_needs_grad(1, &x)) ag_record("center", center_backward, y, 1, &x, NULL);
    return y;
}

static void tanh_backward(tape_entry *e) {
    tensor *x = e->in[0];
    if (!x->requires_grad) return;
    float *gx = tensor_grad(x);
    for (int64_t i = 0; i < x->numel; i++) {
        float t = e->out->data[i];
        gx[i] += e->out->grad[i] * (1 - t * t);
    }
}

static tensor *op_tanh_(tensor *x) {
    tensor *y = tensor_like(x);
    for (int64_t i = 0; i < x->numel; i++) y->data[i] = tanhf(x->data[i]);
    if (ag_needs_grad(1, &x)) ag_record("tanh", tanh_backward, y, 1, &x, NULL);
    return y;
}

enum { DIN = 6, DH = 10, DOUT = 3, NDATA = 66, GLOBAL_B = 11, STEPS = 6 };

typedef struct {
    param_store s;
    int w1, b1, w2, b2;
} tiny;

static void tiny_init(tiny *m, uint64_t seed) {
    store_init(&m->s);
    m->w1 = store_add(&m->s, "fc1.weight", PARAM_TRAINABLE, T_SHAPE(DH, DIN));
    m->b1 = store_add(&m->s, "fc1.bias", PARAM_FROZEN, T_SHAPE(DH));   // eval only
    m->w2 = store_add(&m->s, "fc2.weight", PARAM_TRAINABLE, T_SHAPE(DOUT, DH));
    m->b2 = store_add(&m->s, "fc2.bias", PARAM_TRAINABLE, T_SHAPE(DOUT));
    store_finalize(&m->s);
    rng g;
    rng_seed(&g, seed);
    for (int64_t i = 0; i < m->s.n_float; i++) m->s.data[i] = (float)(rng_uniform(&g) - 0.5);
}

// Sample i of the data set (inputs and regression targets), fixed by its index.
static void sample(int i, float *x, float *t) {
    rng g;
    rng_seed(&g, 1000 + (uint64_t)i);
    for (int j = 0; j < DIN; j++) x[j] = (float)(2 * rng_uniform(&g) - 1);
    for (int j = 0; j < DOUT; j++) t[j] = (float)(rng_uniform(&g) - 0.5);
}

static tensor *tiny_forward(tiny *m, tensor *x) {
    // fc1.bias is left out of the training forward: centering cancels it, so its
    // gradient would be rounding noise that Adam scales up to lr-sized steps.
    tensor *h = op_linear(x, store_tensor(&m->s, m->w1), NULL);
    h = op_tanh_(op_center(h));
    return op_linear(h, store_tensor(&m->s, m->w2), store_tensor(&m->s, m->b2));
}

// Gradient of 0.5 * mean over the samples [first, first+count) of ||y - t||^2,
// scaled by `weight`, accumulated into the store's grad.
static void tiny_backward_on(tiny *m, int first, int count, float weight) {
    if (count == 0) return;
    tensor *x = tensor_new(T_SHAPE(count, DIN));
    float *t = arena_alloc((size_t)count * DOUT * sizeof(float));
    for (int b = 0; b < count; b++) sample(first + b, x->data + b * DIN, t + b * DOUT);
    tensor *y = tiny_forward(m, x);
    float *seed = arena_alloc((size_t)y->numel * sizeof(float));
    for (int64_t i = 0; i < y->numel; i++) seed[i] = (y->data[i] - t[i]) / count * weight;
    ag_backward_seed(y, seed);
}

// The trainer's gradient: this rank's shard of the global batch [first,
// first+B), in `micro` micro-batches, averaged over ranks.
static void tiny_grad(tiny *m, int first, int B, int micro) {
    store_zero_grad(&m->s);
    int64_t st, c;
    dist_shard(B, dist_rank(), dist_size(), &st, &c);
    for (int k = 0; k < micro; k++) {
        int64_t ms, mc;
        dist_shard(c, k, micro, &ms, &mc);
        tiny_backward_on(m, first + (int)(st + ms), (int)mc, c ? (float)mc / (float)c : 0);
        ag_step_reset();
    }
    dist_allreduce_grads(m->s.grad, m->s.n_train, (float)c / (float)B);
}

static int mode_train(const char *out, int micro) {
    tiny m;
    // Ranks initialize differently on purpose: dist_bcast_store must fix it.
    tiny_init(&m, 42 + (uint64_t)dist_rank() * 7);
    dist_bcast_store(&m.s);
    int64_t n = m.s.n_train;
    float *mom = calloc((size_t)n, sizeof(float)), *var = calloc((size_t)n, sizeof(float));
    float *e = malloc((size_t)n * sizeof(float));
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, rho = 0.05;
    for (int step = 1; step <= STEPS; step++) {
        int first = ((step - 1) * GLOBAL_B) % NDATA;
        // SAM: the norm and the perturbation use the averaged gradient.
        tiny_grad(&m, first, GLOBAL_B, micro);
        double nrm = 0;
        for (int64_t i = 0; i < n; i++) nrm += (double)m.s.grad[i] * m.s.grad[i];
        float sc = (float)(rho / (sqrt(nrm) + 1e-12));
        for (int64_t i = 0; i < n; i++) {
            e[i] = m.s.grad[i] * sc;
            m.s.data[i] += e[i];
        }
        tiny_grad(&m, first, GLOBAL_B, micro);
        for (int64_t i = 0; i < n; i++) m.s.data[i] -= e[i];
        double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
        for (int64_t i = 0; i < n; i++) {
            float g = m.s.grad[i];
            mom[i] = (float)(b1 * mom[i] + (1 - b1) * g);
            var[i] = (float)(b2 * var[i] + (1 - b2) * g * g);
            m.s.data[i] -= (float)(lr * (mom[i] / bc1) / (sqrt(var[i] / bc2) + eps));
        }
    }
    char err[512];
    CHECK(dist_param_hash_check(&m.s, "after training", err, sizeof err) == 0, "%s", err);
    if (dist_is_root()) {
        FILE *f = fopen(out, "wb");
        CHECK(f != NULL, "cannot write %s", out);
        fwrite(&n, sizeof n, 1, f);
        fwrite(m.s.data, sizeof(float), (size_t)n, f);
        fclose(f);
    }
    free(mom), free(var), free(e);
    store_free(&m.s);
    ag_shutdown();
    return 0;
}

// ---------------------------------------------------------------------------
// Sharded evaluation: each rank classifies its share of the set (in batches of
// 4, as a loader would), the confusion matrix and the loss sum are reduced.

static int mode_eval(const char *out) {
    tiny m;
    tiny_init(&m, 5);
    const int N = 37, K = DOUT;
    int64_t st, c;
    dist_shard(N, dist_rank(), dist_size(), &st, &c);
    int64_t conf[DOUT * DOUT] = {0};
    double loss = 0;
    bool prev = ag_no_grad_begin();
    for (int64_t b0 = st; b0 < st + c; b0 += 4) {
        int nb = (int)((st + c - b0) < 4 ? st + c - b0 : 4);
        tensor *x = tensor_new(T_SHAPE(nb, DIN));
        float t[DOUT];
        int lab[4];
        for (int b = 0; b < nb; b++) {
            sample((int)b0 + b, x->data + b * DIN, t);
            int a = 0;
            for (int j = 1; j < K; j++) if (t[j] > t[a]) a = j;
            lab[b] = a;
        }
        // no batch centering in eval: per-sample outputs
        tensor *h = op_linear(x, store_tensor(&m.s, m.w1), store_tensor(&m.s, m.b1));
        h = op_tanh_(h);
        tensor *y = op_linear(h, store_tensor(&m.s, m.w2), store_tensor(&m.s, m.b2));
        for (int b = 0; b < nb; b++) {
            int p = 0;
            for (int j = 1; j < K; j++) if (y->data[b * K + j] > y->data[b * K + p]) p = j;
            conf[lab[b] * K + p]++;
            loss += -y->data[b * K + lab[b]];
        }
        ag_step_reset();
    }
    ag_no_grad_end(prev);
    dist_allreduce_sum_i64(conf, K * K);
    dist_allreduce_sum_f64(&loss, 1);
    if (dist_is_root()) {
        FILE *f = fopen(out, "w");
        CHECK(f != NULL, "cannot write %s", out);
        for (int i = 0; i < K * K; i++) fprintf(f, "%lld ", (long long)conf[i]);
        fprintf(f, "\n%.17g\n", loss);
        fclose(f);
    }
    store_free(&m.s);
    ag_shutdown();
    return 0;
}

// ---------------------------------------------------------------------------
// Failures

// A checkpoint: step, 1000 floats, and their sum; written to PATH.tmp, then
// renamed, like every checkpoint the trainer writes.
static void write_ckpt(const char *path, int step, const float *v) {
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    double s = 0;
    for (int i = 0; i < 1000; i++) s += v[i];
    fwrite(&step, sizeof step, 1, f);
    fwrite(v, sizeof(float), 1000, f);
    fwrite(&s, sizeof s, 1, f);
    fclose(f);
    rename(tmp, path);
}

static int mode_kill(const char *ckpt) {
    float v[1000];
    for (int step = 1; step < 1000; step++) {
        for (int i = 0; i < 1000; i++) v[i] = (float)(step + i);
        dist_allreduce_mean(v, 1000);
        if (dist_is_root()) write_ckpt(ckpt, step, v);
        if (dist_rank() == 1 && step == 5) {
            fprintf(stderr, "rank 1: killing myself at step %d\n", step);
            raise(SIGKILL);
        }
        usleep(50 * 1000);
    }
    return 0;   // not reached with 2 ranks
}

static int mode_hang(void) {
    dist_opts o;
    dist_opts_default(&o);
    o.timeout_s = 2;
    dist_configure(&o);
    float v[16] = {0};
    for (int step = 1; step < 1000; step++) {
        dist_allreduce_mean(v, 16);
        if (dist_rank() == 1 && step == 3) {
            fprintf(stderr, "rank 1: stopping myself at step %d\n", step);
            raise(SIGSTOP);
        }
        usleep(20 * 1000);
    }
    return 0;
}

static int mode_fail(void) {
    float v[4] = {0};
    dist_allreduce_mean(v, 4);
    if (dist_rank() == 1) {
        fprintf(stderr, "rank 1: cannot open the data set (simulated)\n");
        return 1;
    }
    dist_allreduce_mean(v, 4);   // rank 0 waits here for the failed rank
    return 0;
}

int main(int argc, char **argv) {
    char err[512];
    if (dist_init(&argc, &argv, err, sizeof err) != 0) {
        fprintf(stderr, "mpi_dist_worker: %s\n", err);
        return 2;
    }
    ops_set_threads(1);
    const char *mode = argc > 1 ? argv[1] : "";
    int rc;
    if (!strcmp(mode, "collectives")) rc = mode_collectives();
    else if (!strcmp(mode, "train") && argc > 2)
        rc = mode_train(argv[2], argc > 3 ? atoi(argv[3]) : 1);
    else if (!strcmp(mode, "eval") && argc > 2) rc = mode_eval(argv[2]);
    else if (!strcmp(mode, "kill") && argc > 2) rc = mode_kill(argv[2]);
    else if (!strcmp(mode, "hang")) rc = mode_hang();
    else if (!strcmp(mode, "fail")) rc = mode_fail();
    else {
        fprintf(stderr, "usage: mpi_dist_worker collectives|train OUT [MICRO]|eval OUT|"
                        "kill CKPT|hang|fail\n");
        rc = 2;
    }
    dist_finalize(rc);
    return rc;
}
