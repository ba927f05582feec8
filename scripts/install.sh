#!/usr/bin/env bash
# Installs rlhf and its dependencies, taking torch's CPU build where one is at hand
# (rather than pulling several GB of CUDA packages onto a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
  # a local CPU wheel (pip find-links), else PyTorch's CPU index, else plain PyPI
  pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
         --extra-index-url https://pypi.org/simple \
    || pip install -q torch
fi
pip install -q -e ".[dev]"
