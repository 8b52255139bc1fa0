// Pretrained weights the official way (layers/pretrained.h): the official
// MobileFaceNet names (conv_k.model.<i>) mapped to ours; model.pretrained_ir50 /
// model.pretrained_mobilefacenet matched by name and shape into ir_back. /
// face_landback. with exact matched/missing/unexpected counts and values; the
// full 4-stage IR-50 layout gives 304 matched + 45 unexpected against the full
// trunk; an official POSTER checkpoint (module. keys, model_state_dict,
// optimizer state) loads strictly; train and eval pick them up through the CLI.
// Fixtures: tests/reference/ref_pretrained.py (tensors are views of small shared
// storages, so POSTER_PTH_ELEM_LIMIT is raised for them).
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "layers/pretrained.h"
#include "test_util.h"
#include "common/pth_read.h"
#include "layers/weights.h"
#include "train/trainer.h"

#define FX "tests/fixtures/pretrained/"

// ref_pretrained.py: storage_value(r, j), offset(name).
static float storage_value(int r, int j) {
    double u = ((j * 7) % 101) / 101.0 - 0.5;
    double v = r == 0 ? 0.05 * u : r == 1 ? 1.0 + 0.1 * u : 1.0 + 0.2 * u;
    return (float)v;
}
static int name_offset(const char *file_name) { return (int)(strlen(file_name) % 97); }

static poster_model *small_model(const char *ir_units, int depth) {
    poster_opts o;
    poster_opts_default(&o);
    o.depth = depth;
    o.pyramid_levels = 1;
    int u[3];
    sscanf(ir_units, "%d,%d,%d", &u[0], &u[1], &u[2]);
    memcpy(o.ir_units, u, sizeof u);
    char err[512];
    poster_model *m = poster_create(&o, 1, err, sizeof err);
    if (!m) fail_msg("%s", err);
    return m;
}

static void cfg_with(config *c, const char *ir, const char *mf) {
    config_init(c);
    poster_config_register(c);
    char kv[600], err[512];
    snprintf(kv, sizeof kv, "model.pretrained_ir50=%s", ir);
    assert_int_equal(config_set(c, kv, err, sizeof err), 0);
    snprintf(kv, sizeof kv, "model.pretrained_mobilefacenet=%s", mf);
    assert_int_equal(config_set(c, kv, err, sizeof err), 0);
    if (config_validate(c, err, sizeof err)) fail_msg("%s", err);
}

static void test_name_mapping(void **st) {
    (void)st;
    char a[128] = "conv_3.model.0.conv.conv.weight";
    assert_int_equal(pth_map_official_name(a), 1);
    assert_string_equal(a, "conv_3.0.conv.conv.weight");
    char b[128] = "face_landback.conv_5.model.1.project.bn.running_var";
    assert_int_equal(pth_map_official_name(b), 1);
    assert_string_equal(b, "face_landback.conv_5.1.project.bn.running_var");
    char c[128] = "face_landback.conv_34.conv.conv.weight";   // not a Residual
    assert_int_equal(pth_map_official_name(c), 0);
    assert_string_equal(c, "face_landback.conv_34.conv.conv.weight");
    char d[128] = "xconv_3.model.0.w";                         // not at a name boundary
    assert_int_equal(pth_map_official_name(d), 0);
    char e[128] = "conv_6.model.0.w";
    assert_int_equal(pth_map_official_name(e), 0);
    char f[128] = "conv_4.model.x";
    assert_int_equal(pth_map_official_name(f), 0);
}

static void test_backbones_from_config(void **st) {
    (void)st;
    poster_model *m = small_model("1,1,1", 1);
    param_store *s = poster_store(m);
    param *bn = store_find(s, "ir_back.body.0.res_layer.0.weight");
    float keep = store_find(s, "face_landback.conv_4.0.conv.conv.weight")->t.data[0];
    config c;
    cfg_with(&c, FX "ir50_layout.pth", FX "mobilefacenet_layout.pth.tar");
    state_report rep[2];
    char err[2048];
    FILE *log = fopen(tu_path("/load.log"), "w");
    assert_non_null(log);
    int rc = poster_load_pretrained(m, &c, rep, log, err, sizeof err);
    fclose(log);
    if (rc) fail_msg("%s", err);
    // ir_units 1,1,1: input_layer 7 + body.0 13 + body.1/2 19 each + output_layer 12 = 70;
    // the file's 4th stage (body.3, 19 tensors) is unexpected
    assert_int_equal(rep[0].matched, 70);
    assert_int_equal(rep[0].missing, 0);
    assert_int_equal(rep[0].unexpected, 19);
    assert_int_equal(rep[0].misshaped, 0);
    // conv1 7 + conv_3.model.0/1 2x20 + output_layer.bn 5 = 52 of 333; extra_head unexpected
    assert_int_equal(rep[1].matched, 52);
    assert_int_equal(rep[1].missing, 333 - 52);
    assert_int_equal(rep[1].unexpected, 1);
    assert_int_equal(rep[1].misshaped, 0);
    // values: t[i,j,k,l] = storage[offset(file name) + i+j+k+l]
    param *w = store_find(s, "ir_back.body.2.res_layer.1.weight");   // [256,128,3,3]
    int off = name_offset("body.2.res_layer.1.weight");
    assert_float_equal(w->t.data[((1 * 128 + 2) * 3 + 0) * 3 + 1], storage_value(0, off + 4), 0);
    assert_float_equal(bn->t.data[3], storage_value(1, name_offset("body.0.res_layer.0.weight") + 3), 0);
    param *mw = store_find(s, "face_landback.conv_3.1.conv.conv.weight");   // [128,64,1,1]
    off = name_offset("conv_3.model.1.conv.conv.weight");
    assert_float_equal(mw->t.data[5 * 64 + 3], storage_value(0, off + 8), 0);
    param *rv = store_find(s, "face_landback.output_layer.bn.running_var");
    assert_float_equal(rv->t.data[7], storage_value(2, name_offset("output_layer.bn.running_var") + 7), 0);
    param *nbt = store_find(s, "face_landback.conv1.bn.num_batches_tracked");
    assert_int_equal(*nbt->counter, (int64_t)strlen("conv1.bn.num_batches_tracked"));
    // not in the file: kept
    assert_float_equal(store_find(s, "face_landback.conv_4.0.conv.conv.weight")->t.data[0], keep, 0);
    poster_free(m);
}

static void test_errors_and_empty(void **st) {
    (void)st;
    poster_model *m = small_model("1,1,1", 1);
    config c;
    char err[2048];
    state_report rep[2];
    cfg_with(&c, "", "");
    assert_int_equal(poster_load_pretrained(m, &c, rep, NULL, err, sizeof err), 0);
    assert_int_equal(rep[0].matched + rep[1].matched, 0);
    cfg_with(&c, tu_path("/no_such_ir50.pth"), "");
    assert_int_not_equal(poster_load_pretrained(m, &c, rep, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "model.pretrained_ir50"));
    assert_non_null(strstr(err, "no_such_ir50.pth"));
    // the MobileFaceNet file given as the IR-50: nothing matches under ir_back.
    cfg_with(&c, FX "mobilefacenet_layout.pth.tar", "");
    assert_int_not_equal(poster_load_pretrained(m, &c, rep, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "model.pretrained_ir50"));
    assert_non_null(strstr(err, "none of its"));
    poster_free(m);
}

// The official IR-50 (4 stages 3,4,14,3 + output_layer) against POSTER's full
// 3-stage trunk: the official loader's "304 matched"; body.21-23 unexpected.
static void test_ir50_full_split(void **st) {
    (void)st;
    FILE *f = fopen(FX "ir50_full_names.tsv", "r");
    assert_non_null(f);
    pth_state ps;
    memset(&ps, 0, sizeof ps);
    ps.t = calloc(512, sizeof *ps.t);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char name[300], shape[100];
        assert_int_equal(sscanf(line, "%299s %99s", name, shape), 2);
        pth_tensor *t = &ps.t[ps.n++];
        t->name = strdup(name);
        t->numel = 1;
        if (strcmp(shape, "scalar"))
            for (char *p = shape; *p; p += *p == 'x') {
                t->shape[t->ndim] = (int)strtol(p, &p, 10);
                t->numel *= t->shape[t->ndim++];
            }
        t->is_int = strstr(name, "num_batches_tracked") != NULL;
        if (t->is_int) t->i64 = calloc(1, sizeof(int64_t));
        else t->f32 = calloc((size_t)t->numel, sizeof(float));
    }
    fclose(f);
    poster_model *m = small_model("3,4,14", 1);
    state_report rep;
    char err[1024];
    if (weights_from_state(poster_store(m), &ps, "ir50_full_names.tsv", "ir_back.", false, &rep,
                           NULL, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(rep.matched, 304);
    assert_int_equal(rep.missing, 0);
    assert_int_equal(rep.unexpected, 19 + 13 + 13);   // body.21 (shortcut conv), body.22, .23
    assert_int_equal(rep.misshaped, 0);
    assert_int_equal(ps.n, 304 + 45);
    for (int i = 0; i < ps.n; i++) {
        free(ps.t[i].name);
        free(ps.t[i].f32);
        free(ps.t[i].i64);
    }
    free(ps.t);
    poster_free(m);
}

static void test_official_checkpoint(void **st) {
    (void)st;
    poster_model *m = small_model("1,1,1", 1);
    param_store *s = poster_store(m);
    char err[2048];
    FILE *log = fopen(tu_path("/official.log"), "w");
    int rc = poster_load_pth_strict(s, FX "poster_official.pth", log, err, sizeof err);
    fclose(log);
    if (rc) fail_msg("%s", err);
    // values are keyed by our names in this fixture
    const char *nm = "face_landback.conv_3.2.conv_dw.conv.weight";   // [128,1,3,3]
    param *p = store_find(s, nm);
    assert_float_equal(p->t.data[(7 * 3 + 1) * 3 + 2], storage_value(0, name_offset(nm) + 10), 0);
    nm = "head.linear.weight";
    p = store_find(s, nm);
    assert_float_equal(p->t.data[3 * p->shape[1] + 100], storage_value(0, name_offset(nm) + 103), 0);
    poster_free(m);
    // another architecture: an error with the counts, naming a tensor
    m = small_model("1,1,1", 2);
    assert_int_not_equal(poster_load_pth_strict(poster_store(m), FX "poster_official.pth", NULL,
                                                err, sizeof err), 0);
    assert_non_null(strstr(err, "missing"));
    assert_non_null(strstr(err, "pyramid_fuse"));
    poster_free(m);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

// poster train picks the keys up at model creation; poster eval reads an
// official checkpoint with --config. Through POSTER_BIN (make test).
static void test_cli(void **st) {
    (void)st;
    const char *bin = getenv("POSTER_BIN");
    if (!bin) tu_skip("poster train/eval with pretrained keys: POSTER_BIN is not set (make test sets it)");
    char err[512];
    struct stat sb;
    if (stat(tu_path("/synth/EmoLabel/list_patition_label.txt"), &sb))
        assert_int_equal(synth_write(tu_path("/synth"), 6, 7, err, sizeof err), 0);
    FILE *f = fopen(tu_path("/small.ini"), "w");
    const char *T = tu_tmpdir();
    fprintf(f, "[model]\ndepth = 1\npyramid_levels = 1\nir_units = 1,1,1\n"
               "pretrained_ir50 = " FX "ir50_layout.pth\n"
               "pretrained_mobilefacenet = " FX "mobilefacenet_layout.pth.tar\n"
               "[data]\nformat = rafdb\nroot = %s/synth\nimage_size = 112\nworkers = 1\n"
               "[train]\nepochs = 1\nbatch_size = 8\nmicro_batch = 8\nthreads = 2\n"
               "progress = off\nout_dir = %s/run\n[optim]\nsam = off\n"
               "[eval]\nsplit = test\nbatch_size = 16\nplots = off\n", T, T);
    fclose(f);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s train --config %s/small.ini > %s/train.txt 2>&1", bin, T, T);
    assert_int_equal(system(cmd), 0);
    char *out = slurp(tu_path("/train.txt"));
    assert_non_null(out);
    if (!strstr(out, "model.pretrained_ir50: load_weight 70 matched into ir_back., 0 missing, 19 "
                     "unexpected") ||
        !strstr(out, "model.pretrained_mobilefacenet: load_weight 52 matched into face_landback., "
                     "281 missing, 1 unexpected"))
        fail_msg("train output lacks the load reports:\n%s", out);
    // eval on an official POSTER checkpoint: the config comes from --config
    snprintf(cmd, sizeof cmd, "%s eval --checkpoint " FX "poster_official.pth --config "
             "%s/small.ini --out %s/eval > %s/eval.txt 2>&1", bin, T, T, T);
    assert_int_equal(system(cmd), 0);
    out = slurp(tu_path("/eval.txt"));
    if (!strstr(out, "441 tensors matched") || !strstr(out, "'module.' stripped from 441") ||
        !strstr(out, "accuracy"))
        fail_msg("eval output:\n%s", out);
    // without --config: a clear error
    snprintf(cmd, sizeof cmd, "%s eval --checkpoint " FX "poster_official.pth > %s/eval2.txt 2>&1",
             bin, T);
    assert_int_not_equal(system(cmd), 0);
    out = slurp(tu_path("/eval2.txt"));
    assert_non_null(strstr(out, "--config"));
}

int main(void) {
    setenv("POSTER_PTH_ELEM_LIMIT", "100000000", 1);   // fixtures share small storages
    mkdir(tu_tmpdir(), 0755);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_mapping),
        cmocka_unit_test(test_backbones_from_config),
        cmocka_unit_test(test_errors_and_empty),
        cmocka_unit_test(test_ir50_full_split),
        cmocka_unit_test(test_official_checkpoint),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
