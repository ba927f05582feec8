#!/usr/bin/env bash
# Installs rlhf and its dependencies, taking torch's CPU build where one is at hand
# (rather than pulling several GB of CUDA packages onto a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
  # 1) a local CPU wheel (pip's find-links) or 2) PyTorch's CPU index
  pip install -q "torch==2.13.0" --only-binary=:all: --no-index 2>/dev/null \
    || pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
    || pip install -q "torch==2.13.0"
fi
pip install -q -e ".[dev]"
