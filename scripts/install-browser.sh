#!/usr/bin/env sh
# Headless Chromium for the HTML report's browser test (tests/test_report_browser.py): Debian's `chromium` package.
# Idempotent: does nothing where a Chromium is already on the PATH. Uses sudo when not run as root.
set -eu
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
log=$(mktemp)
if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
  tail -n 20 "$log"
  echo "install-browser: apt-get install chromium failed (the browser test needs Debian's chromium package)" >&2
  exit 1
fi
rm -f "$log"
