#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, ISO_FUZZ=ON with clang: the library with ASan+UBSan
# and coverage instrumentation) in build-fuzz/ and runs each one in turn.
#
#   scripts/fuzz.sh                       # every target for 60 s (the short run CI can afford)
#   scripts/fuzz.sh --seconds 1800        # the long runs of docs/fuzzing.md
#   scripts/fuzz.sh --runs 1000000 pickle safetensors
#
# Each target starts from its committed seeds (fuzz/seeds/<target>) and past findings
# (fuzz/regressions/<target>, which must all pass), and grows its corpus in
# build-fuzz/corpus/<target>. A crash leaves the input in build-fuzz/logs/ and makes the
# script exit 1; the table at the end has executions, seconds, exec/s and crashes per target.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=60
runs=-1
targets=()
while (($#)); do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; seconds=0; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(tiff_description tiff_file pickle safetensors prompt_file zarr_metadata)

bash scripts/setup.sh
# clang-14 with libFuzzer and the sanitizer runtimes (Debian 12).
need=()
for p in clang-14 libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "fuzz: installing ${need[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

B=build-fuzz
if [[ ! -f $B/build.ninja ]]; then
  # -O1 (and NDEBUG off): the usual fuzzing trade-off between speed and sanitizer precision.
  CC=clang-14 CXX=clang++-14 cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O1 \
    -DISO_FUZZ=ON -DISO_BUILD_TESTS=OFF -DISO_BUILD_BENCH=OFF
fi
cmake --build $B -j "$(nproc)" --target fuzzers
mkdir -p $B/logs

# A small quarantine keeps the resident memory of long runs well under libFuzzer's limit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32}
status=0
table=()
for t in "${targets[@]}"; do
  exe=$B/fuzz/fuzz_$t
  [[ -x $exe ]] || { echo "fuzz: no target $t" >&2; exit 2; }
  if [[ -d fuzz/regressions/$t ]]; then
    "$exe" -runs=0 fuzz/regressions/$t/* >/dev/null 2>&1 || { echo "fuzz: $t fails on fuzz/regressions/$t" >&2; status=1; }
  fi
  mkdir -p $B/corpus/$t
  log=$B/logs/$t.log
  limits=(-max_total_time="$seconds")
  ((runs > 0)) && limits=(-runs="$runs")
  echo "fuzz: $t (${limits[*]}), log $log"
  rc=0
  nice -n 10 "$exe" "${limits[@]}" -print_final_stats=1 -artifact_prefix=$B/logs/$t- \
    $B/corpus/$t fuzz/seeds/$t >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  secs=$(( ${rate:-0} > 0 ? ${execs:-0} / rate : 0 ))
  crashes=0
  if ((rc != 0)); then
    crashes=1
    status=1
    grep -m1 -E "ERROR|invariant violated|uncaught|deadly signal" "$log" >&2 || tail -5 "$log" >&2
  fi
  table+=("$(printf '%-18s %12s %8s %8s %8s' "$t" "${execs:-?}" "~$secs" "${rate:-?}" "$crashes")")
done
printf '%-18s %12s %8s %8s %8s\n' target executions seconds exec/s crashes
printf '%s\n' "${table[@]}"
exit $status
