#!/usr/bin/env bash
# Set-up on a fresh machine: system packages (FFmpeg for audio decoding, Chromium for the browser
# test) when absent, then the package with its pinned dependencies (CPU torch; see constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
