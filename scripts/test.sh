#!/usr/bin/env bash
# The test command: sets the environments up if needed (idempotent), then runs the tests.
#   bash scripts/test.sh                     the whole suite on ROS 2 Kilted, then the ROS-facing
#                                            tests (node, lifecycle, QoS, messages, bags) on Jazzy
#   bash scripts/test.sh [pytest args]       those tests on Kilted only
#   ABAW_ROS_DISTRO=jazzy bash scripts/test.sh [pytest args]   on Jazzy only (default: the ROS-facing tests)
# Each distro has its own environment (scripts/setup_env.sh), and its tests run in a shell
# of their own, so nothing of one leaks into the other.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The tests that talk to ROS 2 itself: rclpy, the generated messages, rmw, lifecycle.
# (The node's fault-injection, ROS4HRI, parameter-range, demo and reactions tests run on
# Kilted only: they test our code, not the distro, and would double the run.)
JAZZY_TESTS=(tests/test_node_stream.py tests/test_node_lifecycle.py tests/test_node_qos.py
             tests/test_node_dds_settings.py tests/test_node_params.py tests/test_node_diagnostics.py
             tests/test_node_compressed.py tests/test_node_conversions.py
             tests/test_node_faults.py::test_odd_width_yuv422_frames_are_bad_frames_with_a_clear_reason
             tests/test_package_messages.py tests/test_package_layout.py tests/test_bag_io.py)

run_on() {  # run_on DISTRO ENV_FILE PYTEST_ARGS...
  local distro="$1" env_file="$2"
  shift 2
  local start=$SECONDS
  ABAW_ROS_DISTRO="$distro" bash "$ROOT/scripts/setup_env.sh" || return $?
  local status=0
  (
    set +u
    # shellcheck disable=SC1090
    . "$env_file"
    set -u
    python -m pytest -q -p no:cacheprovider "$@"
  ) || status=$?
  printf '[test] ROS 2 %s: exit %d after %d s (set-up included)\n' "$distro" "$status" $((SECONDS - start))
  return "$status"
}

case "${ABAW_ROS_DISTRO:-}" in
  jazzy)
    if [ $# -gt 0 ]; then run_on jazzy "$ROOT/.abaw_env_jazzy" "$@"; else run_on jazzy "$ROOT/.abaw_env_jazzy" "${JAZZY_TESTS[@]}"; fi
    exit $? ;;
  ""|kilted) ;;
  *) printf 'ABAW_ROS_DISTRO=%q: the tests run on kilted (default) or jazzy\n' "$ABAW_ROS_DISTRO" >&2; exit 2 ;;
esac

status=0
ABAW_ROS_DISTRO=kilted bash "$ROOT/scripts/setup_env.sh"
( set +u; . "$ROOT/.abaw_env"; set -u; ruff check . ) || status=$?  # once: the sources are the same
if [ $# -gt 0 ]; then
  run_on kilted "$ROOT/.abaw_env" "$@" || status=$?
  exit "$status"
fi
run_on kilted "$ROOT/.abaw_env" tests || status=$?
run_on jazzy "$ROOT/.abaw_env_jazzy" "${JAZZY_TESTS[@]}" || status=$?
exit "$status"
