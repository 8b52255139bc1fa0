#!/usr/bin/env bash
# Builds every libFuzzer target tests/fuzz/fuzz_*.c (clang, ASan + UBSan, the
# library compiled with -fsanitize=fuzzer-no-link into build-fuzz/) and runs
# each for FUZZ_SECONDS (default 60) on its corpus: the committed seeds
# tests/fuzz/corpus/<target>/ and the regression inputs tests/fuzz/regress/<target>/,
# grown in build-fuzz/corpus/<target>/. Crashes land in build-fuzz/crashes/<target>/;
# a summary table (executions, exec/s, coverage, crashes, leaks) in build-fuzz/summary.txt.
# Leaks: libhdf5 1.10 loses a few blocks on almost every damaged file, so for
# the HDF5 targets (cache, ckpt) libFuzzer's check after each input (which then
# reruns the input and scans the whole heap, ~90% of the time, and gives up after
# 1000 such inputs anyway) is off; instead every target ends with one pass over
# its whole grown corpus under LeakSanitizer (libhdf5's own losses suppressed,
# our HDF5 handles checked by the targets), which fails on any leak of ours.
#   FUZZ_SECONDS=600 tools/fuzz.sh              # or: make fuzz
#   FUZZ_TARGETS="jpeg cache" tools/fuzz.sh     # some targets only
#   tools/fuzz.sh jpeg build-fuzz/crashes/jpeg/crash-...   # reproduce one input
#   tools/fuzz.sh --seeds                       # rewrite the HDF5 seed files
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
out=build-fuzz
CC=${FUZZ_CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz.sh: $CC not found (apt-get install clang)" >&2; exit 2; }
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
# -Wno-pass-failed: at -O1 with sanitizers clang cannot vectorize some `omp simd`
# loops and says so; the optimized gcc build does vectorize them.
opt="-g -O1 -fno-omit-frame-pointer $san -fsanitize=fuzzer-no-link -Wno-pass-failed"
# The library, sanitized, in its own build folder (make tracks what changed).
make --no-print-directory -s BUILD=$out CC="$CC" MPI=0 OPT="$opt" $out/libposter.a
blas=/usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig
libs="$(PKG_CONFIG_PATH=$blas${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH} pkg-config --libs openblas hdf5 libturbojpeg inih libzip cairo fontconfig)"
libs="$libs -Wl,-rpath,$(PKG_CONFIG_PATH=$blas pkg-config --variable=libdir openblas)"
all_targets=$(cd tests/fuzz && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')
build() {   # target
  local t=$1 bin=$out/fuzz_$1
  if [ ! -x "$bin" ] || [ -n "$(find tests/fuzz/fuzz_$t.c tests/fuzz/fuzz_util.h $out/libposter.a -newer "$bin" 2>/dev/null)" ]; then
    echo "fuzz.sh: building $bin"
    # shellcheck disable=SC2086
    $CC -g -O1 -fno-omit-frame-pointer -std=gnu11 -I. $san -fsanitize=fuzzer -fopenmp \
      $(pkg-config --cflags hdf5 libturbojpeg inih libzip 2>/dev/null) \
      -o "$bin" tests/fuzz/fuzz_$t.c $out/libposter.a $libs -lm -lpthread
  fi
}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1
if [ "${1:-}" = --seeds ]; then
  for t in ckpt cache; do
    build $t
    mkdir -p tests/fuzz/corpus/$t
    FUZZ_WRITE_SEEDS=tests/fuzz/corpus/$t $out/fuzz_$t -runs=0 >/dev/null 2>&1 || true
    ls -l tests/fuzz/corpus/$t
  done
  exit 0
fi
if [ $# -gt 0 ]; then t=$1; shift; build "$t"; exec "$out/fuzz_$t" "$@"; fi
targets=${FUZZ_TARGETS:-$all_targets}
for t in $targets; do build "$t"; done
summary=$out/summary.txt
printf '%-8s %8s %12s %10s %8s %8s %8s %6s\n' target seconds executions exec/s cov ft crashes leaks > "$summary"
status=0
for t in $targets; do
  mkdir -p "$out/corpus/$t" "$out/crashes/$t"
  for d in tests/fuzz/corpus/$t tests/fuzz/regress/$t; do
    [ -d "$d" ] && cp -n "$d"/* "$out/corpus/$t/" 2>/dev/null || true
  done
  echo "fuzz.sh: fuzzing $t for ${secs}s (corpus $out/corpus/$t, crashes $out/crashes/$t)"
  log=$out/fuzz_$t.log
  stamp=$out/.start_$t   # crashes count from this run only (older ones stay for reproducing)
  touch "$stamp"
  rc=0
  case $t in cache|ckpt) per_input_leaks=0 ;; *) per_input_leaks=1 ;; esac
  "$out/fuzz_$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -detect_leaks=$per_input_leaks -artifact_prefix="$out/crashes/$t/" -print_final_stats=1 \
    "$out/corpus/$t" >"$log" 2>&1 || rc=$?
  execs=$(awk '/number_of_executed_units:/ {v=$2} END {print v}' "$log")
  eps=$(awk '/average_exec_per_sec:/ {v=$2} END {print v}' "$log")
  # The leak pass: every corpus input once, LeakSanitizer at exit.
  leaks=0
  if ! "$out/fuzz_$t" -runs=0 -detect_leaks=0 -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$out/crashes/$t/" \
      "$out/corpus/$t" >"$out/fuzz_$t.leaks.log" 2>&1; then
    leaks=$(grep -c 'ERROR: LeakSanitizer' "$out/fuzz_$t.leaks.log" || true)
    [ "$leaks" = 0 ] && leaks=fail
    status=1
    { grep -E 'ERROR|SUMMARY' "$out/fuzz_$t.leaks.log" || true; } | head -3 | sed 's/^/    /'
  fi
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ncrash=$(find "$out/crashes/$t" -type f -newer "$stamp" | wc -l)
  printf '%-8s %8s %12s %10s %8s %8s %8s %6s\n' "$t" "$secs" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "$ncrash" "$leaks" >> "$summary"
  if [ "$rc" != 0 ] || [ "$ncrash" != 0 ]; then
    status=1
    # || true: with no match grep fails, and pipefail would end the whole run here
    { grep -E 'ERROR|SUMMARY|Test unit written' "$log" || true; } | head -5 | sed 's/^/    /'
  fi
done
cat "$summary"
exit $status
