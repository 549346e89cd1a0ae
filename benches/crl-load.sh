#!/usr/bin/env bash
# benches/crl-load.sh — a full CRL of M revoked entries (default 1,000,000), side by side in one
# run, on the same serials, reasons and dates:
#
#   sceau     `sceau crl` (no daemon running): opens the store, reads the revocation table in
#             one pass, signs once with the AC Agents key in SoftHSM2 (P-384), writes the CRL
#             (and the root's small ARL) into the publish directory. The whole process is timed.
#   openssl   `openssl ca -gencrl` from an index.txt holding the same entries, with a P-384 CA
#             key in software (its usual set-up; the single signature costs nothing here).
#
# Each is run REPS times (default 3); the script prints the median wall time and peak RSS
# (/usr/bin/time) of each and the ratios, after checking both CRLs with
# `openssl crl -CAfile` ("verify OK") and counting their entries.
#
#   benches/crl-load.sh            M=1000000 REPS=3
#
# The filled store is cached in $WORK (default ~/.cache/sceau-bench/crl-M); delete it to start
# over.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
M=${M:-1000000}; REPS=${REPS:-3}
WORK=${WORK:-$HOME/.cache/sceau-bench/crl-$M}

bench_install softhsm2-util=softhsm2 /usr/bin/time=time
bench_build
fill() { "$TOOLS" synthetic-revocations "$CONFIG" "$M" "$WORK/index.txt"; }
bench_filled "$WORK" "$M revocations" fill
certs=$WORK/data/certs

# The OpenSSL CA: same subject, its own P-384 key in software, the same index.
P=$WORK/openssl
if [ ! -f "$P/ca.pem" ]; then
  mkdir -p "$P"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout "$P/ca.key" -out "$P/ca.pem" \
    -days 3650 -subj "/C=FR/O=MINISTERE DE LA JUSTICE TEST/OU=0002 123456789/CN=AC AGENTS JUSTICE TEST" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  cat > "$P/openssl.cnf" <<CNF
[ ca ]
default_ca = bench
[ bench ]
database = $WORK/index.txt
crlnumber = $P/crlnumber
certificate = $P/ca.pem
private_key = $P/ca.key
default_md = sha384
default_crl_hours = 26
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
CNF
  printf 'unique_subject = no\n' > "$WORK/index.txt.attr"
  echo 01 > "$P/crlnumber"
fi

declare -A SECS RSS
timed() { # name command...
  local name=$1 s=() r=() i sec kb; shift
  for i in $(seq 1 "$REPS"); do
    quiet
    /usr/bin/time -o "$WORK/$name.time" -f '%e %M' "$@" >/dev/null 2>"$WORK/$name.err" \
      || { echo "$name failed:"; cat "$WORK/$name.err"; exit 1; }
    read -r sec kb < "$WORK/$name.time"
    echo "  $name run $i: ${sec} s, peak RSS $(( kb / 1024 )) MB"
    s+=("$sec"); r+=("$kb")
  done
  SECS[$name]=$(median "${s[@]}"); RSS[$name]=$(median "${r[@]}")
}
entries() { openssl crl -inform DER -in "$1" -noout -text | grep -c 'Serial Number:'; }

echo "CRL of $M revoked entries; $(nproc) cores; $REPS runs each"
timed sceau "$SCEAU" -c "$CONFIG" --log warn crl
crl=$WORK/publish/ac-agents.crl
cat "$certs/racine.pem" > "$WORK/chain.pem"
openssl crl -inform DER -in "$crl" -CAfile "$WORK/chain.pem" -CAfile "$certs/ac-agents.pem" -noout 2>&1 | grep -q 'verify OK' \
  || { echo "sceau's CRL does not verify"; exit 1; }
echo "  sceau CRL: $(stat -c%s "$crl") bytes DER, $(entries "$crl") entries, verify OK"

timed openssl openssl ca -config "$P/openssl.cnf" -gencrl -out "$P/crl.pem"
openssl crl -in "$P/crl.pem" -outform DER -out "$P/crl.der"
openssl crl -inform DER -in "$P/crl.der" -CAfile "$P/ca.pem" -noout 2>&1 | grep -q 'verify OK' \
  || { echo "openssl's CRL does not verify"; exit 1; }
echo "  openssl CRL: $(stat -c%s "$P/crl.der") bytes DER, $(entries "$P/crl.der") entries, verify OK"

echo
echo "== full CRL, $M entries, median of $REPS =="
printf '%-10s %10s %14s\n' case seconds "peak RSS MB"
for c in sceau openssl; do
  printf '%-10s %10s %14s\n' "$c" "${SECS[$c]}" "$(( RSS[$c] / 1024 ))"
done
echo "sceau / openssl: time $(ratio "${SECS[sceau]}" "${SECS[openssl]}")x, peak RSS $(ratio "${RSS[sceau]}" "${RSS[openssl]}")x"
