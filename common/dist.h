// Data-parallel training over MPI: ranks, collectives, parameter checks and the
// sampler shard.
//
// One model is trained by N processes (ranks). Every rank holds the whole model;
// each takes its slice of every global batch (dist_shard), runs forward and
// backward, and the gradients are summed over ranks (dist_allreduce_grads) so
// every rank applies the same optimizer step and the parameters stay identical.
// BatchNorm batch statistics are per rank (the official 2-replica semantics);
// the running statistics every rank uses are rank 0's (dist_sync_buffers), as
// with PyTorch's DataParallel (replica 0) and DDP (broadcast_buffers).
//
// Built with POSTER_MPI (make MPI=1, or automatically when mpicc is found) and
// started by mpirun, the collectives are MPI's. Otherwise, or when the program
// is not started by an MPI launcher, this is the single-process implementation:
// rank 0 of 1, reductions are the identity, and no MPI call is ever made.
//
// Failures never hang: collectives run on a communicator with MPI_ERRORS_RETURN
// (an error ends the job with the MPI error string) and under a watchdog thread
// that ends the job when one does not complete within dist.timeout_s (a rank
// died, hangs, or a connection was lost). Ending the job is MPI_Abort from the
// rank that noticed (exit code DIST_EXIT_FAILURE); mpirun then stops the others.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/rng.h"

// Exit code of a rank that ends the job because of a distributed failure.
#define DIST_EXIT_FAILURE 3

// ---- configuration ----
// dist.timeout_s (seconds a collective may wait, default 300), dist.check_params
// (compare a hash of all parameters across ranks every epoch), dist.bucket_mb
// (allreduce bucket size, default 8).
void dist_config_register(config *c);

typedef struct dist_opts {
    double timeout_s;      // watchdog limit per collective
    bool check_params;     // debug: parameter hash check every epoch
    int bucket_mb;         // allreduce bucket, MiB
} dist_opts;
void dist_opts_default(dist_opts *o);
void dist_opts_from_config(const config *c, dist_opts *o);   // after config_validate
void dist_configure(const dist_opts *o);                     // applies timeout, buckets
const dist_opts *dist_options(void);

// ---- lifetime ----
// Joins the MPI job when the program was started by an MPI launcher (mpirun,
// srun with PMI/PMIx) and the build has MPI; otherwise single-process. Safe to
// call more than once. Returns 0, or -1 with a message in err.
int dist_init(int *argc, char ***argv, char *err, size_t errlen);
// Leaves the job. rc != 0 on any rank of a multi-rank job aborts the whole job
// (the other ranks may be waiting in a collective for this one).
void dist_finalize(int rc);
// Prints "poster: rank R of N: <message>" and ends the whole job (exit code
// DIST_EXIT_FAILURE on every rank). Single-process: prints and exits.
void dist_abort(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

bool dist_compiled_with_mpi(void);
bool dist_active(void);       // an MPI job with more than one rank
int dist_rank(void);
int dist_size(void);
bool dist_is_root(void);      // rank 0: the one that writes logs, pictures, checkpoints
int dist_local_size(void);    // ranks on this machine (for threads per rank)
int dist_local_rank(void);
const char *dist_host(void);  // this machine's name (messages)

// ---- collectives (every rank must call them in the same order) ----
void dist_barrier(void);
// In place, in buckets of dist.bucket_mb: mean over ranks.
void dist_allreduce_mean(float *buf, int64_t n);
// In place: sum over ranks of scale * buf. Gradients: a rank whose loss is the
// mean over its c_r of the global batch's n samples passes scale = c_r / n, so
// the result is the gradient of the mean over all n samples (what one process
// computes with micro-batches), also when the shards are unequal or empty.
void dist_allreduce_grads(float *buf, int64_t n, float scale);
void dist_allreduce_sum_f32(float *buf, int64_t n);
void dist_allreduce_sum_f64(double *buf, int64_t n);
void dist_allreduce_sum_i64(int64_t *buf, int64_t n);
void dist_allreduce_max_f64(double *buf, int64_t n);
void dist_allreduce_min_f64(double *buf, int64_t n);
// From rank 0 to all.
void dist_bcast(void *buf, size_t bytes);
// In place: lo the minimum and hi the maximum over ranks, element by element
// (lo == hi everywhere afterwards: every rank holds the same values). `what`
// names the collective in watchdog and error messages.
void dist_allreduce_minmax_u64(uint64_t *lo, uint64_t *hi, int64_t n, const char *what);

// ---- parameter consistency (debug) ----
// 64-bit hash of the bits of n floats (order-dependent).
uint64_t dist_hash_floats(const float *x, int64_t n);

// ---- sampler shard ----
// Rank r's share of a global batch of n samples: [r*n/N, (r+1)*n/N). Shares
// differ by at most one and cover the batch in order, so the ranks together
// see exactly the samples (and augmentations) one process would.
void dist_shard(int64_t n, int rank, int size, int64_t *start, int64_t *count);

// ---- random streams across shards ----
// Advances r by k draws of rng_u64 (rng_uniform takes one each).
void dist_rng_skip(rng *r, int64_t k);
// Draws of rng_u64 that take `from` to `to`, or -1 if not within max. With a
// stream that takes D draws per sample per forward (drop path: one per sample
// per call), rank r skips D * (its first sample) draws so that it draws what one
// process would for the same samples.
int64_t dist_rng_distance(const rng *from, const rng *to, int64_t max);

// ---- timing (bench, logs) ----
double dist_now(void);                 // monotonic seconds
double dist_comm_seconds(void);        // time spent in collectives so far
int64_t dist_comm_bytes(void);         // bytes passed to allreduce so far
