#!/bin/sh
# Stands in for Bazel's coverage report generator, which Bazel 4.2 would
# download (@remote_coverage_tools) for every test target. `bazel coverage`
# is not supported offline; use `pytest --cov` instead.
echo "bazel coverage is not available in this offline build" >&2
exit 1
