// The one atomic writer (common/atomic.h).
#include "common/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int atomic_tmp_name(const char *path, char *tmp, size_t n, char *err, size_t errlen) {
    if (snprintf(tmp, n, "%s.tmp", path) >= (int)n) {
        snprintf(err, errlen, "%.400s: path too long", path);
        return -1;
    }
    return 0;
}

int atomic_commit(const char *tmp, const char *path, char *err, size_t errlen) {
    int fd = open(tmp, O_RDONLY);   // data on disk before the rename makes it visible
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "fsync %.400s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        remove(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %.400s to %.400s: %s", tmp, path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

FILE *atomic_fopen(const char *path, const char *mode, char *tmp, size_t n, char *err,
                   size_t errlen) {
    if (atomic_tmp_name(path, tmp, n, err, errlen)) return NULL;
    FILE *f = fopen(tmp, mode);
    if (!f) snprintf(err, errlen, "cannot create %.400s: %s", tmp, strerror(errno));
    return f;
}

int atomic_fclose(FILE *f, const char *tmp, const char *path, char *err, size_t errlen) {
    errno = 0;
    int bad = ferror(f) || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (bad) {
        snprintf(err, errlen, "cannot write %.400s: %s", tmp, e ? strerror(e) : "write error");
        remove(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {   // fsync'ed above
        snprintf(err, errlen, "rename %.400s to %.400s: %s", tmp, path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

void atomic_fabort(FILE *f, const char *tmp) {
    if (f) fclose(f);
    remove(tmp);
}
