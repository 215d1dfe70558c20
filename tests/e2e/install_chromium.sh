#!/usr/bin/env bash
# Debian's chromium for the browser tests (tests/e2e), which drive it with Playwright: installed
# with apt-get when /usr/bin/chromium is missing, a no-op otherwise. Playwright's own browser
# downloads are never used.
set -euo pipefail

chromium=/usr/bin/chromium
if [ -x "$chromium" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: $chromium is missing and there is no apt-get; install Debian's" \
        "'chromium' package (or a chromium at $chromium) and run again." >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install_chromium: $chromium is missing; as root run" \
            "'apt-get install -y chromium' and run again." >&2
        exit 1
    fi
    sudo=(sudo)
fi
echo "installing Debian's chromium for the browser tests (apt-get install chromium) …"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
if [ ! -x "$chromium" ]; then
    echo "install_chromium: apt-get installed chromium but $chromium is missing" >&2
    exit 1
fi
"$chromium" --version 2>/dev/null || true
