// Small HDF5 helpers for tensors: fixtures, checkpoints, caches, the forward tool.
// Every function returns 0 on success and a negative code with a message in
// err (naming the file and dataset) on failure; none aborts on bad files: every
// read checks rank, extents, element type and the stored size before allocating.
#pragma once
#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

// Most dimensions a dataset may have (shape arrays passed in hold this many);
// equal to the tensors' T_MAXDIM (checked in layers/state_io.c).
#define H5_MAXDIM 5

// Silences HDF5's own error stack printing (we report our own messages).
void h5_quiet(void);
hid_t h5_open_read(const char *path, char *err, size_t errlen);     // < 0 on error
hid_t h5_create(const char *path, char *err, size_t errlen);        // truncates
// Opens a file of one of our own formats (`what`: "checkpoint", "dataset cache").
// Files without checksummed metadata (HDF5 superblock < 2: written by versions
// before h5_create wrote the 1.8 format) load with a note on stderr, so users keep
// their checkpoints; after h5_set_legacy_ok(false) they are refused before libhdf5
// parses them (the fuzz targets: libhdf5 1.10 can crash on damaged ones).
hid_t h5_open_ours(const char *path, const char *what, char *err, size_t errlen);
void h5_set_legacy_ok(bool ok);
int h5_close(hid_t f);
// Closes a file being written to a temporary path. When the writes failed
// (`failed`) or the close does, the file is truncated so HDF5 can let go of it
// (the caller removes it); returns -1 then.
int h5_close_tmp(hid_t f, const char *path, bool failed);
// Before writing about `bytes` to path: enough free space on its file system
// and under the file size limit, else an error saying how much is missing
// (a write that fails midway is handled too, but HDF5 recovers badly from it).
int h5_check_room(const char *path, uint64_t bytes, char *err, size_t errlen);
bool h5_exists(hid_t loc, const char *path);   // path may contain '/'

// Reads a float32 (or any float/int dataset converted to float) dataset.
// *out is malloc'ed; shape/ndim filled (ndim 0 for scalars).
int h5_read_floats(hid_t loc, const char *name, float **out, int *ndim, int *shape,
                   char *err, size_t errlen);
int h5_read_int64s(hid_t loc, const char *name, int64_t **out, int *ndim, int *shape,
                   char *err, size_t errlen);
int h5_read_uint8s(hid_t loc, const char *name, uint8_t **out, int *ndim, int *shape,
                   char *err, size_t errlen);
// Exactly one int64 value (a scalar or a 1-element array), else an error naming it.
int h5_read_int64_scalar(hid_t loc, const char *name, int64_t *v, char *err, size_t errlen);
// Shape of a dataset without reading it (numeric types only; same checks as the reads:
// rank, extents, element type, stored bytes).
int h5_dataset_shape(hid_t loc, const char *name, int *ndim, int *shape, char *err,
                     size_t errlen);
// Writes (creating intermediate groups); ndim 0 writes a scalar.
int h5_write_floats(hid_t loc, const char *name, const float *data, int ndim,
                    const int *shape, char *err, size_t errlen);
int h5_write_int64s(hid_t loc, const char *name, const int64_t *data, int ndim,
                    const int *shape, char *err, size_t errlen);
int h5_write_uint8s(hid_t loc, const char *name, const uint8_t *data, int ndim,
                    const int *shape, char *err, size_t errlen);
// Attributes on an object (file or group, by path "/" or "state_dict").
int h5_write_attr_str(hid_t loc, const char *obj, const char *name, const char *value);
int h5_write_attr_i64(hid_t loc, const char *obj, const char *name, int64_t value);
int h5_read_attr_str(hid_t loc, const char *obj, const char *name, char *out, size_t n);
int h5_read_attr_i64(hid_t loc, const char *obj, const char *name, int64_t *out);
// Calls fn for every dataset below group `group` with its path relative to it
// ("a.b.c" or "grad/x"), in HDF5's name order. Stops when fn returns non-zero.
int h5_list_datasets(hid_t loc, const char *group,
                     int (*fn)(const char *name, void *ctx), void *ctx);
