#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, only those missing.
# Uses sudo when not root. Prints which libraries pkg-config then finds.
set -euo pipefail
pkgs=(gcc make pkg-config libopenblas-openmp-dev libhdf5-dev libturbojpeg0-dev
      libinih-dev libcmocka-dev libzip-dev libcairo2-dev libfontconfig-dev fonts-dejavu-core
      libopenmpi-dev openmpi-bin)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
export PKG_CONFIG_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
found=""
for lib in openblas hdf5 libturbojpeg inih cmocka libzip cairo fontconfig; do
  if pkg-config --exists "$lib"; then found="$found $lib-$(pkg-config --modversion $lib)";
  else echo "deps: pkg-config cannot find $lib" >&2; exit 1; fi
done
if command -v mpicc >/dev/null; then found="$found mpi"; fi
echo "deps: found$found"
