#!/usr/bin/env bash
# Runs one test tier, keeps its full log, and records its pass/fail/skip counts for the summary that
# `make test` prints at the end. Usage: hack/tier.sh NAME go|ginkgo -- COMMAND...
set -uo pipefail
name=$1 kind=$2; shift 3
out=${OUT:-_output}
mkdir -p "$out"
log="$out/$name.log"
start=$(date +%s)
"$@" 2>&1 | tee "$log" | { if [ "$kind" = go ]; then grep -E --line-buffered '^(ok|FAIL|---|panic|\s+--- FAIL)|^\s+\S+_test\.go:[0-9]+:' || true; else cat; fi; }
rc=${PIPESTATUS[0]}
secs=$(( $(date +%s) - start ))
if [ "$kind" = go ]; then
  pass=$(grep -cE '^\s*--- PASS' "$log" || true)
  fail=$(grep -cE '^\s*--- FAIL' "$log" || true)
  skip=$(grep -cE '^\s*--- SKIP' "$log" || true)
  # A package that fails to build or panics has no --- FAIL line; still count it.
  if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
else
  # Ginkgo (csi-sanity): "Ran 62 of 103 Specs ... SUCCESS! -- 62 Passed | 0 Failed | 0 Pending | 41 Skipped"
  line=$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$log" | tail -1)
  pass=$(sed -E 's/.* ([0-9]+) Passed.*/\1/' <<<"$line"); pass=${pass:-0}
  fail=$(sed -E 's/.* ([0-9]+) Failed.*/\1/' <<<"$line"); fail=${fail:-0}
  skip=$(sed -E 's/.* ([0-9]+) Skipped.*/\1/' <<<"$line"); skip=${skip:-0}
  if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
fi
printf '%-14s %5s passed, %3s failed, %3s skipped  (%ss, exit %s, log %s)\n' "$name:" "$pass" "$fail" "$skip" "$secs" "$rc" "$log" >>"$out/summary.txt"
if [ "$kind" = ginkgo ]; then
  # csi-sanity's own words, pending specs included (specs its authors disabled upstream with XIt).
  ran=$(grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$log" | tail -1)
  printf '%-14s %s; %s\n' "" "${ran:-no Ran line}" "${line:-no summary line}" >>"$out/summary.txt"
fi
exit "$rc"
