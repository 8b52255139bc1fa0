#!/bin/bash
# Speed of the C framework as RATIOS against PyTorch on the same machine, in
# the same run (we never quote wall-clock times as claims: they depend on the
# machine and its load). Runs, one after the other:
#   bench_conv        / bench/bench_conv_torch.py   IR-50 trunk convs, batch B
#   bench_model       / bench/bench_model_torch.py  large POSTER, batch B:
#                       forward (eval) and forward+backward (train, official loss)
#   bench_loader                                   input pipeline images/s
# and prints one table: ours/torch time (< 1 = we are faster) and images/s
# ratio (> 1 = we are faster), then the loader's images/s against the model's
# training images/s (the loader must not be the bottleneck).
#
# Usage: tools/bench_vs_torch.sh [BENCH_BIN_DIR]   (default build/bench)
# Environment: BENCH_BATCH (16), BENCH_ITERS (3 timed runs, median),
#   BENCH_THREADS (2: both sides get the same thread count),
#   OMP_WAIT_POLICY (passive: other jobs share the cores; applies to both sides),
#   BENCH_OUT (folder for the raw logs, default build/bench_vs_torch),
#   SKIP_CONV=1 / SKIP_LOADER=1 to skip parts.
set -u
BIN=${1:-build/bench}
BATCH=${BENCH_BATCH:-16}
ITERS=${BENCH_ITERS:-3}
THREADS=${BENCH_THREADS:-2}
OUT=${BENCH_OUT:-build/bench_vs_torch}
PY=/usr/bin/python3
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMP_NUM_THREADS=$THREADS
mkdir -p "$OUT"
for b in bench_conv bench_model bench_loader; do
    if [ ! -x "$BIN/$b" ]; then
        echo "bench_vs_torch: $BIN/$b missing: build it first (make all, or make bench-torch)" >&2
        exit 1
    fi
done
if ! $PY -c "import torch" 2>/dev/null; then
    echo "bench_vs_torch: $PY cannot import torch (Debian python3-torch is expected)" >&2
    exit 1
fi

echo "bench_vs_torch: $(nproc) cores, $THREADS threads each side, batch $BATCH, $ITERS timed runs," \
     "OMP_WAIT_POLICY=$OMP_WAIT_POLICY, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
run() {   # name, command...: runs it, keeps the log, fails loudly
    local name=$1
    shift
    echo "-- $name: $*"
    if ! "$@" >"$OUT/$name.log" 2>&1; then
        echo "bench_vs_torch: $name failed, log: $OUT/$name.log" >&2
        tail -5 "$OUT/$name.log" >&2
        exit 1
    fi
}

if [ "${SKIP_CONV:-0}" != 1 ]; then
    run conv_c env OMP_NUM_THREADS=$THREADS "$BIN/bench_conv" "$ITERS" "$BATCH"
    run conv_torch $PY bench/bench_conv_torch.py "$ITERS" "$BATCH"
fi
# The torch model script takes drop path 0; ours uses the training drop path
# (0.1): a per-sample scale, negligible time either way.
# Peak resident memory of both model processes, measured the same way.
TIMEV=()
[ -x /usr/bin/time ] && TIMEV=(/usr/bin/time -f "MAXRSS_KB %M")
run model_c "${TIMEV[@]}" env BENCH_MODELS=large BENCH_BATCH=$BATCH BENCH_ITERS=$ITERS BENCH_THREADS=$THREADS \
    "$BIN/bench_model"
run model_torch "${TIMEV[@]}" $PY bench/bench_model_torch.py "$ITERS" "$BATCH" "$THREADS"
if [ "${SKIP_LOADER:-0}" != 1 ]; then
    run loader_c "$BIN/bench_loader"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $OUT/"
echo

# ---- the table -------------------------------------------------------------
field() {   # file, awk program printing one number
    awk "$2" "$1" | head -1
}
row() {   # label, ours seconds, torch seconds, images per batch (0: no images/s)
    awk -v l="$1" -v a="$2" -v b="$3" -v n="$4" 'BEGIN {
        if (a == "" || b == "" || a + 0 <= 0 || b + 0 <= 0) { printf "%-34s   (missing)\n", l; exit }
        if (n > 0) printf "%-34s %9.3f %9.3f %9.3f %9.2f %9.2f %9.3f\n", l, a, b, a / b, n / a, n / b, b / a;
        else       printf "%-34s %9.3f %9.3f %9.3f %9s %9s %9s\n", l, a, b, a / b, "-", "-", "-" }'
}
printf "%-34s %9s %9s %9s %9s %9s %9s\n" "measurement (batch $BATCH)" "ours s" "torch s" \
    "time o/t" "ours im/s" "torch im/s" "im/s o/t"
if [ "${SKIP_CONV:-0}" != 1 ]; then
    tf=$(field "$OUT/conv_torch.log" '/IR-50 stages 1-3 convs/ { gsub(",", ""); for (i = 1; i <= NF; i++) if ($i == "forward") print $(i+1) }')
    tb=$(field "$OUT/conv_torch.log" '/IR-50 stages 1-3 convs/ { gsub(",", ""); for (i = 1; i <= NF; i++) if ($i == "backward") print $(i+1) }')
    for mode in 1 2; do
        cf=$(field "$OUT/conv_c.log" "/IR-50 stages 1-3 convs.*mode $mode:/ { gsub(\",\", \"\"); for (i = 1; i <= NF; i++) if (\$i == \"forward\") print \$(i+1) }")
        cb=$(field "$OUT/conv_c.log" "/IR-50 stages 1-3 convs.*mode $mode:/ { gsub(\",\", \"\"); for (i = 1; i <= NF; i++) if (\$i == \"backward\") print \$(i+1) }")
        row "IR-50 convs forward (mode $mode)" "$cf" "$tf" 0
        row "IR-50 convs backward (mode $mode)" "$cb" "$tb" 0
    done
fi
mf=$(field "$OUT/model_c.log" '$1 == "RESULT" && $2 == "large_forward" { print $3 }')
mb=$(field "$OUT/model_c.log" '$1 == "RESULT" && $2 == "large_fwd_bwd" { print $3 }')
pf=$(field "$OUT/model_torch.log" '/^forward / { print $3 }')
pb=$(field "$OUT/model_torch.log" '/^forward\+backward / { print $3 }')
row "POSTER large forward (eval)" "$mf" "$pf" "$BATCH"
row "POSTER large forward+backward" "$mb" "$pb" "$BATCH"
rss=$(field "$OUT/model_c.log" '$1 == "RESULT" && $2 == "large_peak_rss_mb" { print $3 }')
mc=$(field "$OUT/model_c.log" '$1 == "MAXRSS_KB" { printf "%.0f", $2 / 1024 }')
mt=$(field "$OUT/model_torch.log" '$1 == "MAXRSS_KB" { printf "%.0f", $2 / 1024 }')
if [ -n "$mc" ] && [ -n "$mt" ]; then
    awk -v a="$mc" -v b="$mt" 'BEGIN { printf "%-34s %9d %9d %9.3f   (MB, peak RSS of the whole process, /usr/bin/time)\n", "peak memory, model processes", a, b, a / b }'
else
    echo "peak resident memory of bench_model (large, batch $BATCH): ${rss:-?} MB (no /usr/bin/time for torch's)"
fi
echo "(time o/t < 1 and im/s o/t > 1 mean ours is faster)"

if [ "${SKIP_LOADER:-0}" != 1 ]; then
    echo
    echo "input pipeline (bench_loader, 2 workers) against the model's training images/s:"
    train_ips=$(awk -v b="$mb" -v n="$BATCH" 'BEGIN { if (b + 0 > 0) printf "%.3f", n / b }')
    sam_ips=$(awk -v b="$mb" -v n="$BATCH" 'BEGIN { if (b + 0 > 0) printf "%.3f", n / (2 * b) }')
    grep "JPEG ->" "$OUT/loader_c.log" | while read -r line; do
        ips=$(echo "$line" | awk '{ print $(NF-1) }')
        awk -v l="$line" -v i="$ips" -v t="$train_ips" 'BEGIN {
            printf "  %-40s loader/model training = %8.1fx %s\n", l, i / t, (i > t ? "" : "  <-- BOTTLENECK") }'
    done
    echo "  model training (forward+backward, no SAM): $train_ips images/s; with SAM: $sam_ips images/s"
fi
