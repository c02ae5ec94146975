#!/usr/bin/env bash
# Screenshot of a built report with headless Chromium (Debian package `chromium`).
#   scripts/screenshot_report.sh REPORT_DIR OUT.png [WIDTH,HEIGHT] [MAX_WIDTH]
# The PNG is scaled down to MAX_WIDTH pixels (default 1024) and quantised to 256 colours when
# Pillow is available (keeps the docs image under ~600 KB; noisy cutouts do not compress).
set -euo pipefail
report=$(cd "$1" && pwd)
out=$2
size=${3:-1280,2400}
max_width=${4:-1024}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium not found (apt-get install chromium)" >&2
  exit 1
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
HOME=$profile "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --screenshot="$out" --window-size="$size" \
  "file://$report/index.html" 2>/dev/null
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
"$python" - "$out" "$max_width" <<'PY' || true
import sys
from PIL import Image
path, max_width = sys.argv[1], int(sys.argv[2])
image = Image.open(path).convert("RGB")
if image.width > max_width:
    image = image.resize((max_width, round(image.height * max_width / image.width)),
                         Image.Resampling.LANCZOS)
image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
PY
ls -l "$out"
