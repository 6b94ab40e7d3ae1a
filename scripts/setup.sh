#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv and install eoi with every
# extra, under this machine's pins (scripts/constraints.txt). Re-installs only when
# pyproject.toml or the constraints changed since the last run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
constraints="$root/scripts/constraints.txt"
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.eoi-installed"
want="$(cat "$root/pyproject.toml" "$constraints" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing eoi[all,test] into $venv (first run takes a few minutes)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # The constraints pin torch to 2.13.0, so pip takes the CPU wheel, never a CUDA build.
    "$venv/bin/python" -m pip install --quiet -c "$constraints" -e "$root[all,test]"
    echo "$want" > "$stamp"
fi
