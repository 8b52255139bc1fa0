#!/bin/bash
# Speed and memory of the C framework as RATIOS against PyTorch on the same
# machine, in the same run (we never quote wall-clock times as claims: they
# depend on the machine and its load). Runs, one after the other:
#   bench_conv        / bench/bench_conv_torch.py   IR-50 trunk convs (first batch size)
#   for each batch size B in BENCH_BATCH:
#     bench_model     / bench/bench_model_torch.py  large POSTER, batch B:
#                       forward (eval), forward+backward (train, drop path on,
#                       official loss) and the official SAM step (two passes,
#                       SAM rho 0.05 around Adam lr 4e-5), each process under
#                       /usr/bin/time for its peak resident memory
#   bench_loader                                   input pipeline images/s
# and prints one table per batch size: ours/torch time (< 1 = we are faster),
# images/s ratio (> 1 = we are faster) against the targets of issue 10, peak
# resident memory of both processes and bytes per image; our time split of the
# SAM step and its GFLOP/s against a large cblas_sgemm; then the loader's
# images/s against the model's training images/s.
#
# Usage: tools/bench_vs_torch.sh [BENCH_BIN_DIR]   (default build/bench)
# Environment: BENCH_BATCH ("16 64": a list), BENCH_ITERS (3 timed runs, median),
#   BENCH_THREADS (2: both sides get the same thread count),
#   OMP_WAIT_POLICY (passive: other jobs share the cores; applies to both sides;
#     "default" leaves it unset),
#   BENCH_OUT (folder for the raw logs, default build/bench_vs_torch),
#   BENCH_SKIP (comma list of forward,fwd_bwd,sam_step to leave out, both sides),
#   SKIP_CONV=1 / SKIP_LOADER=1 to skip parts,
#   BENCH_ROUNDS (1): ours and PyTorch run alternately this many times per batch
#     size; the table takes each side's median over the rounds and lists each
#     round's ratios (a machine whose speed drifts then moves both sides alike).
set -u
BIN=${1:-build/bench}
BATCHES=${BENCH_BATCH:-16 64}
BATCHES=${BATCHES//,/ }
ITERS=${BENCH_ITERS:-3}
ROUNDS=${BENCH_ROUNDS:-1}
case $ROUNDS in ''|*[!0-9]*|0) echo "bench_vs_torch: BENCH_ROUNDS: '$ROUNDS' is not a positive count" >&2; exit 1;; esac
THREADS=${BENCH_THREADS:-2}
SKIP=${BENCH_SKIP:-}
OUT=${BENCH_OUT:-build/bench_vs_torch}
PY=/usr/bin/python3
# OMP_WAIT_POLICY=default: left unset, libgomp's own default (threads spin a
# while, then sleep), what `poster train` and a PyTorch script get unless told.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ "$OMP_WAIT_POLICY" = default ] && unset OMP_WAIT_POLICY
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
for B in $BATCHES; do
    case $B in ''|*[!0-9]*) echo "bench_vs_torch: BENCH_BATCH: '$B' is not a batch size" >&2; exit 1;; esac
done
FIRST=${BATCHES%% *}

echo "bench_vs_torch: $(nproc) cores, $THREADS threads each side, batch $BATCHES, $ITERS timed runs," \
     "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
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
    run conv_c env OMP_NUM_THREADS=$THREADS "$BIN/bench_conv" "$ITERS" "$FIRST"
    run conv_torch $PY bench/bench_conv_torch.py "$ITERS" "$FIRST"
fi
# Peak resident memory of both model processes, measured the same way.
TIMEV=()
[ -x /usr/bin/time ] && TIMEV=(/usr/bin/time -f "MAXRSS_KB %M")
for B in $BATCHES; do
    for ((r = 1; r <= ROUNDS; r++)); do
        run model_c_b$B.r$r "${TIMEV[@]}" env BENCH_MODELS=large BENCH_BATCH=$B BENCH_ITERS=$ITERS \
            BENCH_THREADS=$THREADS BENCH_SKIP=$SKIP "$BIN/bench_model"
        run model_torch_b$B.r$r "${TIMEV[@]}" $PY bench/bench_model_torch.py "$ITERS" "$B" "$THREADS" "$SKIP"
    done
done
if [ "${SKIP_LOADER:-0}" != 1 ]; then
    run loader_c "$BIN/bench_loader"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $OUT/"
echo

# ---- the tables ------------------------------------------------------------
field() {   # file, awk program printing one number
    awk "$2" "$1" | head -1
}
row() {   # label, ours seconds, torch seconds, images per batch (0: no images/s), target im/s ratio
    awk -v l="$1" -v a="$2" -v b="$3" -v n="$4" -v t="${5:-}" 'BEGIN {
        if (a == "" || b == "" || a + 0 <= 0 || b + 0 <= 0) { printf "%-34s   (missing)\n", l; exit }
        if (n > 0) {
            printf "%-34s %9.3f %9.3f %9.3f %9.2f %9.2f %9.3f", l, a, b, a / b, n / a, n / b, b / a
            if (t != "") printf "   target >= %s: %s", t, (b / a >= t ? "met" : "NOT MET")
            printf "\n"
        } else printf "%-34s %9.3f %9.3f %9.3f %9s %9s %9s\n", l, a, b, a / b, "-", "-", "-" }'
}
result() {   # log, RESULT name: seconds
    field "$1" "\$1 == \"RESULT\" && \$2 == \"$2\" { print \$3 }"
}
result_of() {   # RESULT name, log (argument order for over_rounds)
    result "$2" "$1"
}
maxrss_mb() {   # log: MB from /usr/bin/time, else the process's own getrusage line
    local v
    v=$(field "$1" '$1 == "MAXRSS_KB" { printf "%.0f", $2 / 1024 }')
    [ -z "$v" ] && v=$(field "$1" '$1 == "RESULT" && $2 ~ /peak_rss_mb$/ { print $3 }')
    echo "$v"
}
median() {   # numbers on stdin (one per line): their median, nothing if none
    sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
over_rounds() {   # side (c|torch), batch, command taking a log as $1: median over the rounds
    local r
    for ((r = 1; r <= ROUNDS; r++)); do "${@:3}" "$OUT/model_$1_b$2.r$r.log"; done | median
}
t_forward() { field "$1" '/^forward  / { print $3 }'; }
t_fwd_bwd() { field "$1" '/^forward\+backward / { print $3 }'; }
t_sam() { field "$1" '/^SAM step / { print $4 }'; }
hdr() {
    printf "%-34s %9s %9s %9s %9s %9s %9s\n" "$1" "ours s" "torch s" "time o/t" "ours im/s" \
        "torch im/s" "im/s o/t"
}
if [ "${SKIP_CONV:-0}" != 1 ]; then
    hdr "IR-50 trunk convs (batch $FIRST)"
    tf=$(field "$OUT/conv_torch.log" '/IR-50 stages 1-3 convs/ { gsub(",", ""); for (i = 1; i <= NF; i++) if ($i == "forward") print $(i+1) }')
    tb=$(field "$OUT/conv_torch.log" '/IR-50 stages 1-3 convs/ { gsub(",", ""); for (i = 1; i <= NF; i++) if ($i == "backward") print $(i+1) }')
    for mode in 1 2; do
        cf=$(field "$OUT/conv_c.log" "/IR-50 stages 1-3 convs.*mode $mode:/ { gsub(\",\", \"\"); for (i = 1; i <= NF; i++) if (\$i == \"forward\") print \$(i+1) }")
        cb=$(field "$OUT/conv_c.log" "/IR-50 stages 1-3 convs.*mode $mode:/ { gsub(\",\", \"\"); for (i = 1; i <= NF; i++) if (\$i == \"backward\") print \$(i+1) }")
        row "IR-50 convs forward (mode $mode)" "$cf" "$tf" 0
        row "IR-50 convs backward (mode $mode)" "$cb" "$tb" 0
    done
    echo
fi
declare -A RSS_C RSS_T
for B in $BATCHES; do
    C=$OUT/model_c_b$B.r1.log
    hdr "POSTER large, batch $B$( [ "$ROUNDS" -gt 1 ] && echo ", median of $ROUNDS rounds")"
    row "forward (eval)" "$(over_rounds c $B result_of large_forward)" "$(over_rounds torch $B t_forward)" "$B" 2
    row "forward+backward (train)" "$(over_rounds c $B result_of large_fwd_bwd)" "$(over_rounds torch $B t_fwd_bwd)" "$B"
    row "SAM step (2 passes, SAM, Adam)" "$(over_rounds c $B result_of large_sam_step)" "$(over_rounds torch $B t_sam)" "$B" 2.5
    if [ "$ROUNDS" -gt 1 ]; then
        for ((r = 1; r <= ROUNDS; r++)); do
            Cr=$OUT/model_c_b$B.r$r.log
            Tr=$OUT/model_torch_b$B.r$r.log
            awk -v r="$r" -v a="$(result "$Cr" large_forward)" -v b="$(t_forward "$Tr")" \
                -v c="$(result "$Cr" large_fwd_bwd)" -v d="$(t_fwd_bwd "$Tr")" \
                -v e="$(result "$Cr" large_sam_step)" -v f="$(t_sam "$Tr")" 'BEGIN {
                printf "  round %d: im/s o/t forward %s, forward+backward %s, SAM step %s\n", r,
                    (a > 0 && b > 0 ? sprintf("%.3f", b / a) : "-"), (c > 0 && d > 0 ? sprintf("%.3f", d / c) : "-"),
                    (e > 0 && f > 0 ? sprintf("%.3f", f / e) : "-") }'
        done
    fi
    mc=$(over_rounds c $B maxrss_mb)
    mt=$(over_rounds torch $B maxrss_mb)
    RSS_C[$B]=$mc
    RSS_T[$B]=$mt
    if [ -n "$mc" ] && [ -n "$mt" ]; then
        awk -v a="$mc" -v b="$mt" -v n="$B" 'BEGIN {
            printf "%-34s %9d %9d %9.3f   (MB, whole process)   target <= 1: %s\n", "peak resident memory", a, b, a / b, (a <= b ? "met" : "NOT MET")
            printf "%-34s %9.1f %9.1f %9.3f   (MB per image)\n", "peak memory / batch", a / n, b / n, a / b }'
    fi
    sed -n '/^time split/,/^model FLOPs/p' "$C" | grep -v '^SPLIT'
    echo
done
set -- $BATCHES
if [ $# -ge 2 ]; then
    b0=$1
    b1=${!#}
    if [ -n "${RSS_C[$b0]}" ] && [ -n "${RSS_C[$b1]}" ] && [ -n "${RSS_T[$b0]}" ] && [ -n "${RSS_T[$b1]}" ]; then
        awk -v c0="${RSS_C[$b0]}" -v c1="${RSS_C[$b1]}" -v t0="${RSS_T[$b0]}" -v t1="${RSS_T[$b1]}" \
            -v b0="$b0" -v b1="$b1" 'BEGIN {
            c = (c1 - c0) / (b1 - b0); t = (t1 - t0) / (b1 - b0)
            printf "%-34s %9.1f %9.1f %9.3f   (MB per extra image, batch %d -> %d)\n", "activation memory per image", c, t, (t > 0 ? c / t : 0), b0, b1 }'
    fi
fi
echo "(time o/t < 1 and im/s o/t > 1 mean ours is faster; targets from issue 10)"

if [ "${SKIP_LOADER:-0}" != 1 ]; then
    echo
    mb=$(over_rounds c $FIRST result_of large_fwd_bwd)
    ms=$(over_rounds c $FIRST result_of large_sam_step)
    echo "input pipeline (bench_loader, 2 workers) against the model's training images/s (batch $FIRST):"
    train_ips=$(awk -v b="$mb" -v n="$FIRST" 'BEGIN { if (b + 0 > 0) printf "%.3f", n / b }')
    sam_ips=$(awk -v b="$ms" -v n="$FIRST" 'BEGIN { if (b + 0 > 0) printf "%.3f", n / b }')
    grep "JPEG ->" "$OUT/loader_c.log" | while read -r line; do
        ips=$(echo "$line" | awk '{ print $(NF-1) }')
        awk -v l="$line" -v i="$ips" -v t="$train_ips" 'BEGIN {
            if (t + 0 <= 0) exit
            printf "  %-40s loader/model training = %8.1fx %s\n", l, i / t, (i > t ? "" : "  <-- BOTTLENECK") }'
    done
    echo "  model training (forward+backward, no SAM): ${train_ips:-?} images/s; SAM step: ${sam_ips:-?} images/s"
fi
