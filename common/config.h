// INI configuration (libinih) with typed, validated keys.
//
// Files have sections: "[model]\ndepth = 8" defines the key "model.depth".
// `include = other.ini` (before any section) loads another file first, relative
// to the including file, so ablation configs can build on an official recipe.
// `--set model.depth=4` overrides any key. Each module registers a table of the
// keys it reads (name, type, default, range, doc); config_validate then rejects
// unknown keys (listing the valid ones of that section) and bad values (naming
// the file and line, or the --set, and the valid range or choices).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    CK_INT,      // integer in [lo, hi]
    CK_FLOAT,    // real in [lo, hi]
    CK_BOOL,     // on/off, true/false, yes/no, 1/0
    CK_STR,      // any text (paths, names)
    CK_ENUM,     // one of choices "a|b|c"
    CK_INTLIST,  // comma-separated integers, each in [lo, hi]
} config_type;

typedef struct config_key {
    const char *key;       // "section.name"
    config_type type;
    const char *def;       // default, as text ("" for none)
    double lo, hi;         // numeric range (CK_INT, CK_FLOAT, CK_INTLIST)
    const char *choices;   // CK_ENUM: "batch|frozen"
    const char *doc;       // one line for `--help` and error messages
} config_key;

#define CONFIG_MAX_ENTRIES 256
#define CONFIG_MAX_TABLES 16

typedef struct config_entry {
    char key[96];
    char value[512];
    char source[300];      // "configs/rafdb.ini:12" or "--set"
} config_entry;

typedef struct config {
    config_entry entries[CONFIG_MAX_ENTRIES];
    int n;
    const config_key *tables[CONFIG_MAX_TABLES];
    int n_tables;
    char path[512];        // the top-level file, "" if none
} config;

void config_init(config *c);
// Registers a key table terminated by an entry with key == NULL. Idempotent.
void config_register(config *c, const config_key *table);
// Loads an INI file (and what it includes); later definitions win.
int config_load(config *c, const char *path, char *err, size_t errlen);
// The same for INI text in memory (e.g. the configuration a checkpoint stores);
// label names it in messages (and is the base of relative includes).
int config_load_text(config *c, const char *text, const char *label, char *err,
                     size_t errlen);
// "section.key=value"
int config_set(config *c, const char *assignment, char *err, size_t errlen);
// Every key must be registered and every value valid (including defaults).
int config_validate(const config *c, char *err, size_t errlen);

// Getters for registered keys (value or default). Unregistered keys are a
// programmer error; call after config_validate.
const config_key *config_find_key(const config *c, const char *key);
bool config_has(const config *c, const char *key);      // set by a file or --set
const char *config_str(const config *c, const char *key);
long config_int(const config *c, const char *key);
double config_float(const config *c, const char *key);
bool config_bool(const config *c, const char *key);
// A validated list (at most CONFIG_INTLIST_MAX entries): the first min(n, max)
// values go to out; returns n, the list's full length, which may exceed max.
#define CONFIG_INTLIST_MAX 64
int config_intlist(const config *c, const char *key, int *out, int max);

// The resolved configuration (every registered key with its value) as INI text;
// malloc'ed. Stored in checkpoints so a run can be reproduced or resumed.
char *config_dump(const config *c);
void config_print_keys(const config *c, FILE *f);

// Common CLI handling: parses "--config FILE" and repeated "--set k=v" (also
// "--set=k=v") out of argv, loads and applies them in order. Other arguments
// are left for the caller: rest[] gets them (argv[0] first), *nrest their count.
int config_from_args(config *c, int argc, char **argv, char **rest, int *nrest,
                     char *err, size_t errlen);
