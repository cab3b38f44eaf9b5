#!/usr/bin/env bash
# FlashAttention-4 (pip's flash-attn-4, CuTe-DSL kernels, Hopper forward included) for
# benchmarks/attention_kernels.py on the device, whose image lacks it and whose calls carry at most
# 64 MiB: its packages installed here for the device's Python 3.12, sources stripped, in two
# xz archives a call each: .fa4a/ (~50 MB, the DSL's compiler library alone) and .fa4b/ (~23 MB,
# the rest). Both folders are git-ignored.
#   bash benchmarks/fa4_pack.sh            # once, on this machine (~5 minutes of xz on 2 cores)
# Then, on a warm device machine, two calls back to back (it is given back after 30 s idle):
#   carry [".fa4a"]: mkdir -p /tmp/fa4site && tar -xJf .fa4a/fa4a.tar.xz -C /tmp/fa4site
#   carry [".fa4b"]: test -d /tmp/fa4site/nvidia_cutlass_dsl && tar -xJf .fa4b/fa4b.tar.xz -C /tmp/fa4site \
#                    && PYTHONPATH=$PWD:$FA4 python3 benchmarks/attention_kernels.py
# with FA4=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages (the second is what the DSL's
# .pth file would add in a site-packages). Later calls on the same machine find it there.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${FA4_VERSION:-4.0.0b40}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platform=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform any)
# The packages FA4 needs beyond PyTorch (which the device has), with the DSL's CUDA 12 libraries:
# the device's 580 driver runs them, and nvidia-cutlass-dsl always requires them.
# The versions pip resolves for flash-attn-4 4.0.0b40 (the DSL's libraries must match it exactly).
dsl=${CUTLASS_DSL_VERSION:-4.8.1}
packages=("flash-attn-4==$VERSION" "nvidia-cutlass-dsl==$dsl" "nvidia-cutlass-dsl-libs-base==$dsl"
          "nvidia-cutlass-dsl-libs-core==$dsl" "nvidia-cutlass-dsl-libs-cu12==$dsl" "cuda-bindings>=12.8,<13"
          cuda-pathfinder "apache-tvm-ffi>=0.1.11,<0.2" torch-c-dlpack-ext "quack-kernels>=0.5.3" einops)
python3 -m pip download -q --no-deps --pre "${platform[@]}" -d "$work/wheels" "${packages[@]}"
python3 -m pip install -q --no-deps --no-compile "${platform[@]}" --target "$work/site" "$work"/wheels/*.whl
find "$work/site" \( -name "*.cpp" -o -name "*.c" -o -name "*.pyx" -o -name "*.pxd" \) -delete
compiler=nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu12.cpython-312-x86_64-linux-gnu.so
mkdir -p .fa4a .fa4b
tar -C "$work/site" -cf - "$compiler" | xz -9e -T0 > .fa4a/fa4a.tar.xz
tar -C "$work/site" --exclude="$compiler" -cf - . | xz -9e -T0 > .fa4b/fa4b.tar.xz
ls -la .fa4a/fa4a.tar.xz .fa4b/fa4b.tar.xz
