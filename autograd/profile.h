// A lightweight profiler: named sections that model and training code enter
// and leave, timed in forward and backward.
//
// Off by default and then free: prof_enter/prof_leave test one global flag and
// return. When on (prof_set_enabled), each switch reads the monotonic clock and
// charges the time since the previous switch to the section that was current.
// ag_record stores the current section in each tape entry, and ag_backward
// switches to that section before running the entry's backward, so the time
// of a backward is charged to the section whose forward recorded it.
//
//     int prev = prof_enter("transformer");
//     ...                                    // forward ops, charged to "transformer"
//     prof_leave(prev);
//
// Sections nest (prof_leave restores the enclosing one); time outside every
// section goes to section 0, "other". Single-threaded bookkeeping: call from
// the thread that runs the model (ops parallelize inside).
#pragma once
#include <stdbool.h>
#include <stdio.h>

#define PROF_MAX_SECTIONS 32
enum { PROF_FORWARD = 0, PROF_BACKWARD = 1 };

extern bool g_prof_on;   // read through prof_enabled(); set with prof_set_enabled

static inline bool prof_enabled(void) { return g_prof_on; }
// Turns timing on or off. Turning it on starts the clock in the current section.
void prof_set_enabled(bool on);
// Zeroes every section's times (names stay registered).
void prof_reset(void);

// Switches to section `name` (registered on first use) in the forward phase.
// Returns the previous section's id for prof_leave. No-op (returns 0) when off.
int prof_enter_slow(const char *name);
static inline int prof_enter(const char *name) { return g_prof_on ? prof_enter_slow(name) : 0; }
void prof_leave_slow(int prev);
static inline void prof_leave(int prev) {
    if (g_prof_on) prof_leave_slow(prev);
}

// The tape's hooks (autograd/tensor.c): the section a recorded op belongs to,
// and the switch before each backward entry / after the whole backward.
int prof_current(void);
void prof_backward_switch(int section);
void prof_backward_end(void);

// Accumulated seconds of section id in phase PROF_FORWARD or PROF_BACKWARD.
int prof_section_count(void);
const char *prof_section_name(int id);
int prof_section_find(const char *name);   // -1 if never entered
double prof_seconds(int id, int phase);
double prof_total_seconds(void);
// A table "section  forward s  backward s  total s  share" (sections with time only).
void prof_print(FILE *f, const char *title);
