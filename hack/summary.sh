#!/usr/bin/env bash
# Prints every tier's counts and the closing "N passed, N failed" line over all tiers.
out=${OUT:-_output}
[ -f "$out/summary.txt" ] || { echo "no tiers ran"; exit 1; }
echo "==== test tiers ===="
cat "$out/summary.txt"
awk '/ passed, .* failed, .* skipped/ {p+=$2; f+=$4; s+=$6} END {printf "total: %d passed, %d failed, %d skipped\n", p, f, s}' "$out/summary.txt"
