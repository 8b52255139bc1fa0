#!/usr/bin/env bash
# `make valgrind`: one short training (2 steps + evaluation + checkpoints + logs +
# pictures) and one evaluation of its checkpoint under valgrind memcheck, on a
# tiny POSTER and a few synthetic faces. Passes with 0 errors and 0 bytes
# definitely lost in both runs (full logs in build-valgrind/vg/*.valgrind.log).
# Built without -march=native (valgrind lacks some vector instructions) in
# build-valgrind/; OpenBLAS is held to its Haswell kernels for the same reason.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
B=build-valgrind
make --no-print-directory -s BUILD=$B OPT="-O1 -g" $B/poster
D=$B/vg
rm -rf "$D"; mkdir -p "$D"
export OMP_WAIT_POLICY=passive OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
$B/poster data synth --output "$D/synth" --per-class 3 --seed 3 >/dev/null 2>&1
cat > "$D/tiny.ini" <<INI
[model]
depth = 1
ir_units = 1,1,1
[data]
format = rafdb
root = $D/synth
image_size = 112
workers = 1
[train]
epochs = 1
batch_size = 2
micro_batch = 2
max_batches = 2
threads = 2
progress = off
init =
[optim]
sam = on
[eval]
split = test
batch_size = 7
INI
vg="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --track-origins=no --num-callers=30"
status=0
run() {   # name, poster arguments...
  local name=$1; shift
  echo "valgrind.sh: $name: poster $*"
  # shellcheck disable=SC2086
  if ! $vg --log-file="$D/$name.valgrind.log" $B/poster "$@" > "$D/$name.out" 2>&1; then
    echo "valgrind.sh: $name FAILED (see $D/$name.valgrind.log, $D/$name.out)"; status=1
  fi
  grep -E "ERROR SUMMARY|definitely lost" "$D/$name.valgrind.log" | sed "s/^==[0-9]*==/   /"
}
run train train --config "$D/tiny.ini" --out "$D/run"
run eval eval --checkpoint "$D/run/last.h5" --split test --out "$D/eval"
[ $status = 0 ] && echo "valgrind.sh: 0 errors, 0 bytes definitely lost in both runs"
exit $status
