#!/bin/sh
# Install what the headless-browser test of the stand-in's page needs: Debian's
# chromium (binary /usr/bin/chromium). Idempotent: does nothing when it is there.
# The test drives Chromium with --dump-dom, so no npm package or downloaded browser.
set -eu
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
/usr/bin/chromium --version 2>/dev/null || true
