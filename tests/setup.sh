#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine (as root, or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if ! command -v chromium >/dev/null || ! command -v ffmpeg >/dev/null || ! command -v espeak-ng >/dev/null \
    || ! command -v sox >/dev/null || ! command -v turnserver >/dev/null; then
  $SUDO apt-get update -qq
  # coturn: the relay tests start their own turnserver on loopback (tests/coturn.py); the service stays off.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium ffmpeg espeak-ng sox coturn >/dev/null
fi
# CPU torch first (an unpinned torch would pull a multi-GB CUDA build), then the project, its test extra and the
# cluster extra (Ray: tests/test_cluster*.py start a local Ray cluster).
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,cluster]"
