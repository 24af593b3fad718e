#!/usr/bin/env bash
# Prompt-bank figures (by hand, not in CI; needs ../shared/data): prints the Markdown section
# "Prompt bank: reuse across stacks" of docs/RESULTS.md.
# Usage: bench/bank.sh [--steps N] [--threads T] [--backbone FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 cmake --build build -j1 --target bench_bank
exec build/bench/bench_bank "$@"
