#!/usr/bin/env bash
# The test command: sets the environment up if needed (idempotent), then runs the suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
set +u
# shellcheck disable=SC1091
. "$ROOT/.abaw_env"
set -u
cd "$ROOT"
ruff check .
exec python -m pytest -q -p no:cacheprovider "${@:-tests}"
