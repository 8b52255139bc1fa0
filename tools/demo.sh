#!/usr/bin/env bash
# `make demo`: synthesize a small face-expression dataset, train a small POSTER
# on it with the official recipe (configs/demo.ini), evaluate it, and leave the
# confusion matrix and training curves in demo_out/.
set -euo pipefail
# Extra arguments go to `poster train` (e.g. --set train.epochs=2).
POSTER=${1:?usage: tools/demo.sh PATH/TO/poster [--set k=v ...]}
shift
OUT=${DEMO_OUT:-demo_out}
# The loader's decoding thread shares the cores with OpenMP: sleeping (not
# spinning) OpenMP waits leave it room. A user's own setting wins.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$OUT"
# 100 faces per class: 80 train + 20 test per class (560 / 140). Generating them
# takes about a second; the data set is regenerated when this recipe changes
# (the stamp names the synth version of data/synth.c too).
PER_CLASS=100
STAMP="per_class=$PER_CLASS seed=1 synth=2"
t0=$(date +%s)
echo "== 1/3 synthetic faces (7 expressions, RAF-DB layout) -> $OUT/synth"
if [ ! -f "$OUT/synth/EmoLabel/list_patition_label.txt" ] ||
   [ "$(cat "$OUT/synth/demo_stamp.txt" 2>/dev/null)" != "$STAMP" ]; then
  rm -rf "$OUT/synth"
  "$POSTER" data synth --output "$OUT/synth" --per-class $PER_CLASS --seed 1
  echo "$STAMP" > "$OUT/synth/demo_stamp.txt"
fi
echo "== 2/3 training configs/demo.ini (small POSTER, SAM + Adam, 2*LSCE+CE) -> $OUT/run"
rm -rf "$OUT/run"
"$POSTER" train --config configs/demo.ini --set data.root="$OUT/synth" --out "$OUT/run" "$@"
echo "   (training took $(( $(date +%s) - t0 )) s)"
echo "== 3/3 evaluating the best checkpoint on the test split"
"$POSTER" eval --checkpoint "$OUT/run/best.h5" --split test --out "$OUT"
cp "$OUT/run/curves.png" "$OUT/curves.png"
# A glob, not `ls | head -1`: under pipefail, head closing the pipe early
# (SIGPIPE in ls) would end the script here.
tests=("$OUT"/synth/Image/aligned/test_*.jpg)
first=${tests[0]}
echo
echo "== predict on $first"
"$POSTER" predict --checkpoint "$OUT/run/best.h5" "$first"
echo
echo "Pictures:"
echo "  confusion matrix: $OUT/eval_test_confusion.png"
echo "  training curves:  $OUT/curves.png"
echo "  synthetic faces:  $OUT/synth/montage.png"
echo "Logs and checkpoints: $OUT/run/ (log.csv, log.jsonl, last.h5, best.h5)"
echo "Demo finished in $(( $(date +%s) - t0 )) s (after the build)."
