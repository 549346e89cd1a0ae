#!/usr/bin/env bash
# hsm/kryoptic.sh — build kryoptic's PKCS#11 module once and print its path.
#
# kryoptic (https://github.com/latchset/kryoptic, crates.io, Apache-2.0) is a PKCS#11 software
# token in Rust on OpenSSL 3. sceau's suite runs on it as a third token, beside SoftHSM2 and
# NSS softokn (README.md, HSM tokens). Its source comes from crates.io (`cargo fetch` of a
# throw-away manifest), is built with its own lock file as the PKCS#11 shared library
# (features `minimal`: SQLite storage, ECDSA, RSA, AES, hashes; `dynamic`: Debian's OpenSSL
# 3.0, no vendored copy) and copied to ~/.cache/sceau/kryoptic (SCEAU_KRYOPTIC_DIR). Building
# needs libssl-dev, libsqlite3-dev, libclang-dev and pkg-config (tests/run.sh and
# hsm/dev-token.sh install them); about 3 minutes on 2 cores, then nothing until the version
# below changes.
set -euo pipefail
version=1.5.4
out=${SCEAU_KRYOPTIC_DIR:-$HOME/.cache/sceau/kryoptic}
library="$out/libkryoptic_pkcs11.so"
if [ -s "$library" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
  echo "$library"
  exit 0
fi
mkdir -p "$out"
manifest_dir=$(mktemp -d)
trap 'rm -rf "$manifest_dir"' EXIT
mkdir -p "$manifest_dir/src"
: > "$manifest_dir/src/lib.rs"
cat > "$manifest_dir/Cargo.toml" <<TOML
[package]
name = "sceau-kryoptic-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
kryoptic = { version = "=$version", default-features = false }
TOML
cargo fetch -q --manifest-path "$manifest_dir/Cargo.toml" >&2
source_dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"kryoptic-$version" | head -n 1)
echo "kryoptic: building $version from $source_dir" >&2
CARGO_TARGET_DIR="$out/target" cargo build -q --release --locked \
  --manifest-path "$source_dir/Cargo.toml" \
  --no-default-features --features minimal,kryoptic-lib/dynamic >&2
cp "$out/target/release/libkryoptic_pkcs11.so" "$library.tmp"
mv "$library.tmp" "$library"
echo "$version" > "$out/version"
echo "$library"
