#!/usr/bin/env bash
# Refresh the MathJax copy the site serves itself (book/_static/mathjax/): the tex-chtml
# component, its woff-v2 fonts and the license, from the npm registry. `make mathjax`.
# Only these files: every macro the book uses is in the component (base, ams, newcommand,
# ...); a page needing an autoloaded extension (\boldsymbol, \cancel, ...) would need
# es5/input/tex/extensions/ copied too, and the browser test would report it.
set -euo pipefail
VERSION="${1:-3.2.2}"
DEST="$(cd "$(dirname "$0")/.." && pwd)/_static/mathjax"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "mathjax@$VERSION" >/dev/null && tar xzf "mathjax-$VERSION.tgz")
rm -rf "$DEST"
mkdir -p "$DEST/output/chtml/fonts"
cp "$TMP/package/LICENSE" "$DEST/LICENSE"
cp "$TMP/package/es5/tex-chtml.js" "$DEST/tex-chtml.js"
cp -r "$TMP/package/es5/output/chtml/fonts/woff-v2" "$DEST/output/chtml/fonts/woff-v2"
echo "mathjax@$VERSION (npm), es5/tex-chtml.js + output/chtml/fonts/woff-v2 + LICENSE" > "$DEST/VERSION"
du -sh "$DEST"
