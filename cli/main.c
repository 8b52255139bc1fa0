// The `poster` program: one binary, subcommands listed by `poster help`.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "eval/plot.h"

typedef struct {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
} cli_cmd;

// One row per subcommand; a module adds its row when it lands.
static const cli_cmd g_cmds[] = {
    {"help", NULL, "list the subcommands"},
    {"import", cli_import, "convert a PyTorch .pth/.pth.tar to our HDF5 state"},
    {"info", cli_info, "architecture summary and parameter counts of a model configuration"},
    {"forward", cli_forward, "one forward (and backward) of given weights on given inputs"},
    {"data", cli_data, "check, dump, cache (prepare) or synthesize (synth) a dataset"},
    {"train", cli_train, "train POSTER from an INI recipe (resume, fine-tune)"},
    {"sweep", cli_sweep, "grid x seeds of train runs, resumable, with a summary over seeds"},
    {"eval", cli_eval, "accuracy, macro F1, score, per-class accuracy, confusion matrix"},
    {"predict", cli_predict, "top classes with probabilities for face images"},
    {"bench", cli_bench, "images/s of forward and training steps of a model on this machine"},
};

static void print_help(FILE *f) {
    fprintf(f, "usage: poster <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", g_cmds[i].name, g_cmds[i].summary);
    fprintf(f, "\n`poster <command> --help` describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "-h")) {
        print_help(stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        if (g_cmds[i].fn && !strcmp(argv[1], g_cmds[i].name)) {
            int rc = g_cmds[i].fn(argc - 1, argv + 1);
            plot_release_fonts();   // so valgrind sees nothing of fontconfig's left
            return rc;
        }
    fprintf(stderr, "poster: unknown command '%s'\n\n", argv[1]);
    print_help(stderr);
    return 2;
}
