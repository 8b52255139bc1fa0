// Subcommands of the `poster` program. Each returns the process exit code.
#pragma once
#include <stddef.h>

#include "common/config.h"

typedef int (*cli_cmd_fn)(int argc, char **argv);   // argv[0] is the subcommand name

int cli_info(int argc, char **argv);      // cli/model.c
int cli_forward(int argc, char **argv);   // cli/model.c
int cli_data(int argc, char **argv);      // cli/data.c
int cli_train(int argc, char **argv);     // cli/train.c
int cli_eval(int argc, char **argv);      // cli/eval.c
int cli_predict(int argc, char **argv);   // cli/eval.c
int cli_import(int argc, char **argv);    // cli/import.c
int cli_bench(int argc, char **argv);     // cli/bench.c
int cli_sweep(int argc, char **argv);     // cli/sweep.c

// ---- helpers the subcommands share ----
// The resolved configuration stored in checkpoint `ckpt` (train --resume, eval,
// predict): c gets its keys (train keys registered first). 0, or -1 with err.
int cli_load_ckpt_config(config *c, const char *ckpt, char *err, size_t errlen);   // cli/train.c
