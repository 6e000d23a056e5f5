#!/usr/bin/env bash
# Set up partseg in ./.venv on a fresh Debian/Ubuntu machine (or any machine with Python >= 3.10).
# PARTSEG_TORCH overrides the torch requirement (default: the 2.13.0 CPU build where it is
# available locally; e.g. PARTSEG_TORCH="torch" for the newest CUDA build from PyPI).
set -euo pipefail
cd "$(dirname "$0")"

# Open3D's wheel links against libusb; install it when missing and we may.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "setup.sh: please install libusb-1.0-0 (needed by Open3D)" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q "${PARTSEG_TORCH:-torch==2.13.0}"
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/partseg --version
