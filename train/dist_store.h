// The parts of data-parallel training that know the parameter store: the start
// from rank 0's weights, the BatchNorm buffer sync and the parameter hash check,
// on top of common/dist.h's collectives (which know no tensor). In a single
// process (or a build without MPI) they are the identity.
#pragma once
#include <stdint.h>

#include "autograd/tensor.h"
#include "common/dist.h"

// Every float (parameters, buffers) and counter of s from rank 0: all ranks
// start from rank 0's initialization or checkpoint.
void dist_bcast_store(param_store *s);
// The BatchNorm running statistics (PARAM_BUFFER tensors) from rank 0, after
// every step, so all ranks hold rank 0's (DataParallel keeps replica 0's, DDP
// broadcasts rank 0's). Counters (num_batches_tracked) advance by the sum of
// every rank's forwards since the last dist_bcast_store/dist_sync_buffers, as
// one process counting each micro-batch does.
void dist_sync_buffers(param_store *s);

// ---- parameter consistency (debug) ----
// Hash of the whole store (floats and counters).
uint64_t dist_store_hash(const param_store *s);
// Compares per-tensor hashes of s across ranks. Returns 0 when every rank holds
// the same bits, else -1 on every rank with err naming the first differing
// tensor, e.g. "parameters differ across ranks after epoch 3: first at
// 'head.fc.weight' (and 5 more tensors)". `when` goes into the message.
int dist_param_hash_check(const param_store *s, const char *when, char *err, size_t errlen);
