#!/usr/bin/env bash
# Installs rlhf and its dependencies, taking torch's CPU build where one is at hand
# (rather than pulling several GB of CUDA packages onto a machine without a GPU), and
# Debian's chromium + chromium-driver for the rating page's browser tests (as root, only
# where missing: a second run is quick).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver >/dev/null \
      || echo "install.sh: chromium not installed; the browser tests will skip" >&2
  else
    echo "install.sh: no chromium (needs root and apt-get); the browser tests will skip" >&2
  fi
fi
if ! python -c "import torch" 2>/dev/null; then
  # a local CPU wheel (pip find-links), else PyTorch's CPU index, else plain PyPI
  pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
         --extra-index-url https://pypi.org/simple \
    || pip install -q torch
fi
pip install -q -e ".[dev]"
