# POSTER in C. `make demo` and `make test` are the two commands a newcomer runs.
CC      ?= gcc
PKGS    := openblas hdf5 libturbojpeg inih libzip cairo fontconfig
export PKG_CONFIG_PATH := /usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
PKG_CFLAGS = $(shell PKG_CONFIG_PATH=$(PKG_CONFIG_PATH) pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell PKG_CONFIG_PATH=$(PKG_CONFIG_PATH) pkg-config --libs $(PKGS) 2>/dev/null)
BLAS_DIR   = $(shell PKG_CONFIG_PATH=$(PKG_CONFIG_PATH) pkg-config --variable=libdir openblas 2>/dev/null)
TEST_LIBS  = $(shell PKG_CONFIG_PATH=$(PKG_CONFIG_PATH) pkg-config --libs cmocka 2>/dev/null)

OPT     ?= -O3 -march=native
CFLAGS  += $(OPT) -g -fopenmp -fno-trapping-math -std=gnu11 -Wall -Wextra -I. $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -Wl,-rpath,$(BLAS_DIR) -lm -lpthread
LDFLAGS += -fopenmp

# MPI (data-parallel training, common/dist.c): on when mpicc is found, or force
# with MPI=1 / MPI=0. Flags from pkg-config ompi-c, else mpicc's own.
ifeq ($(origin MPI),undefined)
MPI := $(if $(shell command -v mpicc 2>/dev/null),1,0)
endif
ifeq ($(MPI),1)
MPI_CFLAGS := $(or $(shell pkg-config --cflags ompi-c 2>/dev/null),$(shell mpicc --showme:compile 2>/dev/null),$(shell mpicc -compile-info 2>/dev/null | cut -d' ' -f2-))
MPI_LIBS   := $(or $(shell pkg-config --libs ompi-c 2>/dev/null),$(shell mpicc --showme:link 2>/dev/null),$(shell mpicc -link-info 2>/dev/null | cut -d' ' -f2-))
CFLAGS  += -DPOSTER_MPI $(MPI_CFLAGS)
LDLIBS  += $(MPI_LIBS)
endif

BUILD   ?= build
# autograd/ops_ref.c (the naive reference kernels) is linked into the tests only.
TEST_ONLY_SRC := autograd/ops_ref.c
LIB_SRC := $(sort $(filter-out cli/main.c $(TEST_ONLY_SRC),$(wildcard common/*.c autograd/*.c layers/*.c data/*.c train/*.c eval/*.c cli/*.c)))
TEST_ONLY_OBJ := $(TEST_ONLY_SRC:%.c=$(BUILD)/%.o)
# Only the pattern rule for tests names it: keep make from deleting it as an intermediate.
.SECONDARY: $(TEST_ONLY_OBJ)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Helper programs the tests start (tests/mpi_*.c: run by mpirun from test_dist).
TEST_HELPER_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(sort $(wildcard tests/mpi_*.c)))
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
POSTER  := $(BUILD)/poster
# Test hooks (a checkpoint write that kills itself, a rank that kills itself in
# an allreduce) are compiled only into a test build of the files that hold them
# (-DPOSTER_TEST_HOOKS): libposter_hooks.a, which the tests link, and
# $(BUILD)/tests/poster_hooks, the program the MPI kill test starts. build/poster
# and libposter.a have no hook code.
HOOK_SRC := common/dist.c train/checkpoint.c
HOOK_OBJ := $(HOOK_SRC:%.c=$(BUILD)/hooks/%.o)
POSTER_HOOKS := $(BUILD)/tests/poster_hooks

.PHONY: all deps demo test asan bench bench-torch clean check-long check-torch fuzz valgrind
all: $(POSTER) $(POSTER_HOOKS) $(TEST_BIN) $(TEST_HELPER_BIN) $(BENCH_BIN)

deps:
	@tools/deps.sh

$(BUILD)/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# dist.o depends on MPI on/off: rebuild it when MPI= changes in this build folder.
$(BUILD)/.mpi-flag: FORCE
	@mkdir -p $(BUILD); echo "$(MPI)" | cmp -s - $@ || echo "$(MPI)" > $@
$(BUILD)/common/dist.o $(BUILD)/hooks/common/dist.o: $(BUILD)/.mpi-flag
.PHONY: FORCE
FORCE:

$(BUILD)/libposter.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/hooks/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DPOSTER_TEST_HOOKS -c $< -o $@

$(BUILD)/libposter_hooks.a: $(filter-out $(HOOK_SRC:%.c=$(BUILD)/%.o),$(LIB_OBJ)) $(HOOK_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(POSTER_HOOKS): $(BUILD)/cli/main.o $(BUILD)/libposter_hooks.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(POSTER): $(BUILD)/cli/main.o $(BUILD)/libposter.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
	@# ./poster is the optimized build's; the sanitizer, fuzz and valgrind folders keep theirs
	@if [ "$(BUILD)" = build ]; then ln -sf build/poster poster 2>/dev/null || true; fi

$(BUILD)/tests/%: tests/%.c tests/test_util.h $(BUILD)/libposter_hooks.a $(TEST_ONLY_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DPOSTER_TEST_HOOKS $(LDFLAGS) -o $@ $< $(TEST_ONLY_OBJ) $(BUILD)/libposter_hooks.a $(LDLIBS) $(TEST_LIBS)

# The fuzz targets run in make test on their committed corpora (tests/fuzz/).
$(BUILD)/tests/test_fuzz_regress: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libposter.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libposter.a $(LDLIBS)

test: deps
	@$(MAKE) --no-print-directory all
	@POSTER_BIN=$(abspath $(POSTER)) POSTER_HOOKS_BIN=$(abspath $(POSTER_HOOKS)) tests/run_tests.sh $(BUILD)/tests

# AddressSanitizer + UBSan build of the same tests, in its own build folder.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fopenmp -fsanitize=address,undefined" all
	@ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) UBSAN_OPTIONS=print_stacktrace=1 POSTER_BIN=$(abspath build-asan/poster) POSTER_HOOKS_BIN=$(abspath build-asan/tests/poster_hooks) tests/run_tests.sh build-asan/tests

bench: deps
	@$(MAKE) --no-print-directory all
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done

# Our benchmarks and the PyTorch scripts in one run: ratios ours/torch (tools/bench_vs_torch.sh).
bench-torch: deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@tools/bench_vs_torch.sh $(BUILD)/bench

demo: deps
	@$(MAKE) --no-print-directory $(POSTER)
	@tools/demo.sh $(POSTER)

check-long: deps
	@$(MAKE) --no-print-directory all
	@POSTER_BIN=$(abspath $(POSTER)) POSTER_HOOKS_BIN=$(abspath $(POSTER_HOOKS)) LONG=1 tests/run_tests.sh $(BUILD)/tests

check-torch: deps
	@$(MAKE) --no-print-directory all
	@tools/check_torch.sh $(POSTER)

# libFuzzer targets of every parser (tests/fuzz/, clang), FUZZ_SECONDS each (default 60);
# summary in build-fuzz/summary.txt.
fuzz:
	@tools/fuzz.sh

# A short training and an evaluation under valgrind memcheck: 0 errors, 0 definite leaks.
valgrind: deps
	@tools/valgrind.sh

clean:
	rm -rf build build-asan build-fuzz build-valgrind poster
