#!/bin/sh
# The interpreter of the Bazel Python toolchain: the project's own .venv
# (made by setup.sh). Bazel starts this file from a target's runfiles; its
# real path lies in the source tree, two levels below the repository root.
here=$(dirname "$(readlink -f "$0")")
python="$here/../../.venv/bin/python"
if [ ! -x "$python" ]; then
  echo "venv_python.sh: no interpreter at $python; run setup.sh first" >&2
  exit 1
fi
exec "$python" "$@"
