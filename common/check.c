// The one place programmer errors end the program (AG_ASSERT).
#include "common/check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void ag_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: internal error: assertion `%s' failed", file, line, cond);
    if (fmt && fmt[0]) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    abort();
}
