#!/usr/bin/env bash
# Creates the Python virtual environment with python-escpos for the benchmark baseline
# (python_escpos_baseline.py) at ${CARGO_TARGET_DIR:-target}/escpos-venv and installs
# requirements.txt there; does nothing when it is already installed. Prints the venv's python
# path as its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
venv="$target/escpos-venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.txt"

command -v python3 >/dev/null 2>&1 || { echo "python3 not found: install the Debian package python3" >&2; exit 1; }

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
  echo "$venv/bin/python"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "python3 cannot create virtual environments: install the Debian package python3-venv" >&2
    exit 1
  fi
  mkdir -p "$target"
  if ! python3 -m venv "$venv" >&2; then
    rm -rf "$venv"
    echo "python3 -m venv failed: install the Debian package python3-venv" >&2
    exit 1
  fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
cp "$requirements" "$stamp"
echo "$venv/bin/python"
