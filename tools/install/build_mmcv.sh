#!/usr/bin/env bash
# Build a full mmcv 2.1.0 wheel (compiled ops) for the torch installed in the
# current Python, on CPU or CUDA.
#
#   bash tools/install/build_mmcv.sh [OUT_DIR]        # default: ./wheels
#   PYTHON=.venv/bin/python bash tools/install/build_mmcv.sh /tmp/wheels
#   FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" bash tools/install/build_mmcv.sh
#   DOWNLOAD_ONLY=1 bash tools/install/build_mmcv.sh   # fetch + patch, no build
#
# mmcv 2.1.0 ships no wheels for recent torch, and its setup.py hard-codes
# -std=c++14/-std=c++17 while torch >= 2.6 headers need C++20, so the sdist
# is patched to -std=c++20 (nothing else changes). The sdist's setup.py
# imports pkg_resources, hence setuptools<81. Takes ~30 min on 2 CPU cores
# (MAX_JOBS defaults to the number of cores). Install the result with
#   pip install --no-cache-dir --no-index --find-links OUT_DIR mmcv==2.1.0
# (--no-cache-dir: pip's wheel cache keys mmcv by the sdist, not by torch).
set -euo pipefail

MMCV_VERSION=${MMCV_VERSION:-2.1.0}
PYTHON=${PYTHON:-python}
OUT_DIR=${1:-wheels}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=${MMCV_BUILD_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/mmcv-build.XXXXXX")}
mkdir -p "$WORK"

echo "[build_mmcv] python: $("$PYTHON" -c 'import sys; print(sys.executable)')"

# 1. sdist from the package index
SDIST="$WORK/mmcv-$MMCV_VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    "$PYTHON" -m pip download --no-deps --no-binary :all: --no-cache-dir \
        -d "$WORK" "mmcv==$MMCV_VERSION"
fi
SRC="$WORK/mmcv-$MMCV_VERSION"
rm -rf "$SRC"
tar xzf "$SDIST" -C "$WORK"

# 2. C++20 for torch >= 2.6 headers
sed -i "s/'-std=c++1[47]'/'-std=c++20'/g" "$SRC/setup.py"
if grep -q "'-std=c++1[47]'" "$SRC/setup.py"; then
    echo "[build_mmcv] failed to patch -std in $SRC/setup.py" >&2
    exit 1
fi
echo "[build_mmcv] patched: $(grep -c "std=c++20" "$SRC/setup.py") -std=c++20 flag(s) in $SRC/setup.py"

if [ "${DOWNLOAD_ONLY:-0}" = "1" ]; then
    echo "[build_mmcv] DOWNLOAD_ONLY=1: sources ready in $SRC"
    exit 0
fi

# 3. build requirements, in the target environment (no build isolation, so
#    the wheel is compiled against the torch that is installed there)
"$PYTHON" -m pip install "setuptools<81" wheel ninja
"$PYTHON" -c 'import torch' || {
    echo "[build_mmcv] install torch first: the wheel is built for it" >&2
    exit 1
}
HAS_CUDA=$("$PYTHON" -c 'import torch; from torch.utils.cpp_extension import CUDA_HOME; print(int(torch.cuda.is_available() and CUDA_HOME is not None))')
if [ "${FORCE_CUDA:-0}" = "1" ] || [ "$HAS_CUDA" = "1" ]; then
    export FORCE_CUDA=1
    echo "[build_mmcv] building CUDA + CPU ops"
else
    echo "[build_mmcv] building CPU ops (set FORCE_CUDA=1 for CUDA)"
fi
"$PYTHON" -c 'import torch; print("[build_mmcv] torch", torch.__version__, "cuda", torch.version.cuda)'

# 4. build the wheel
export MMCV_WITH_OPS=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
(cd "$SRC" && "$PYTHON" -m pip wheel --no-deps --no-build-isolation \
    --no-cache-dir -w "$OUT_DIR" .)
ls -l "$OUT_DIR"/mmcv-"$MMCV_VERSION"-*.whl
[ -n "${MMCV_BUILD_DIR:-}" ] || rm -rf "$WORK"
