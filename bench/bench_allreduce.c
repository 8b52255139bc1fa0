// Data-parallel cost: gradient allreduce time per step against compute time per
// step for the large POSTER model, and the scaling efficiency that follows for
// 2, 4 and 8 ranks.
//
// Measured here:
//   compute: one training forward + backward of the large 7-class model at a
//     small batch (default 2, 112x112 input as the loader's fast path gives),
//     with all cores, per sample; a SAM step on the global batch of 200 is
//     2 x 200 of those (two forward/backward passes).
//   allreduce: dist_allreduce_grads on the model's gradient (its n_train
//     floats; 57,995,023 for the large model) between 2 ranks started by mpirun
//     on this machine (shared memory), for several bucket sizes, plus the
//     latency of a 1-float allreduce. A SAM step reduces two gradients.
// Projected (ring allreduce, no overlap with backward, so conservative):
//   T_ar(N) = 2 (N-1)/N * bytes / BW + 2 (N-1) * latency
//   step(N) = T_compute / N + 2 T_ar(N); efficiency(N) = T_compute / (N step(N))
// for the bandwidth measured here (ranks on one machine) and for common cluster
// links (10 GbE, 25 GbE, 100 Gb/s InfiniBand).
//
// Usage: bench_allreduce [--batch B] [--reps R] [--no-compute] [--np N]
//                        [--node-speedup F]  (second table: machines F x faster)
//        (under mpirun: bench_allreduce --worker FLOATS REPS)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "autograd/tensor.h"
#include "layers/poster.h"
#include "common/dist.h"
#include "train/dist_store.h"

#define LARGE_MODEL_FLOATS 57995023LL

// ---------------------------------------------------------------------------
// Under mpirun: time the allreduce. Rank 0 prints "RESULT key=value" lines.

static double timed_allreduce(float *buf, int64_t n, int reps) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {   // r == 0: warm-up (connections, pages)
        dist_barrier();
        double t0 = dist_now();
        dist_allreduce_grads(buf, n, 0.5f);
        double t = dist_now() - t0;
        dist_allreduce_max_f64(&t, 1);   // the step waits for the slowest rank
        if (r > 0 && t < best) best = t;
    }
    return best;
}

static int worker(int64_t n, int reps) {
    float *g = malloc((size_t)n * sizeof(float));
    if (!g) {
        fprintf(stderr, "bench_allreduce: out of memory for %lld floats\n", (long long)n);
        return 1;
    }
    for (int64_t i = 0; i < n; i++) g[i] = (float)((i % 1000) * 1e-3);
    int N = dist_size();
    const int buckets[] = {1, 8, 64};
    dist_opts o;
    dist_opts_default(&o);
    for (size_t b = 0; b < sizeof buckets / sizeof *buckets; b++) {
        o.bucket_mb = buckets[b];
        dist_configure(&o);
        double t = timed_allreduce(g, n, reps);
        double bytes = (double)n * 4;
        if (dist_is_root())
            printf("RESULT bucket_mb=%d allreduce_s=%.6f algbw_GBs=%.3f busbw_GBs=%.3f\n",
                   buckets[b], t, bytes / t / 1e9, 2.0 * (N - 1) / N * bytes / t / 1e9);
    }
    double lat = 1e30;
    float one = 1;
    for (int r = 0; r < 200; r++) {
        dist_barrier();
        double t0 = dist_now();
        dist_allreduce_grads(&one, 1, 1.0f);
        double t = dist_now() - t0;
        if (r > 10 && t < lat) lat = t;
    }
    dist_allreduce_max_f64(&lat, 1);
    // What else a distributed run pays per epoch or once.
    param_store s;
    store_init(&s);
    store_add(&s, "all", PARAM_TRAINABLE, 1, (int[]){(int)n});
    store_finalize(&s);
    memcpy(s.data, g, (size_t)n * sizeof(float));
    dist_barrier();
    double t0 = dist_now();
    dist_bcast_store(&s);
    double t_bcast = dist_now() - t0;
    char err[256];
    dist_barrier();
    t0 = dist_now();
    int rc = dist_param_hash_check(&s, "bench", err, sizeof err);
    double t_hash = dist_now() - t0;
    if (dist_is_root())
        printf("RESULT latency_s=%.3g bcast_s=%.4f hash_check_s=%.4f hash_ok=%d\n", lat,
               t_bcast, t_hash, rc == 0);
    store_free(&s);
    free(g);
    return 0;
}

// ---------------------------------------------------------------------------
// Compute: forward + backward of the large model at a small batch.

static int measure_compute(int batch, int reps, double *per_sample, int64_t *n_train) {
    poster_opts po;
    poster_opts_default(&po);
    char err[512];
    poster_model *m = poster_create(&po, 123, err, sizeof err);
    if (!m) {
        fprintf(stderr, "bench_allreduce: %s\n", err);
        return -1;
    }
    param_store *s = poster_store(m);
    *n_train = s->n_train;
    rng r;
    rng_seed(&r, 7);
    double best = 1e30;
    for (int k = 0; k <= reps; k++) {
        tensor *x = tensor_new(T_SHAPE(batch, 3, 112, 112));
        for (int64_t i = 0; i < x->numel; i++) x->data[i] = (float)rng_normal(&r);
        store_zero_grad(s);
        double t0 = dist_now();
        tensor *y = poster_forward(m, x, true, &r);
        float *seed = arena_alloc((size_t)y->numel * sizeof(float));
        for (int64_t i = 0; i < y->numel; i++) seed[i] = 1.0f / (float)y->numel;
        ag_backward_seed(y, seed);
        double t = dist_now() - t0;
        ag_step_reset();
        if (k > 0 && t < best) best = t;
    }
    *per_sample = best / batch;
    poster_free(m);
    return 0;
}

// ---------------------------------------------------------------------------

static int parse_result(const char *line, const char *key, double *v) {
    const char *p = strstr(line, key);
    if (!p) return 0;
    *v = atof(p + strlen(key));
    return 1;
}

int main(int argc, char **argv) {
    char err[512];
    if (dist_init(&argc, &argv, err, sizeof err) != 0) {
        fprintf(stderr, "bench_allreduce: %s\n", err);
        return 1;
    }
    if (argc >= 4 && !strcmp(argv[1], "--worker")) {
        int rc = worker(atoll(argv[2]), atoi(argv[3]));
        dist_finalize(rc);
        return rc;
    }
    int batch = 2, reps = 1, np = 2;
    double speedup = 16;
    bool compute = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--np") && i + 1 < argc) np = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-compute")) compute = false;
        else if (!strcmp(argv[i], "--node-speedup") && i + 1 < argc) speedup = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_allreduce [--batch B] [--reps R] [--np N] "
                            "[--no-compute] [--node-speedup F]\n");
            return 2;
        }
    }
    ops_set_threads(0);
    const int global_batch = 200, passes = 2;   // the official recipe: SAM
    int64_t n = LARGE_MODEL_FLOATS;
    double per_sample = 0;
    if (compute) {
        if (measure_compute(batch, reps, &per_sample, &n) != 0) return 1;
        printf("compute: forward+backward of the large model, batch %d, %d threads: %.3f s "
               "per sample\n", batch, ops_threads(), per_sample);
    }
    printf("gradient: %lld floats (%.1f MB)%s\n", (long long)n, n * 4 / 1e6,
           n == LARGE_MODEL_FLOATS ? " (the large model)" : "");

    double t_ar = 0, lat = 0, busbw = 0, v;
    if (!dist_compiled_with_mpi() || system("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("allreduce: not measured (built without MPI or no mpirun)\n");
    } else {
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "mpirun -np %d --oversubscribe --bind-to none %s -x OMP_NUM_THREADS=1 "
                 "%s --worker %lld %d 2>&1",
                 np, geteuid() == 0 ? "--allow-run-as-root" : "", argv[0], (long long)n,
                 reps + 1);
        FILE *p = popen(cmd, "r");
        char line[1024];
        printf("allreduce: %d ranks on this machine (%s):\n", np, dist_host());
        while (p && fgets(line, sizeof line, p)) {
            if (strncmp(line, "RESULT", 6)) {
                fputs(line, stdout);
                continue;
            }
            double bm;
            if (parse_result(line, "bucket_mb=", &bm) && parse_result(line, "allreduce_s=", &v)) {
                double bw;
                parse_result(line, "busbw_GBs=", &bw);
                printf("  bucket %3.0f MB: %.4f s per gradient, bus bandwidth %.2f GB/s\n", bm,
                       v, bw);
                if (bm == 8) t_ar = v, busbw = bw;
            }
            if (parse_result(line, "latency_s=", &lat)) {
                double b, h;
                parse_result(line, "bcast_s=", &b);
                parse_result(line, "hash_check_s=", &h);
                printf("  1-float allreduce latency %.1f us; parameter broadcast %.3f s "
                       "(once); hash check %.3f s (per epoch, debug)\n", lat * 1e6, b, h);
            }
        }
        int st = p ? pclose(p) : -1;
        if (st != 0 || t_ar == 0) {
            fprintf(stderr, "bench_allreduce: the mpirun measurement failed\n");
            return 1;
        }
    }
    if (!compute || t_ar == 0) return 0;

    double t_c = passes * global_batch * per_sample;
    printf("\nper step (global batch %d, SAM: %d forward+backward passes, %d allreduces):\n",
           global_batch, passes, passes);
    printf("  compute on one machine: %.1f s; allreduce (2 ranks, here): %.3f s x %d = "
           "%.1f%% of it\n", t_c, t_ar, passes, 100 * passes * t_ar / t_c);
    struct { const char *name; double bw; } nets[] = {
        {"measured here", busbw * 1e9}, {"10 GbE", 1.25e9}, {"25 GbE", 3.125e9},
        {"100 Gb/s IB", 12.5e9},
    };
    double bytes = (double)n * 4;
    for (int pass_k = 0; pass_k < 2; pass_k++) {
        double tc = pass_k == 0 ? t_c : t_c / speedup;
        if (pass_k == 0)
            printf("\nprojected efficiency, compute %.1f s per step per machine as measured "
                   "here (%d threads), no overlap:\n", tc, ops_threads());
        else
            printf("\nthe same for machines %.0fx faster at compute than this one (e.g. 32 "
                   "cores against %d; --node-speedup F), %.1f s per step:\n", speedup,
                   ops_threads(), tc);
        printf("  %-14s", "link");
        for (int N = 2; N <= 8; N *= 2) printf("  N=%d: allreduce  eff ", N);
        printf("\n");
        for (size_t k = 0; k < sizeof nets / sizeof *nets; k++) {
            printf("  %-14s", nets[k].name);
            for (int N = 2; N <= 8; N *= 2) {
                double tar = 2.0 * (N - 1) / N * bytes / nets[k].bw + 2.0 * (N - 1) * lat;
                double step = tc / N + passes * tar;
                printf("  %8.3f s %5.1f%%", tar, 100 * tc / (N * step));
            }
            printf("\n");
        }
    }
    printf("(a machine F times faster at compute divides T_compute by F: efficiency "
           "1 / (1 + N * 2 T_ar / T_compute))\n");
    return 0;
}
