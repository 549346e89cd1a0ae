#!/usr/bin/env bash
# hsm/rollover-demo.sh — key rollovers against the development daemon, and every object they
# produce collected for independent tools. Run hsm/dev-serve.sh in another shell first (it
# must have started from an empty var/: `rm -rf var`), then:
#
#     hsm/rollover-demo.sh [OUT]        (default OUT: var/rollover)
#
# 1. issues card "one" under AC Agents (OpenSSL-made P-256 requests);
# 2. `sceau ca rotate`: AC Agents 2, a new key certified by the root; issues card "two";
#    revokes both cards;
# 3. `sceau ca rotate --root`: a new root and the two link certificates; `sceau ca rotate`
#    again: AC Agents 3 under the new root; issues card "three"; `sceau crl`;
# 4. fetches every CRL and ARL from the daemon and one OCSP response per issuing CA.
#
# OUT gets one directory per root generation (root, issuing CAs, responders, holder
# certificates, CRLs, ARL, OCSP responses: `root-1`, `root-2`) and one per link certificate
# with the root that signed it (`link-new-with-old`, `link-old-with-new`), ready for a
# conformance tool that finds issuers by subject name.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-var/rollover}
target=${CARGO_TARGET_DIR:-$HOME/.cache/sceau-target}
sceau=("$target/release/sceau" -c config/sceau.toml --log warn)
va=http://127.0.0.1:8080
org="/C=FR/O=MINISTERE DE LA JUSTICE TEST/OU=0002 123456789"
work=var/rollover-work
rm -rf "$out" "$work"
mkdir -p "$out" "$work"

card() { # NAME GIVEN-NAME SURNAME
  mkdir -p "$work/$1"
  for use in auth sign; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -utf8 \
      -subj "$org/GN=$2/SN=$3/CN=$2 $3" -keyout "$work/$1/$use.key" -out "$work/$1/$use.csr" 2>/dev/null
  done
  "${sceau[@]}" card issue --holder "holder-$1" --card "card-$1" \
    --auth-csr "$work/$1/auth.csr" --sign-csr "$work/$1/sign.csr" --out-dir "$work/$1" >/dev/null
  echo "card $1 issued"
}
ocsp() { # ISSUER-PEM CERTIFICATE OUT
  openssl ocsp -issuer "$1" -cert "$2" -url "$va/ocsp" -respout "$3" -noverify >/dev/null
}

card one Lea PETIT
"${sceau[@]}" ca rotate
card two Paul MARTIN
"${sceau[@]}" revoke --card card-one --reason key-compromise >/dev/null
"${sceau[@]}" revoke --card card-two --reason cessation-of-operation >/dev/null
"${sceau[@]}" ca rotate --root
"${sceau[@]}" ca rotate
card three Anne ROUX
"${sceau[@]}" crl >/dev/null
certs="$work/certs"
"${sceau[@]}" ca export --out "$certs" >/dev/null

r1="$out/root-1" r2="$out/root-2"
mkdir -p "$r1" "$r2" "$out/link-new-with-old" "$out/link-old-with-new"
cp "$certs"/{racine,ac-agents,ac-agents-2,ocsp-ac-agents,ocsp-ac-agents-2}.pem "$r1/"
cp "$certs"/{racine-2,ac-agents-3,ocsp-ac-agents-3}.pem "$r2/"
for crl in racine ac-agents ac-agents-2; do curl -sf "$va/crl/$crl.crl" -o "$r1/$crl.crl"; done
for crl in racine-2 ac-agents-3; do curl -sf "$va/crl/$crl.crl" -o "$r2/$crl.crl"; done
for use in auth sign; do
  cp "$work/one/$use.pem" "$r1/holder-one-$use.pem"
  cp "$work/two/$use.pem" "$r1/holder-two-$use.pem"
  cp "$work/three/$use.pem" "$r2/holder-three-$use.pem"
done
ocsp "$certs/ac-agents.pem" "$work/one/auth.pem" "$r1/one-auth-revoked.ocsp"
ocsp "$certs/ac-agents-2.pem" "$work/two/sign.pem" "$r1/two-sign-revoked.ocsp"
ocsp "$certs/ac-agents-3.pem" "$work/three/auth.pem" "$r2/three-auth-good.ocsp"
cp "$certs"/{racine,racine-2-signed-by-racine}.pem "$out/link-new-with-old/"
cp "$certs"/{racine-2,racine-signed-by-racine-2}.pem "$out/link-old-with-new/"
echo "objects in $out: $(find "$out" -type f | wc -l) files"
ls "$out"
