#!/usr/bin/env bash
# Create (or update) the virtual environment of mmseg-fsr.
#
#   bash tools/install/setup_env.sh            # runtime + optional extras
#   bash tools/install/setup_env.sh --tests    # ... + test requirements
#
# Environment:
#   FSR_VENV      venv path (default: <repo>/.venv); created if missing
#   PYTHON        interpreter used to create the venv (default: python3)
#   TORCH_VERSION / TORCHVISION_VERSION   (default 2.14.1 / 0.29.1)
#   MMCV_WHEEL_DIR  where a locally built mmcv wheel goes
#                   (default: <venv>/mmcv-wheels)
#
# Order: torch + torchvision, setuptools<81, the OpenMMLab pins
# (requirements/mminstall.txt), then full mmcv 2.1.0 as a *binary* wheel from
# the find-links folders (PIP_FIND_LINKS, plus ../shared/wheels beside the
# repository when it exists); only if no usable wheel is found is one built
# for the installed torch with tools/install/build_mmcv.sh (~30 min on 2
# cores). Finally `pip install -e .[optional]` (`.[tests,optional]` with
# --tests). A second run with everything in place only checks and exits.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${FSR_VENV:-$REPO/.venv}
BASE_PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
MMCV_VERSION=2.1.0
WITH_TESTS=0

for arg in "$@"; do
    case "$arg" in
        --tests) WITH_TESTS=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "setup_env.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "[setup_env] $*"; }

# --- find-links: prebuilt wheels (mmcv) ------------------------------------
MMCV_WHEEL_DIR=${MMCV_WHEEL_DIR:-$VENV/mmcv-wheels}
LINKS=()
[ -d "$REPO/../shared/wheels" ] && LINKS+=("$(cd "$REPO/../shared/wheels" && pwd)")
[ -d "$MMCV_WHEEL_DIR" ] && LINKS+=("$MMCV_WHEEL_DIR")
export PIP_FIND_LINKS="${LINKS[*]:-} ${PIP_FIND_LINKS:-}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

# --- venv -------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    "$BASE_PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install "$@"; }

# Requirement strings of everything this script installs.
EXTRAS=optional
[ "$WITH_TESTS" = 1 ] && EXTRAS=tests,optional
req_lines() { sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$@" | grep -v '^[[:space:]]*$' | grep -v '^-' || true; }
mapfile -t MM_REQS < <(req_lines "$REPO/requirements/mminstall.txt")
mapfile -t ALL_REQS < <(
    echo "torch==$TORCH_VERSION"
    echo "torchvision==$TORCHVISION_VERSION"
    req_lines "$REPO/requirements/runtime.txt" "$REPO/requirements/mminstall.txt" \
        "$REPO/requirements/optional.txt"
    [ "$WITH_TESTS" = 1 ] && req_lines "$REPO/requirements/tests.txt"
)

# Prints the requirements that are not satisfied (nothing when all are).
missing() {
    "$PY" - "$@" <<'EOF'
import sys
import importlib.metadata as md
from pip._vendor.packaging.requirements import Requirement
for line in sys.argv[1:]:
    req = Requirement(line)
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        print(f'{line} (not installed)')
        continue
    if not req.specifier.contains(version, prereleases=True):
        print(f'{line} (have {version})')
EOF
}

mmcv_ok() {
    "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__" >/dev/null 2>&1
}

plugin_ok() {
    # mmseg-fsr installed in editable mode from this checkout
    "$PY" - "$REPO" <<'EOF' >/dev/null 2>&1
import json, sys, os
import importlib.metadata as md
d = md.distribution('mmseg-fsr')
info = json.loads(d.read_text('direct_url.json'))
assert info.get('dir_info', {}).get('editable')
assert os.path.realpath(info['url'][len('file://'):]) == os.path.realpath(sys.argv[1])
import mmseg_fsr
EOF
}

# --- fast path --------------------------------------------------------------
if [ -z "$(missing "${ALL_REQS[@]}")" ] && mmcv_ok && plugin_ok; then
    log "environment $VENV is up to date (torch $TORCH_VERSION, mmcv $MMCV_VERSION, mmseg-fsr[$EXTRAS])"
    exit 0
fi

# --- 1. torch ---------------------------------------------------------------
if [ -n "$(missing "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "setuptools<81" wheel)" ]; then
    log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
    # setuptools<81: pkg_resources (mmengine, mim, mmcv's setup.py)
    pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
        "setuptools<81" wheel
fi

# --- 2. OpenMMLab stack (mmcv comes next, as a binary) -----------------------
NON_MMCV=()
for r in "${MM_REQS[@]}"; do [[ "$r" == mmcv* ]] || NON_MMCV+=("$r"); done
if [ -n "$(missing "${NON_MMCV[@]}")" ]; then
    log "installing ${NON_MMCV[*]}"
    pip_install "${NON_MMCV[@]}"
fi

# --- 3. full mmcv -----------------------------------------------------------
if ! mmcv_ok; then
    log "installing mmcv==$MMCV_VERSION (binary only; find-links: ${PIP_FIND_LINKS})"
    # --no-cache-dir: pip's wheel cache keys mmcv by the sdist, not by torch
    if ! pip_install --no-cache-dir --only-binary mmcv --force-reinstall \
            --no-deps "mmcv==$MMCV_VERSION" || ! mmcv_ok; then
        log "no usable mmcv wheel: building one for $("$PY" -c 'import torch; print(torch.__version__)') (takes ~30 min)"
        PYTHON="$PY" bash "$REPO/tools/install/build_mmcv.sh" "$MMCV_WHEEL_DIR"
        pip_install --no-cache-dir --force-reinstall --no-deps --no-index \
            --find-links "$MMCV_WHEEL_DIR" "mmcv==$MMCV_VERSION"
    fi
    mmcv_ok || { log "mmcv $MMCV_VERSION with ops does not import"; "$PY" -c 'import mmcv.ops'; exit 1; }
    # mmcv's own dependencies (addict, yapf, Pillow, ...); mmcv stays as is
    pip_install --only-binary mmcv "mmcv==$MMCV_VERSION"
fi

# --- 4. mmseg-fsr -----------------------------------------------------------
log "installing mmseg-fsr (editable) with extras [$EXTRAS]"
pip_install --no-build-isolation --only-binary mmcv -e "$REPO[$EXTRAS]"

left=$(missing "${ALL_REQS[@]}")
if [ -n "$left" ] || ! mmcv_ok; then
    log "still missing after install:"; echo "$left"; exit 1
fi
"$PY" - <<'EOF'
import torch, mmcv, mmengine, mmseg, mmseg_fsr
print(f'[setup_env] ready: python {__import__("sys").version.split()[0]}, '
      f'torch {torch.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, '
      f'mmseg_fsr {mmseg_fsr.__version__}')
EOF
log "activate with: source ${VENV}/bin/activate"
