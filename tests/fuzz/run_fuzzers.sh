#!/usr/bin/env bash
# Builds the libFuzzer targets of the file readers with clang and runs each for a bounded time.
# Exits non-zero on the first finding (crash, sanitizer report, leak, timeout, oversized
# allocation or unexpected exception); the reproducer is left in $BUILD/fuzz-artifacts/<reader>/.
#
# Usage: tests/fuzz/run_fuzzers.sh [SECONDS_PER_FUZZER]
# Environment: FUZZ_SECONDS (default 30), FUZZ_BUILD_DIR (default <repo>/build-fuzz),
#              FUZZ_JOBS (build parallelism, default 2), FUZZ_ARGS (extra libFuzzer flags),
#              CXX_CLANG / C_CLANG (compilers, default clang++ / clang).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-${FUZZ_SECONDS:-30}}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-2}
readers=(npy safetensors idx)

cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_C_COMPILER="${C_CLANG:-clang}" -DCMAKE_CXX_COMPILER="${CXX_CLANG:-clang++}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDYNASCOPE_FUZZ=ON -DDYNASCOPE_CUDA=OFF -DDYNASCOPE_BUILD_TESTS=OFF \
  -DDYNASCOPE_BUILD_BENCH=OFF -DDYNASCOPE_BUILD_CLI=OFF
cmake --build "$build" -j "$jobs" --target "${readers[@]/#/fuzz_}"

status=0
for reader in "${readers[@]}"; do
  corpus="$build/fuzz-corpus/$reader"      # grows across runs; the seeds stay untouched
  artifacts="$build/fuzz-artifacts/$reader"
  mkdir -p "$corpus" "$artifacts"
  echo "=== fuzz_$reader: ${seconds}s"
  # A 4 KiB input never justifies a 64 MiB allocation (the largest legitimate one is a gzip
  # payload, at most 1032x the compressed size), so libFuzzer's malloc limit catches readers
  # that trust a size field.
  # shellcheck disable=SC2086
  if ! "$build/tests/fuzz/fuzz_$reader" "$corpus" "$root/tests/fuzz/corpus/$reader" \
      -dict="$root/tests/fuzz/dict/$reader.dict" -artifact_prefix="$artifacts/" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=64 \
      -max_len=8192 -print_final_stats=1 ${FUZZ_ARGS:-}; then
    echo "=== fuzz_$reader: FINDING (reproducer in $artifacts/)" >&2
    status=1
  fi
done
exit $status
