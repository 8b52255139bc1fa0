// The section profiler (autograd/profile.h).
#include "autograd/profile.h"

#include <string.h>
#include <time.h>

#include "autograd/tensor.h"

bool g_prof_on;

static struct {
    const char *name[PROF_MAX_SECTIONS];   // the callers' string literals
    double sec[PROF_MAX_SECTIONS][2];
    int n;
    int cur, phase;
    double last;                           // clock at the previous switch
} g_prof = {.name = {"other"}, .n = 1};

static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Charges the time since the last switch to the current section, then switches.
static void prof_switch(int id, int phase) {
    double t = prof_now();
    g_prof.sec[g_prof.cur][g_prof.phase] += t - g_prof.last;
    g_prof.last = t;
    g_prof.cur = id;
    g_prof.phase = phase;
}

void prof_set_enabled(bool on) {
    if (on && !g_prof_on) g_prof.last = prof_now();
    if (!on && g_prof_on) prof_switch(g_prof.cur, g_prof.phase);   // charge the tail
    g_prof_on = on;
}

void prof_reset(void) {
    memset(g_prof.sec, 0, sizeof g_prof.sec);
    g_prof.last = prof_now();
}

int prof_section_find(const char *name) {
    for (int i = 0; i < g_prof.n; i++)
        if (g_prof.name[i] == name || !strcmp(g_prof.name[i], name)) return i;
    return -1;
}

static int prof_section_id(const char *name) {
    int i = prof_section_find(name);
    if (i >= 0) return i;
    AG_ASSERT(g_prof.n < PROF_MAX_SECTIONS, "profiler: more than %d sections (at '%s')",
              PROF_MAX_SECTIONS, name);
    g_prof.name[g_prof.n] = name;
    return g_prof.n++;
}

int prof_enter_slow(const char *name) {
    int prev = g_prof.cur;
    prof_switch(prof_section_id(name), PROF_FORWARD);
    return prev;
}

void prof_leave_slow(int prev) {
    AG_ASSERT(prev >= 0 && prev < g_prof.n, "profiler: bad section %d", prev);
    prof_switch(prev, PROF_FORWARD);
}

int prof_current(void) { return g_prof.cur; }

void prof_backward_switch(int section) {
    if (section < 0 || section >= g_prof.n) section = 0;
    if (section != g_prof.cur || g_prof.phase != PROF_BACKWARD)
        prof_switch(section, PROF_BACKWARD);
}

// After backward: back to "other" in the forward phase (the optimizer and
// bookkeeping that follow enter their own sections).
void prof_backward_end(void) { prof_switch(0, PROF_FORWARD); }

int prof_section_count(void) { return g_prof.n; }

const char *prof_section_name(int id) {
    return id >= 0 && id < g_prof.n ? g_prof.name[id] : "?";
}

double prof_seconds(int id, int phase) {
    if (id < 0 || id >= g_prof.n || phase < 0 || phase > 1) return 0;
    return g_prof.sec[id][phase];
}

double prof_total_seconds(void) {
    double s = 0;
    for (int i = 0; i < g_prof.n; i++) s += g_prof.sec[i][0] + g_prof.sec[i][1];
    return s;
}

void prof_print(FILE *f, const char *title) {
    if (g_prof_on) prof_switch(g_prof.cur, g_prof.phase);   // up to date
    double tot = prof_total_seconds();
    fprintf(f, "%s\n  %-16s %10s %10s %10s %7s\n", title, "section", "forward s", "backward s",
            "total s", "share");
    for (int i = 0; i < g_prof.n; i++) {
        double a = g_prof.sec[i][0], b = g_prof.sec[i][1];
        if (a + b <= 0) continue;
        fprintf(f, "  %-16s %10.3f %10.3f %10.3f %6.1f%%\n", g_prof.name[i], a, b, a + b,
                tot > 0 ? 100.0 * (a + b) / tot : 0.0);
    }
    fprintf(f, "  %-16s %10s %10s %10.3f %6.1f%%\n", "all", "", "", tot, 100.0);
}
