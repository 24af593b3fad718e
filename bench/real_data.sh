#!/usr/bin/env bash
# Real-data results table (by hand, not in CI). Needs ../shared/data; writes docs/RESULTS.md.
# Usage: bench/real_data.sh [--tune-seconds S] [--steps N] [--threads T] [--cases fib25x4,fib25x8,cells3dx4]
#        [--backbone FILE] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build -j2 --target bench_real_data
exec build/bench/bench_real_data "$@"
