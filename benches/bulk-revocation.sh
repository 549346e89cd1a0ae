#!/usr/bin/env bash
# benches/bulk-revocation.sh — the cards of a closing unit revoked in one reviewed step, next to
# the same kind of revocations one request each, in one run on the same machine:
#
#   bulk     the OC proposes the bulk revocation of BULK cards' certificates (a query by holder
#            list), the AED reads the list and approves it: one atomic write, one audit event
#            per certificate, every OCSP response signed before the answer, one CRL. The target
#            is 10,000 certificates in at most 60 s, proposal to answer.
#   single   SINGLE more cards' certificates revoked by the OC one `POST /ra/v1/revocations`
#            each (OCSP signed before each answer).
#
#   benches/bulk-revocation.sh            BULK=5000 SINGLE=500 (10,000 and 1,000 certificates)
#
# Each run uses a new CA in $WORK (default ~/.cache/sceau-bench/bulk); the cards are issued
# beforehand straight through the CA (`ra_tools direct`), the daemon stopped.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
BULK=${BULK:-5000}; SINGLE=${SINGLE:-500}
WORK=${WORK:-$HOME/.cache/sceau-bench/bulk}
PORT_VA=${PORT_VA:-18894}; PORT_RA=${PORT_RA:-18895}; PORT_ADMIN=${PORT_ADMIN:-18896}

bench_install softhsm2-util=softhsm2
bench_build
RA_TOOLS=$(ls -t "$CARGO_TARGET_DIR"/release/deps/ra_tools-* | grep -v '\.d$' | head -1)
rm -rf "$WORK"; mkdir -p "$WORK"
bench_ca "$WORK"
bench_ra "$WORK"
echo "$BULK + $SINGLE cards; $(nproc) cores"
"$RA_TOOLS" direct "$CONFIG" "$((BULK + SINGLE))" > /dev/null

"$SCEAU" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_VA" --listen-ra "127.0.0.1:$PORT_RA" \
  --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/serve.out" 2> "$WORK/serve.log" & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q "sceau ready" "$WORK/serve.out" && break; sleep 0.2; done
grep -q "sceau ready" "$WORK/serve.out" || { echo "the daemon did not start:"; cat "$WORK/serve.log"; exit 1; }
quiet
out=$(SCEAU=$SCEAU "$RA_TOOLS" bulk "$CONFIG" "127.0.0.1:$PORT_RA" "$WORK/ra-tls.pem" "$BULK" "$SINGLE")
seconds=$(awk '/^bulk seconds:/ {print $3}' <<<"$out")
bulk_rate=$(awk '/^bulk certificates\/s:/ {print $3}' <<<"$out")
crls=$(awk '/^bulk crls:/ {print $3}' <<<"$out")
single_rate=$(awk '/^single certificates\/s:/ {print $3}' <<<"$out")
serial=$(awk '/^revoked serial:/ {print $3}' <<<"$out")
certs=$(dirname "$CONFIG")/data/certs
[ -d "$certs" ] || certs=$(grep '^data_dir' "$CONFIG" | cut -d'"' -f2)/certs
openssl ocsp -issuer "$certs/ac-agents.pem" -serial "0x$serial" -url "http://127.0.0.1:$PORT_VA/ocsp" \
  -CAfile "$certs/racine.pem" -VAfile "$certs/ocsp-ac-agents.pem" -no_nonce 2>&1 | grep -q ': revoked' \
  && ocsp="revoked" || ocsp="NOT revoked"

echo
echo "== revocations, $((2 * BULK)) certificates in bulk, $((2 * SINGLE)) one by one =="
printf '%-48s %10s\n' "bulk: proposal to approved answer (s)" "$seconds"
printf '%-48s %10s\n' "bulk certificates/s" "$bulk_rate"
printf '%-48s %10s\n' "one request each, certificates/s" "$single_rate"
echo "bulk / one by one: $(ratio "$bulk_rate" "$single_rate")"
echo "CRLs published for the bulk: $crls"
echo "OCSP (openssl) for a certificate of the bulk: $ocsp"
