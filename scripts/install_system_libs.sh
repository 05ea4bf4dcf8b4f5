#!/usr/bin/env bash
# System packages of the tests: the libraries PySide6's QtGui needs to load the module's .ui file
# offscreen, and the independent DICOM tools the DICOM tests check against (orthanc: a real PACS;
# dicom3tools: dciodvfy; plastimatch: RTSTRUCT -> label maps). Idempotent: installs only what is missing.
set -euo pipefail
libs="libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3 libx11-6 orthanc dicom3tools plastimatch"
missing=""
for p in $libs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null
elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
else
    echo "please install these system packages for the tests:$missing" >&2
fi
