#!/usr/bin/env bash
# The README walkthrough, as a new user follows it: the quickstart saved as a script and run,
# `make demo`, `acme-xr status`, `acme-xr report`, then the report opened in headless
# Chromium (Debian's `chromium` package) and screenshot. Every step must succeed as written;
# the screenshot must be a PNG of the window's size that is not blank.
#
# Usage: bash ci/walkthrough.sh    (from .ci/run after `make test`; needs the make venv)
# Environment: VENV (default .venv, as the Makefile), README (default README.md),
# WALKTHROUGH_DIR (where the quickstart runs and the screenshot goes; default a temporary
# directory, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
README=${README:-README.md}
WIDTH=1280
HEIGHT=2400
export VENV  # make demo uses the same environment
case "$VENV" in /*) venv=$VENV ;; *) venv="$(pwd)/$VENV" ;; esac

if [ -n "${WALKTHROUGH_DIR:-}" ]; then
    work=$(mkdir -p "$WALKTHROUGH_DIR" && cd "$WALKTHROUGH_DIR" && pwd)
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

step() {  # step DESCRIPTION COMMAND...: run it, stop the walkthrough with its exit status
    local what=$1
    shift
    echo "== walkthrough: $what"
    local rc=0
    "$@" || rc=$?
    if [ "$rc" != 0 ]; then
        echo "walkthrough: FAILED ($what, exit status $rc): $*" >&2
        exit "$rc"
    fi
}

if ! command -v chromium >/dev/null 2>&1; then
    step "install Debian's chromium" bash -c \
        'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null'
fi

# README's first ```python block, saved as a script, run where it cannot clash with a run
step "save README's quickstart" "$venv/bin/python" - "$README" "$work/quickstart.py" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
block = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
if block is None:
    sys.exit(f"{sys.argv[1]} has no ```python block")
open(sys.argv[2], "w", encoding="utf-8").write(block.group(1))
EOF
step "run the quickstart script" bash -c "cd '$work' && '$venv/bin/python' quickstart.py"

step "make demo" make demo
step "acme-xr status acme_xr_demo" "$venv/bin/acme-xr" status acme_xr_demo
report=$("$venv/bin/acme-xr" report acme_xr_demo) || {
    echo "walkthrough: FAILED (acme-xr report acme_xr_demo)" >&2; exit 1; }
echo "== walkthrough: acme-xr report acme_xr_demo -> $report"

shot="$work/report.png"
rm -f "$shot"
step "screenshot the report in headless chromium" timeout 120 chromium --headless \
    --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$work/chromium-profile" \
    --hide-scrollbars --window-size="$WIDTH,$HEIGHT" --screenshot="$shot" "file://$report"

step "check the screenshot" "$venv/bin/python" - "$shot" "$WIDTH" "$HEIGHT" <<'EOF'
import struct, sys
import matplotlib.image
path, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as fh:
    head = fh.read(24)
if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
    sys.exit(f"{path} is no PNG image")
size = struct.unpack(">II", head[16:24])
if size != (width, height):
    sys.exit(f"{path} is {size[0]}x{size[1]} pixels, not {width}x{height}")
pixels = matplotlib.image.imread(path)[..., :3]
inked = float((pixels.min(axis=-1) < 0.9).mean())  # not white: text, tables, figures
if inked < 0.01:
    sys.exit(f"{path} is blank ({inked:.2%} of its pixels are not white)")
print(f"{path}: {size[0]}x{size[1]} PNG, {inked:.1%} of its pixels inked")
EOF
echo "== walkthrough: every step worked; screenshot $shot"
