#!/usr/bin/env bash
# The main job: set up if needed, then start the node on a demo camera (a real face picture
# moved and scaled across frames, or --video FILE) and print the affect stream.
#   bash scripts/demo.sh [abaw-affect demo options, e.g. --seconds 20 --faces 2 --video clip.mp4]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
set +u
# shellcheck disable=SC1091
. "$ROOT/.abaw_env"
set -u
cd "$ROOT"
exec abaw-affect demo "$@"
