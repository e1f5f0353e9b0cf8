#!/usr/bin/env bash
# Builds lsst-run and the GPU test programs with an older CUDA toolkit than the one installed:
# Debian 12's non-free CUDA 11.8 (nvcc, headers, cuBLAS link stubs), for sm_70 (Volta: CUDA 13
# cannot target it) and sm_80. Compile and link only: nothing runs. This keeps the claim of
# kernels/cuda/README.md true, that the CUDA code builds with toolkits before 13 (CUDA 12.x for
# V100 users); 11.8 is older still, and the oldest with bf16 on sm_80.
#
# The toolkit is fetched into $BUILD/toolkit (default build-cuda118) by tests/gpu/apt_fetch.sh
# (apt-get download with a private apt folder): nothing is installed but g++-11 (nvcc 11.8
# takes gcc <= 11), which this script installs with apt-get when it runs as root and it is
# missing. NCCL is not part of the toolkit (nor packaged by Debian): its header and library come
# from the installed CUDA ($CUDA_HOME, default /usr/local/cuda). About 1 GB is downloaded once.
# Exit status: 0 built; non-zero: the fetch (1) or the build (make's status) failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build-cuda118}; case $build in /*) ;; *) build=$PWD/$build ;; esac
nccl_home=${CUDA_HOME:-/usr/local/cuda}
tk=$build/toolkit
pkgs=(nvidia-cuda-toolkit nvidia-cuda-dev libnvvm4 libcudart11.0)

die() { echo "old_toolkit.sh: $*" >&2; exit 1; }

fetch() {
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/root"
  bash tests/gpu/apt_fetch.sh "$tmp" "${pkgs[@]}" || exit 1
  local d
  for d in nvidia-cuda-toolkit libnvvm4 libcudart11.0; do dpkg-deb -x "$tmp/${d}"_*.deb "$tmp/root"; done
  # Of the 2.8 GB of nvidia-cuda-dev only the headers, the runtime's static parts (nvcc links
  # them) and the cuBLAS link stubs.
  dpkg-deb --fsys-tarfile "$tmp"/nvidia-cuda-dev_*.deb | tar -x -C "$tmp/root" --wildcards \
    './usr/include/*' './usr/lib/x86_64-linux-gnu/libcudadevrt.a' \
    './usr/lib/x86_64-linux-gnu/libcudart_static.a' './usr/lib/x86_64-linux-gnu/stubs/libcublas*'
  local u=$tmp/root/usr c=$tmp/root/cuda
  mkdir -p "$c/lib64"
  ln -s ../usr/lib/nvidia-cuda-toolkit/bin "$c/bin"
  ln -s ../usr/include "$c/include"
  ln -s "$nccl_home/include/nccl.h" "$u/include/nccl.h"
  local a
  for a in libcudadevrt.a libcudart_static.a; do ln -s ../../usr/lib/x86_64-linux-gnu/$a "$c/lib64/$a"; done
  ln -s ../../usr/lib/x86_64-linux-gnu/libcudart.so.11.0 "$c/lib64/libcudart.so"
  ln -s ../../usr/lib/x86_64-linux-gnu/stubs/libcublas.so "$c/lib64/libcublas.so"
  ln -s ../../usr/lib/x86_64-linux-gnu/stubs/libcublasLt.so "$c/lib64/libcublasLt.so"
  ln -s "$nccl_home/lib64/libnccl.so" "$c/lib64/libnccl.so"
  # Debian's nvcc reads nvcc.profile beside it; its own points at /usr. This one at the tree.
  rm -f "$u/lib/nvidia-cuda-toolkit/bin/nvcc.profile"
  cat > "$u/lib/nvidia-cuda-toolkit/bin/nvcc.profile" <<EOF
NVVMIR_LIBRARY_DIR = $tk/usr/lib/nvidia-cuda-toolkit/libdevice
PATH += $tk/usr/lib/nvidia-cuda-toolkit/bin:$tk/usr/bin:
INCLUDES += "-I$tk/usr/include" \$(_SPACE_)
LIBRARIES =+ \$(_SPACE_) -L$tk/cuda/lib64
EOF
  rm -rf "$tk" && mkdir -p "$build" && mv "$tmp/root" "$tk"
  echo "${pkgs[*]}" > "$tk/.complete"
}

[ -f "$nccl_home/include/nccl.h" ] || die "no nccl.h under $nccl_home/include (set CUDA_HOME)"
if ! command -v g++-11 > /dev/null; then
  [ "$(id -u)" = 0 ] || die "nvcc 11.8 needs g++-11 (apt-get install g++-11)"
  apt-get install -y -qq g++-11 > /dev/null
fi
[ "$(cat "$tk/.complete" 2>/dev/null)" = "${pkgs[*]}" ] || fetch
"$tk/cuda/bin/nvcc" --version | tail -1
make CUDA=1 CUDA_HOME="$tk/cuda" CUDA_ARCH="70 80" BUILD="$build" BIN="$build/bin" \
  -j"${JOBS:-2}" "$build/bin/lsst-run" gpu-tests
echo "old_toolkit.sh: lsst-run and the GPU test programs built with CUDA 11.8 for sm_70 and sm_80"
