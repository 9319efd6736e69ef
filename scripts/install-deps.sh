#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test dynascope (run as root).
# Only missing packages are installed. The CUDA toolkit is not a Debian package: when nvcc is
# found (PATH or /usr/local/cuda/bin) the CUDA backend is built too, otherwise host only.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-openmp-dev liblapacke-dev librandom123-dev nlohmann-json3-dev libcli11-dev
  libspdlog-dev libfmt-dev libdlpack-dev zlib1g-dev libthrust-dev libpng-dev
  libgtest-dev libgmock-dev libbenchmark-dev libeigen3-dev
  clang libclang-rt-14-dev
  dataset-fashion-mnist python3-sklearn python3-numpy
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
