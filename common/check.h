// Programmer errors (a broken invariant, not bad input): abort with file and line.
// User errors (files, flags, configuration) return codes and messages instead.
#pragma once

#define AG_ASSERT(cond, ...)                                                  \
    do {                                                                      \
        if (!(cond)) ag_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__);      \
    } while (0)
void ag_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));
