#!/usr/bin/env bash
# System libraries PySide6's QtGui needs to load the module's .ui file offscreen in the tests.
set -euo pipefail
libs="libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3 libx11-6"
missing=""
for p in $libs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq $missing
elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq $missing
else
    echo "please install these system packages for the Qt tests:$missing" >&2
fi
