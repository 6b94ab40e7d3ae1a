#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite and every docstring example of the
# packages (pyproject.toml's testpaths); extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
