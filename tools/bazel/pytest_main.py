"""The main of every py_test: runs the pytest file(s) given as arguments.

A test file run directly as a script would define its tests and exit 0
without running any; this runner makes `bazel test` run them, and fails
the target when pytest collects none (exit 5) as well as on failures. It
also checks that `qstar_jax` is imported from the target's runfiles (the
tree Bazel built), not from the editable install in .venv.
"""

import importlib.util
import os
import sys

import pytest


def main() -> int:
    runfiles = os.environ.get("TEST_SRCDIR")
    origin = importlib.util.find_spec("qstar_jax").origin
    if runfiles and not os.path.abspath(origin).startswith(
            os.path.abspath(runfiles)):
        print(f"pytest_main: qstar_jax comes from {origin}, outside the "
              f"runfiles {runfiles}", file=sys.stderr)
        return 1
    return pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
