#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job: `eoi demo` (extra arguments are passed on).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/eoi" demo "$@"
