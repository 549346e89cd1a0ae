#!/usr/bin/env bash
# benches/ra-load.sh — card issuance through the registration authority, end to end over mutual
# TLS, next to the issuance core's raw card rate, in one run on the same machine:
#
#   direct   `CertificateAuthority::issue_card` called in-process by two threads (no HTTP, no
#            RA): two HSM signatures, intents, storage and audit per card.
#   ra       `sceau serve` with its RA listener: CLIENTS concurrent clients submit (as an OC) and
#            approve (as a different AED) N card requests, each request CMS-signed by the
#            operator's key and sent over keep-alive mutual-TLS connections; every approval
#            answers 200 with both certificates (OCSP responses signed before the answer).
#
#   benches/ra-load.sh            N=1000 CLIENTS=4
#
# Each run uses a new CA in $WORK (default ~/.cache/sceau-bench/ra).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
N=${N:-1000}; CLIENTS=${CLIENTS:-4}
WORK=${WORK:-$HOME/.cache/sceau-bench/ra}
PORT_VA=${PORT_VA:-18891}; PORT_RA=${PORT_RA:-18892}; PORT_ADMIN=${PORT_ADMIN:-18893}

bench_install softhsm2-util=softhsm2
bench_build
RA_TOOLS=$(ls -t "$CARGO_TARGET_DIR"/release/deps/ra_tools-* | grep -v '\.d$' | head -1)
rm -rf "$WORK"; mkdir -p "$WORK"
bench_ca "$WORK"
bench_ra "$WORK"
echo "$N cards; $(nproc) cores; issuing CA key $(grep '^issuing = ' "$CONFIG" | grep -o 'p384\|rsa3072\|p256')"

quiet
direct=$("$RA_TOOLS" direct "$CONFIG" "$N" | awk '/^cards\/s:/ {print $2}')

"$SCEAU" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_VA" --listen-ra "127.0.0.1:$PORT_RA" \
  --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/serve.out" 2> "$WORK/serve.log" & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "sceau ready" "$WORK/serve.out" && break; sleep 0.2; done
grep -q "sceau ready" "$WORK/serve.out" || { echo "the daemon did not start:"; cat "$WORK/serve.log"; exit 1; }
quiet
ra=$("$RA_TOOLS" load "$CONFIG" "127.0.0.1:$PORT_RA" "$WORK/ra-tls.pem" "$N" "$CLIENTS" | awk '/^cards\/s:/ {print $2}')

echo
echo "== cards per second, $N cards =="
printf '%-40s %10s\n' "direct issue_card (2 threads)" "$direct"
printf '%-40s %10s\n' "RA submit + approve ($CLIENTS clients, mTLS)" "$ra"
echo "RA / direct: $(ratio "$ra" "$direct")"
