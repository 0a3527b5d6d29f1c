#!/usr/bin/env bash
# Create .venv and install embodied-rl with its test tools. Idempotent; called by `make`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${VENV:-.venv}"

# Headless rendering needs an EGL (or OSMesa) library from Mesa; install it if missing.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing Mesa EGL/OSMesa for headless rendering"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 >/dev/null
    else
        echo "[setup] WARNING: libEGL not found; install libegl1 libegl-mesa0 (Debian/Ubuntu)" >&2
    fi
fi

# Browser tests (labeling page, HTML report) drive Debian's Chromium headless.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing chromium for headless browser tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium >/dev/null
    else
        echo "[setup] WARNING: chromium not found; browser tests will be skipped" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# The CPU build of torch first; the package's own `torch>=2.4` is then already satisfied.
# Elsewhere, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu avoids a CUDA download.
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    echo "[setup] installing torch (CPU)"
    $PIP install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
fi
echo "[setup] installing embodied-rl and its development tools"
$PIP install -q -e ".[dev]"
touch "$VENV/.installed"
