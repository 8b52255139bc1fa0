#!/usr/bin/env bash
# Runs every test binary in DIR (cmocka), prints each one's failures and the
# total as the last line: "N passed, N failed". A binary that crashes or prints
# no cmocka summary counts as one failed test.
set -u
dir=${1:?usage: run_tests.sh BUILD/tests}
# Other processes (parallel builds, mpirun ranks) share the cores: spinning OpenMP
# threads would steal them, so waiting threads sleep unless the caller says otherwise.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# Freed activation buffers are filled with NaN and not reused within a step, so
# a read of a buffer freed too early shows up as a failed comparison.
export AG_POISON_FREED=${AG_POISON_FREED:-1}
passed=0; failed=0
log_dir=$(mktemp -d)
for t in "$dir"/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  start=$(date +%s)
  timeout "${TEST_TIMEOUT:-900}" "$t" >"$log_dir/$name.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log_dir/$name.log" | awk '{s+=$4} END {print s+0}')
  f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log_dir/$name.log" | awk '{s+=$4} END {print s+0}')
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  if [ "$p" = 0 ] && [ "$f" = 0 ]; then f=1; fi
  printf '%-28s %3d passed %3d failed  (%ds)\n' "$name" "$p" "$f" "$secs"
  grep -E '^SKIP:' "$log_dir/$name.log" | sed 's/^/    /'
  if [ "$f" != 0 ]; then
    grep -E '^\[  (FAILED|  ERROR )|^\[  ERROR|error|Error|failed|Assert|Sanitizer|runtime error' "$log_dir/$name.log" | head -40 | sed 's/^/    /'
    tail -5 "$log_dir/$name.log" | sed 's/^/    | /'
  fi
  if grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log_dir/$name.log" && [ "$f" = 0 ]; then
    echo "    sanitizer report in $name"; f=1
  fi
  passed=$((passed + p)); failed=$((failed + f))
done
rm -rf "$log_dir"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
