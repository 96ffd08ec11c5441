#!/usr/bin/env bash
# Create .venv and install mlplab into it (editable, with the dev extra and the optional extras the tests use).
# Without an NVIDIA GPU, torch is pinned to a CPU build first, so that the open range in pyproject.toml
# (torch>=2.3) is already satisfied and pip never pulls a multi-GB CUDA wheel. With a GPU, the normal
# (CUDA) build comes from pyproject's range. TORCH_INDEX_URL, when set, is passed to pip for that first
# step (e.g. https://download.pytorch.org/whl/cpu on a machine whose PyPI serves CUDA wheels by default).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_CPU=${TORCH_CPU:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || { echo "install: could not create $VENV; on Debian/Ubuntu: apt-get install -y python3-venv" >&2; exit 1; }
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
        echo "install: no NVIDIA GPU found: installing the CPU build of torch ($TORCH_CPU)"
        "$VENV/bin/python" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_CPU"
    fi
fi
"$VENV/bin/python" -m pip install -q -e '.[dev,umap,keras,onnx,tensorboard,mlflow,sweep,ray]'
touch "$VENV/.installed"
