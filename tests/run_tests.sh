#!/usr/bin/env bash
# Runs every test binary in DIR (cmocka), prints each one's failures and, as
# the last line, the total: "N passed, N failed, N skipped" (what CI reads).
# A binary that crashes or prints no cmocka summary counts as one failed test;
# a test skipped with cmocka's skip() (tu_skip: with a "SKIP: why" line, listed
# here) counts as skipped, never as passed.
# Every binary gets its own empty scratch folder in TEST_TMPDIR (tests write
# nothing else); it is removed afterwards, except for a failed binary's, which
# is kept for inspection and named.
set -u
dir=${1:?usage: run_tests.sh BUILD/tests}
# Other processes (parallel builds, mpirun ranks) share the cores: spinning OpenMP
# threads would steal them, so waiting threads sleep unless the caller says otherwise.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# Time limits (a test's hang guards, each binary's TEST_TIMEOUT) are for an idle
# machine; TEST_TIME_SCALE stretches them. Unless given, it is the 1-minute load
# per core, rounded up, between 1 and 8, so a busy machine is not taken for a hang.
if [ -z "${TEST_TIME_SCALE:-}" ]; then
  TEST_TIME_SCALE=$(awk -v n="$(nproc 2>/dev/null || echo 1)" \
    '{s = int($1 / n + 0.999); if (s < 1) s = 1; if (s > 8) s = 8; print s}' /proc/loadavg 2>/dev/null || echo 1)
fi
export TEST_TIME_SCALE
[ "$TEST_TIME_SCALE" != 1 ] && echo "machine busy: time limits x$TEST_TIME_SCALE (TEST_TIME_SCALE)"
# A binary may take 15 minutes; with LONG=1 (make check-long, make asan LONG=1)
# 4 hours: the long tests are long by design (a 90% accuracy run, a 4-run sweep), and
# under the sanitizers 5-10x slower (the 90% run: ~85 minutes there). A limit of 900 s
# stopped it once with SIGTERM (it saved last.h5 and failed).
if [ "${LONG:-}" = 1 ]; then default_timeout=14400; else default_timeout=900; fi
timeout_s=$(awk -v t="${TEST_TIMEOUT:-$default_timeout}" -v k="$TEST_TIME_SCALE" 'BEGIN {print int(t * k)}')
passed=0; failed=0; skipped=0
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/poster_tests.XXXXXX")
# Freed activation buffers are filled with NaN and not reused within a step, so
# a read of a buffer freed too early shows up as a failed comparison.
export AG_POISON_FREED=${AG_POISON_FREED:-1}
for t in "$dir"/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  scratch="$log_dir/$name.tmp"
  mkdir -p "$scratch"
  start=$(date +%s)
  TEST_TMPDIR="$scratch" timeout "$timeout_s" "$t" >"$log_dir/$name.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log_dir/$name.log" | awk '{s+=$4} END {print s+0}')
  f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log_dir/$name.log" | awk '{s+=$4} END {print s+0}')
  s=$(grep -E '^\[  SKIPPED \] [0-9]+ test' "$log_dir/$name.log" | awk '{s+=$4} END {print s+0}')
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  if [ "$p" = 0 ] && [ "$f" = 0 ] && [ "$s" = 0 ]; then f=1; fi
  printf '%-28s %3d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" "$secs"
  grep -E '^SKIP:' "$log_dir/$name.log" | sed 's/^/    /'
  if [ "$f" != 0 ]; then
    grep -E '^\[  (FAILED|  ERROR )|^\[  ERROR|error|Error|failed|Assert|Sanitizer|runtime error' "$log_dir/$name.log" | head -40 | sed 's/^/    /'
    tail -5 "$log_dir/$name.log" | sed 's/^/    | /'
  fi
  if grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log_dir/$name.log" && [ "$f" = 0 ]; then
    echo "    sanitizer report in $name"; f=1
  fi
  if [ "$f" != 0 ]; then
    kept="${TMPDIR:-/tmp}/poster_failed_$name.$$"
    rm -rf "$kept"; mv "$scratch" "$kept" && echo "    scratch files kept in $kept"
  fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
rm -rf "$log_dir"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
