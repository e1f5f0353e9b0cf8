#!/usr/bin/env bash
# make deps: install the Debian/Ubuntu packages lsst builds and tests with.
# Idempotent: does nothing (no apt call) when every package is present.
set -euo pipefail
PKGS=(build-essential pkg-config git
      openmpi-bin libopenmpi-dev libpmix-dev
      libhdf5-dev hdf5-tools libyaml-dev libopenblas-openmp-dev libarchive-dev libssl-dev
      bats python3 python3-h5py python3-numpy zip curl
      slurmctld slurmd slurm-client munge
      gnuplot-nox)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "make deps: all ${#PKGS[@]} packages present"; exit 0; fi
echo "make deps: installing ${missing[*]}"
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
# Keep package scripts from starting daemons (no systemd in containers/CI): policy-rc.d exits 101.
added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d; added=1; fi
trap '[ $added = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
