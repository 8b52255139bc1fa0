// Writing a file so that a crash, a signal or a full disk never leaves it
// half-written: everything goes to PATH.tmp, which is flushed, fsync'ed (the
// result checked) and only then renamed over PATH. Until the rename the previous
// PATH is untouched; on any failure PATH.tmp is removed.
#pragma once
#include <stddef.h>
#include <stdio.h>

// PATH.tmp into tmp; -1 with err when it does not fit in n bytes.
int atomic_tmp_name(const char *path, char *tmp, size_t n, char *err, size_t errlen);

// For files another library wrote and closed at tmp (HDF5, cairo): fsync, then
// rename over path. 0, or -1 with err ("fsync TMP: ...", "rename TMP to PATH:
// ...") and tmp removed.
int atomic_commit(const char *tmp, const char *path, char *err, size_t errlen);

// For stdio writers: opens PATH.tmp (mode "w" or "wb"; its name into tmp).
// NULL with err when it cannot.
FILE *atomic_fopen(const char *path, const char *mode, char *tmp, size_t n, char *err,
                   size_t errlen);
// Flushes and closes f (every write error shows up here: fflush, fsync, fclose
// are all checked), then atomic_commit. 0, or -1 with err and tmp removed.
int atomic_fclose(FILE *f, const char *tmp, const char *path, char *err, size_t errlen);
// Gives up: closes f and removes tmp; path stays as it was.
void atomic_fabort(FILE *f, const char *tmp);
