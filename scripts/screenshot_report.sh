#!/usr/bin/env bash
# Screenshot of a results folder's report.html, the whole page, in headless Chromium (Debian package `chromium`).
# Usage: scripts/screenshot_report.sh RESULTS_DIR OUT.png [WIDTH]
# Writes the report first if RESULTS_DIR has none. Two passes: the page reports its own height (data-page-height,
# set by its JS once every image decoded), then Chromium shoots a window that tall.
set -euo pipefail
results=${1:?usage: scripts/screenshot_report.sh RESULTS_DIR OUT.png [WIDTH]}
out=${2:?usage: scripts/screenshot_report.sh RESULTS_DIR OUT.png [WIDTH]}
width=${3:-1400}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 2; }
html=$(realpath "$results")/report.html
if [ ! -f "$html" ]; then
  python -m peftbench.report "$results" >/dev/null
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Flags: no sandbox as root, and no background connections (this machine's network is closed).
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --disable-quic --hide-scrollbars --user-data-dir="$profile"
       --virtual-time-budget=5000)
height=$("$browser" "${flags[@]}" --window-size="$width,1000" --dump-dom "file://$html" 2>/dev/null \
  | grep -o 'data-page-height="[0-9]*"' | head -1 | grep -o '[0-9]*' || true)
if [ -z "$height" ]; then  # a page whose script did not finish: shoot 3000 px and say so (the test fails on this)
  echo "screenshot_report.sh: the page did not report its height (data-page-height); using 3000 px" >&2
  height=3000
fi
"$browser" "${flags[@]}" --window-size="$width,$((height + 40))" --screenshot="$(realpath -m "$out")" "file://$html" \
  2>/dev/null
echo "$out (${width}x$((height + 40)))"
