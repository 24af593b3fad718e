#!/usr/bin/env bash
# Test-time augmentation and uncertainty-map figures (by hand, not in CI). Needs ../shared/data;
# prints the Markdown section of docs/RESULTS.md "Test-time augmentation and the uncertainty map".
# Usage: bench/tta.sh [--repeats N] [--threads T] [--cases fib25x4,cells3dx4] [--backbone FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 cmake --build build -j1 --target bench_tta
exec build/bench/bench_tta "$@"
