// Internals shared by the data/ modules: decoded images, the resize, the
// augmentation plan of one sample, and the dataset structure.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data/dataset.h"

// ---------------------------------------------------------------------------
// image.c: decoded 8-bit images, RGB interleaved [h, w, 3]

typedef struct image_u8 {
    int h, w;
    uint8_t *px;   // [h, w, 3], malloc'ed
} image_u8;

void image_free(image_u8 *im);
// Decodes a JPEG (grey is replicated to 3 channels). tj may be NULL (a
// temporary decoder is made). Truncated or corrupt data is an error (libjpeg
// warnings included: PIL refuses truncated files too).
int image_decode_jpeg(void *tj, const uint8_t *buf, size_t n, image_u8 *out, char *err,
                      size_t errlen);
// Reads and decodes a file; messages name the path.
int image_load_jpeg(void *tj, const char *path, image_u8 *out, char *err, size_t errlen);
// JPEG header only (for the cache's first pass).
int image_jpeg_size(void *tj, const char *path, int *h, int *w, char *err, size_t errlen);
void *image_tj_decoder(void);          // tjInitDecompress
void image_tj_free(void *tj);
// Encodes RGB [h, w, 3] into a JPEG file (quality 1..100).
int image_save_jpeg(const char *path, const uint8_t *rgb, int h, int w, int quality,
                    char *err, size_t errlen);

// PIL's Image.resize(BILINEAR) on uint8 RGB, to out_size x out_size, bit-exact:
// fixed-point coefficients (22 bits), horizontal pass rounded to uint8, then
// vertical, antialiased (support scaled) when shrinking. step 2 computes only
// the pixels (2i, 2j) of the full result: out is [out_size/step]^2 x 3.
void image_resize_pil(const image_u8 *in, int out_size, int step, uint8_t *out);

// ---------------------------------------------------------------------------
// augment.c: the per-sample plan and the pipeline source -> normalized floats

typedef struct aug_plan {
    bool noise;              // Gaussian noise N(0, 30) on the source, before the flip
    uint64_t noise_seed;
    bool flip;               // horizontal flip of the (noised) source
    bool erase;              // random erasing in 224 coordinates, fill 0
    int ei, ej, eh, ew;      // top, left, height, width
    int basic;               // -1 none, 0 flip, 1 noise (statistics/tests)
    bool rand_flip;          // the second, unconditional-p flip
} aug_plan;

// Draws the official training augmentation of the sample at `position` of
// epoch `epoch` (independent of thread timing and of the other samples).
void aug_draw(uint64_t seed, int epoch, int64_t position, aug_plan *p);
// torchvision RandomErasing.get_params on a [*, H, W] tensor with scale
// (0.02, 0.1), ratio (0.3, 3.3), 10 tries; false when no try fits.
bool aug_erase_params(rng *r, int H, int W, int *i, int *j, int *h, int *w);
// Source image -> normalized [3, S/step, S/step] floats. plan NULL = eval.
// bgr: channel 0 is blue (RAF-DB's official order). scratch grows as needed.
typedef struct aug_scratch {
    uint8_t *buf;
    size_t cap;
    uint8_t *rs;             // resized [S, S, 3]
    size_t rs_cap;
} aug_scratch;
void aug_scratch_free(aug_scratch *s);
void aug_apply(const image_u8 *src, const aug_plan *plan, bool bgr, int out_size, int step,
               aug_scratch *s, float *out);
// Adds N(0, var 30) noise, clips to [0, 255] and truncates (numpy astype(uint8)).
void aug_add_noise(uint8_t *px, size_t n, uint64_t seed);
void aug_flip(const uint8_t *in, int h, int w, uint8_t *out);
// ToTensor + Normalize as torchvision computes them in float32: lut[c][v].
const float (*aug_norm_lut(void))[256];

// ---------------------------------------------------------------------------
// datasets.c

// The most classes a dataset may have (data.num_classes, labels of csv lists).
#define DATA_MAX_CLASSES 10000

typedef enum { SRC_FILE, SRC_PIXELS, SRC_CACHE } data_src_kind;

struct dataset {
    int n;
    int num_classes;
    char **class_names;      // [num_classes]
    int *labels;             // [n]
    char **paths;            // [n] files (SRC_FILE) or the source name
    data_src_kind kind;
    // SRC_PIXELS: grey faces held in memory (FERPlus), [n, ph, pw]
    uint8_t *pixels;
    int ph, pw;
    // SRC_CACHE: uint8 [h, w, 3] images at byte offsets of the HDF5 file
    int cache_fd;
    int64_t *cache_off;      // [n] absolute file offsets
    int *cache_h, *cache_w;  // [n]
    bool bgr;
    bool skip_bad;
    int bad_at_open;         // lines skipped at open (skip_bad)
    char format[16];
    char split[16];
    char root[512];
};

dataset *dataset_alloc(void);
// Appends a sample (path/source copied).
void dataset_push(dataset *d, const char *path, int label);
void dataset_set_classes(dataset *d, int k, const char *const *names);
// Loads sample i decoded (RGB). Messages name the file.
int dataset_load(const dataset *d, int i, void *tj, image_u8 *out, char *err, size_t errlen);
// Opens from an explicit format/root (tests and tools use this too).
int dataset_open_cache(const config *c, const char *path, const char *split, dataset **out,
                       char *err, size_t errlen);

// The channel-order rule, once: data.channel_order = bgr, or auto and the
// dataset's official order is BGR (RAF-DB, read by OpenCV in the official code).
bool data_channel_bgr(const config *c, bool official_bgr);
// The split named instead when a folder or cache has only one of val and test.
const char *data_split_stand_in(const char *split);

// ---------------------------------------------------------------------------
// parse.c: what the format readers share

// Where a reader is: file and line for messages, data.skip_bad, the log.
typedef struct pctx {
    const char *file;
    int line;
    bool skip;      // data.skip_bad
    FILE *log;
    int nbad;
    char *err;
    size_t errlen;
} pctx;

// A bad line: fatal (returns -1, err set) or, with skip_bad, logged (returns 0).
__attribute__((format(printf, 2, 3))) int parse_bad(pctx *p, const char *fmt, ...);
// Reads a line without its end-of-line; false at EOF.
bool parse_line(FILE *f, char **buf, size_t *cap, int *lineno);
bool parse_blank(const char *s);
bool parse_int(const char *s, long *v);   // the whole string, blanks around allowed
bool parse_is_dir(const char *p);
bool parse_is_file(const char *p);
// Splits a CSV line in place (double quotes honoured). Returns the field count.
int parse_csv_split(char *s, char **fields, int max);
char *parse_trim(char *s);
// Opens a list for reading; messages then name it (p->file, line 0), or
// err = "PATH: cannot open: ...".
FILE *parse_open_list(pctx *p, const char *path);

typedef struct {
    char *name;
    long num;      // numeric stem, or -1
} dir_item;
// Lists the entries of a folder (sorted: numerically when stems are numbers).
// want_dirs selects folders, else JPEG files; *others counts what was left out.
int parse_list_dir(const char *dir, bool want_dirs, dir_item **out, int *n, int *others);
void parse_free_items(dir_item *it, int n);
// "a, b,c" -> n malloc'ed trimmed names.
int parse_split_names(const char *s, char ***out);
void parse_free_names(char **v, int n);
int parse_cmp_str(const void *a, const void *b);   // qsort on char * (or dir_item)
int parse_find_name(char **names, int n, const char *s);

// ---------------------------------------------------------------------------
// The formats (data.format), one file each: rafdb.c, ferplus.c, affectnet.c,
// custom.c (folder, csv). datasets.c holds the table and opens through it;
// cache.c asks it which splits exist and what the official channel order is.

typedef struct data_format {
    const char *name;   // the data.format value
    // Fills d (root, format and the requested split already set in d) with the
    // samples and classes of `split`, the split the format stores (split_of).
    int (*open)(const config *c, dataset *d, const char *split, pctx *p);
    // The stored split each of train, val, test reads ("val" of RAF-DB is its
    // test split); {NULL} when the splits are files or folders (split_path).
    const char *split_of[3];
    // Files and folders: where a split is under root (exists = it is there).
    void (*split_path)(const config *c, const char *root, const char *split, char *buf,
                       size_t n);
    bool bgr;          // official channel order BGR
    bool needs_root;   // data.root must be set (csv lists may name their own paths)
} data_format;

extern const data_format data_format_rafdb, data_format_ferplus, data_format_affectnet,
    data_format_folder, data_format_csv;
// The format named by data.format; NULL for an unknown name.
const data_format *data_format_find(const char *name);

// ---------------------------------------------------------------------------
// sampler.c: the sample order of an epoch (depends on seed and epoch only)

// Uniform random permutation of 0..n-1.
void sampler_shuffle(int *order, int n, uint64_t seed, int epoch);
// File order (data.sampler = sequential): the same every epoch.
void sampler_sequential(int *order, int n);
// n draws with replacement, weight of a sample 1/count of its class.
void sampler_balanced(int *order, int n, const int *labels, int num_classes, uint64_t seed,
                      int epoch);
// A well-mixed 64-bit seed from parts (splitmix64).
uint64_t data_mix_seed(uint64_t a, uint64_t b, uint64_t c, uint64_t d);

// ---------------------------------------------------------------------------
// synth.c: cartoon-face expression dataset in the RAF-DB layout

int synth_write(const char *dir, int per_class, uint64_t seed, char *err, size_t errlen);
// Draws one 100x100 face of class k (RAF-DB order) into rgb [100, 100, 3].
void synth_face(int k, uint64_t seed, uint8_t *rgb);

// ---------------------------------------------------------------------------
// cache.c

int cache_prepare(const config *c, const char *out_path, FILE *log, char *err, size_t errlen);

// datasets.c extras: the opener with an explicit skip_bad and log (the check
// command reports every problem), and the parsers the tests check directly.
int dataset_open_ex(const config *c, const char *split, bool skip_bad, FILE *log, dataset **out,
                    char *err, size_t errlen);
// Whether a split exists for the configured dataset (RAF-DB: train and test;
// AffectNet: train and val; FERPlus all three; folder and csv: on disk).
bool data_split_exists(const config *c, const char *split);
// ferplus.c: FERPlus majority label from the 10 vote columns; -1 = dropped.
int ferplus_majority(const double votes[10]);
// affectnet.c: the single integer label of a .npy file.
int npy_read_label(const char *path, long *v, char *err, size_t errlen);
