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
  python3-dev python3-venv python3-scipy python3-torch python3-matplotlib chromium
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

# The Python package: a virtual environment at .venv over Debian's python3 (its numpy, scipy and
# torch stay visible) with what Debian does not package: nanobind, pytest, jax (PyPI). CMake builds
# the extension for this interpreter and runs the pytest suite with it (cmake/DynascopePython.cmake).
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$repo/.venv/bin/python" ]; then
  echo "creating $repo/.venv" >&2
  /usr/bin/python3 -m venv --system-site-packages "$repo/.venv"
fi
"$repo/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$repo/scripts/python-requirements.txt"
