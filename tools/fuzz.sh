#!/usr/bin/env bash
# Builds tests/fuzz_pth.c as a libFuzzer target (clang, ASan+UBSan) and runs it
# for FUZZ_SECONDS (default 180) with the PyTorch fixtures as seed corpus.
# Crashes land in build-fuzz/crashes/; the corpus grows in build-fuzz/corpus/.
#   FUZZ_SECONDS=600 tools/fuzz.sh         # or: make fuzz
#   tools/fuzz.sh build-fuzz/crashes/crash-...   # reproduce one input
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-180}
out=build-fuzz
CC=${FUZZ_CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz.sh: $CC not found (apt-get install clang)" >&2; exit 2; }
mkdir -p "$out/corpus" "$out/crashes"
pkgs="hdf5 libzip"
flags="-g -O1 -fno-omit-frame-pointer -std=gnu11 -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(pkg-config --cflags $pkgs)"
srcs="tests/fuzz_pth.c train/pth_read.c train/unpickle.c autograd/h5io.c autograd/tensor.c autograd/params.c"
bin=$out/fuzz_pth
if [ ! -x "$bin" ] || [ -n "$(find $srcs train/*.h autograd/*.h -newer "$bin" 2>/dev/null)" ]; then
  echo "fuzz.sh: building $bin"
  # shellcheck disable=SC2086
  $CC $flags -o "$bin" $srcs $(pkg-config --libs $pkgs) -lm
fi
if [ $# -gt 0 ]; then exec "$bin" "$@"; fi
cp -n tests/fixtures/pth/*.pt* "$out/corpus/" 2>/dev/null || true
echo "fuzz.sh: fuzzing for ${secs}s (corpus $out/corpus, crashes $out/crashes)"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
  "$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix="$out/crashes/" -print_final_stats=1 "$out/corpus"
