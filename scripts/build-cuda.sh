#!/usr/bin/env bash
# Build joulebench with the `cuda` feature on a machine WITHOUT a GPU or a CUDA toolkit, and pack
# the binary for a GPU machine (which needs no Rust and no network). The recipe, verified to build
# (docs/gpu.md):
#   1. the CUDA 13.0 toolchain from pinned PyPI wheels into a venv (.cuda-build/venv; about 1.2 GB);
#   2. a CUDA_HOME-shaped folder over the wheels (.cuda-build/cuda-home): bin, include, nvvm, lib64 with
#      unversioned links, and lib64/stubs/libcuda.so, a link stub (SONAME libcuda.so.1) defining
#      every driver symbol cudarc declares, each returning CUDA_ERROR_STUB_LIBRARY (34): the real
#      driver replaces it at run time;
#   3. cargo build --release --features cuda into target-cuda/ (never touches the CPU target/);
#   4. the pack .cuda-pack/joulebench-cuda-sm<CC>.tar.gz: the binary, scripts/, models/,
#      BUILD-INFO.txt and SHA256SUMS. Data is not packed: gpu-run.sh runs from a checkout of the
#      repository (data/ is tracked; JOULEBENCH_DATA points elsewhere).
# Idempotent: a second run reuses the venv, the CUDA_HOME folder, the stub and the build.
#
# Usage: scripts/build-cuda.sh [--cc 90] [--jobs N] [--no-pack] [--check]
#   --cc     compute capability (default 90: H100/H200). PTX is JIT-compiled by the driver.
#   --check  after packing, prove the binary starts here with the stub (no driver needed).
# Environment: PYTHON (default python3), CARGO (default cargo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CC_ARCH=90
JOBS=""
PACK=1
CHECK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cc) CC_ARCH="${2:?--cc needs a value, e.g. 90}"; shift 2 ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
    --no-pack) PACK=0; shift ;;
    --check) CHECK=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build-cuda.sh: unknown argument '$1' (valid: --cc N, --jobs N, --no-pack, --check)" >&2; exit 2 ;;
  esac
done
case "$CC_ARCH" in ''|*[!0-9a]*) echo "build-cuda.sh: --cc '$CC_ARCH': expected a compute capability such as 90" >&2; exit 2 ;; esac

PYTHON="${PYTHON:-python3}"
CARGO="${CARGO:-cargo}"
say() { echo "build-cuda.sh: $*" >&2; }
die() { echo "build-cuda.sh: error: $*" >&2; exit 1; }

# Every version pinned: unpinned, pip pulls 13.5 crt/nvvm that do not match nvcc 13.0, and nvcc
# newer than 13.0 emits PTX the 580 driver (CUDA 13.0) cannot JIT.
PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)
WHL="$ROOT/.cuda-build"
VENV="$WHL/venv"
CUDA_HOME_DIR="$WHL/cuda-home"
TARGET_DIR="$ROOT/target-cuda"
PACK_DIR="$ROOT/.cuda-pack"
PACK_NAME="joulebench-cuda-sm$CC_ARCH"
T0=$(date +%s)

# ---- 1. toolchain wheels --------------------------------------------------------------------
PIN_STAMP="$VENV/.joulebench-pins"
if [ -f "$PIN_STAMP" ] && [ "$(cat "$PIN_STAMP")" = "${PINS[*]}" ]; then
  say "wheels: reusing $VENV"
else
  say "wheels: installing ${#PINS[@]} pinned CUDA 13.0 wheels into $VENV (about 1.2 GB)"
  mkdir -p "$WHL"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${PINS[@]}"
  echo "${PINS[*]}" > "$PIN_STAMP"
fi
CU13="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
for d in bin include lib nvvm; do
  [ -d "$CU13/$d" ] || die "wheel folder $CU13/$d is missing (remove $VENV and rerun)"
done
[ -x "$CU13/bin/nvcc" ] || die "nvcc not found at $CU13/bin/nvcc"

# ---- 2. CUDA_HOME-shaped folder -------------------------------------------------------------
mkdir -p "$CUDA_HOME_DIR/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$CU13/$d" "$CUDA_HOME_DIR/$d"; done
link_lib() { # unversioned name -> the wheel's .so.N
  local name="$1" target
  target=$(find "$CU13/lib" -maxdepth 1 -name "$name.*" ! -name '*.alt.*' | sort | head -n1)
  [ -n "$target" ] || die "no $name.* in $CU13/lib"
  ln -sfn "$target" "$CUDA_HOME_DIR/lib64/$name"
}
for l in libcublas.so libcublasLt.so libcurand.so libnvrtc.so libcudart.so; do link_lib "$l"; done

# The libcuda link stub, generated from the driver symbols cudarc declares.
CUDARC_VERSION=$(awk '/^name = "cudarc"$/ {getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock)
[ -n "$CUDARC_VERSION" ] || die "cudarc is not in Cargo.lock"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
find_cudarc() { ls -d "$CARGO_HOME_DIR"/registry/src/*/"cudarc-$CUDARC_VERSION" 2>/dev/null | head -n1; }
CUDARC_SRC=$(find_cudarc || true)
if [ -z "$CUDARC_SRC" ]; then
  say "fetching crates (cudarc $CUDARC_VERSION is not in $CARGO_HOME_DIR/registry yet)"
  "$CARGO" fetch --locked
  CUDARC_SRC=$(find_cudarc || true)
fi
SYS_RS="$CUDARC_SRC/src/driver/sys/mod.rs"
[ -f "$SYS_RS" ] || die "cudarc driver bindings not found at $SYS_RS"
STUB="$CUDA_HOME_DIR/lib64/stubs/libcuda.so"
STUB_C="$CUDA_HOME_DIR/lib64/stubs/libcuda-stub.c"
if [ ! -f "$STUB" ] || [ "$SYS_RS" -nt "$STUB" ] || [ "$0" -nt "$STUB" ]; then
  {
    echo "/* Generated by scripts/build-cuda.sh from cudarc $CUDARC_VERSION src/driver/sys/mod.rs."
    echo "   A link stub: every driver entry point returns CUDA_ERROR_STUB_LIBRARY (34). */"
    grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$SYS_RS" | sed 's/^pub unsafe fn //' | sort -u |
      while read -r f; do echo "int $f(void) { return 34; }"; done
  } > "$STUB_C"
  n=$(grep -c 'return 34' "$STUB_C")
  [ "$n" -gt 100 ] || die "only $n driver symbols found in $SYS_RS: has cudarc's layout changed?"
  cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$STUB" "$STUB_C"
  ln -sfn libcuda.so "$CUDA_HOME_DIR/lib64/stubs/libcuda.so.1"
  say "stub: $STUB ($n symbols, SONAME libcuda.so.1)"
else
  say "stub: reusing $STUB"
fi

# ---- 3. build ---------------------------------------------------------------------------------
export CUDA_HOME="$CUDA_HOME_DIR"
export PATH="$CUDA_HOME/bin:$PATH"
export CUDA_COMPUTE_CAP="$CC_ARCH"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
NVCC_VERSION=$(nvcc --version | sed -n 's/.*release \([0-9.]*\), V\([0-9.]*\).*/\2/p')
case "$NVCC_VERSION" in 13.0.*) ;; *) die "nvcc is '$NVCC_VERSION', expected 13.0.x (the 580 driver JITs PTX ISA up to 9.0)" ;; esac
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  say "warning: the working tree has uncommitted changes: the binary's commit will end in -dirty"
fi
say "cargo build --release --locked --features cuda (CUDA_HOME=$CUDA_HOME, nvcc $NVCC_VERSION, sm_$CC_ARCH; a clean build takes about 7 min on 2 cores)"
B0=$(date +%s)
"$CARGO" build --release --locked --features cuda --target-dir "$TARGET_DIR" --bin joulebench ${JOBS:+--jobs "$JOBS"}
B1=$(date +%s)
BIN="$TARGET_DIR/release/joulebench"
[ -x "$BIN" ] || die "no binary at $BIN"
say "built $BIN ($(du -h "$BIN" | cut -f1), cargo took $((B1 - B0)) s)"

[ "$PACK" = 1 ] || exit 0

# ---- 4. pack ----------------------------------------------------------------------------------
STAGE="$PACK_DIR/$PACK_NAME"
rm -rf "$STAGE"
mkdir -p "$STAGE/scripts"
cp "$BIN" "$STAGE/joulebench"
cp -r models "$STAGE/models"
for f in scripts/gpu-run.sh scripts/nvml-reader.py scripts/compare-pytorch.py; do
  [ -f "$f" ] && cp "$f" "$STAGE/scripts/"
done
# libcudart is the only CUDA library small enough to carry (cuBLAS/cuBLASLt are hundreds of MB):
# the GPU machine's /usr/local/cuda or PyTorch's nvidia/cu13/lib provides the rest.
mkdir -p "$STAGE/lib"
cp -L "$CUDA_HOME_DIR/lib64/libcudart.so" "$STAGE/lib/$(basename "$(readlink -f "$CUDA_HOME_DIR/lib64/libcudart.so")")"
{
  echo "joulebench CUDA build"
  echo "built_at_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git_commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$( [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo -dirty)"
  echo "compute_capability: $CC_ARCH"
  echo "nvcc: $NVCC_VERSION"
  echo "rustc: $(rustc --version)"
  echo "wheels: ${PINS[*]}"
  echo "cudarc: $CUDARC_VERSION (link stub: $(grep -c 'return 34' "$STUB_C") symbols)"
  echo "needed: $(readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  echo "runpath: $(readelf -d "$BIN" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')"
} > "$STAGE/BUILD-INFO.txt"
(cd "$STAGE" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)
TARBALL="$PACK_DIR/$PACK_NAME.tar.gz"
tar -C "$PACK_DIR" -cf - "$PACK_NAME" | gzip -9 > "$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"
SIZE=$(stat -c %s "$TARBALL")
LIMIT=$((64 * 1024 * 1024))
say "pack: $TARBALL ($((SIZE / 1024 / 1024)) MiB; binary $(( $(stat -c %s "$BIN") / 1024 / 1024 )) MiB unpacked)"
[ "$SIZE" -lt "$LIMIT" ] || die "the pack is $SIZE bytes, over the 64 MiB a device call carries"

if [ "$CHECK" = 1 ]; then
  say "check: the packed binary starts here with the stub and the wheel libraries"
  LD_LIBRARY_PATH="$CUDA_HOME_DIR/lib64/stubs:$CU13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$STAGE/joulebench" --version
fi
say "done in $(( $(date +%s) - T0 )) s. On the GPU machine, from a checkout of this repository:"
say "  bash scripts/gpu-run.sh --pack $TARBALL"
