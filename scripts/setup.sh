#!/usr/bin/env bash
# Installs isoprompt's build and run-time dependencies from Debian's packages.
# Idempotent: does nothing (and needs no network) when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-openmp
  libtiff-dev libpng-dev zlib1g-dev libpugixml-dev nlohmann-json3-dev
  libblosc-dev libzstd-dev libhdf5-dev
  libcli11-dev libfmt-dev
  # MPI (the streamed restore over the ranks of `mpirun`); the binary runs without it too.
  libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev libbenchmark-dev
  # Test-only: the real clients that judge the files isoprompt writes (ImageJ 1.x needs
  # an X display even in batch mode, hence Xvfb; tifffile is napari's TIFF reader;
  # zarr-python with numcodecs and h5py write and judge the OME-Zarr and HDF5 files;
  # headless Chromium opens the HTML QC report).
  imagej xvfb xauth python3-tifffile python3-zarr python3-numcodecs python3-h5py chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The image's default libblas.so.3 is the netlib reference BLAS, 8-40x slower than
# OpenBLAS for LibTorch's linear layers. Pin the OpenMP build of OpenBLAS.
pin() {
  local name=$1 target=$2
  local current
  current=$(update-alternatives --query "$name" 2>/dev/null | sed -n 's/^Value: //p')
  if [[ "$current" != "$target" && -e "$target" ]]; then
    echo "setup: pinning $name -> $target"
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    $SUDO update-alternatives --set "$name" "$target" >/dev/null
  fi
}
pin libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
pin liblapack.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3
