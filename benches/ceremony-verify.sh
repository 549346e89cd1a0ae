#!/usr/bin/env bash
# benches/ceremony-verify.sh — `sceau ceremony verify` over N transcripts (default 100), offline,
# against the audit key's anchor, side by side in one run with a baseline that only starts the
# same binary (`sceau --version`).
#
# The transcripts are real: a CA made under dual control on a SoftHSM2 token (three officers with
# OpenSSL-made keys, `sceau ceremony propose init`, every officer approving with `openssl cms`),
# then N-1 responder renewals, each proposed and approved by two officers and run by `sceau
# ceremony run`. Each verification checks the audit key's signature, the proposal, every CMS
# approval against the officers' certificates, the quorum and the persons.
#
#   benches/ceremony-verify.sh           N=100 REPS=5
#
# The CA and its transcripts are cached in $WORK (default ~/.cache/sceau-bench/ceremonies-N).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
N=${N:-100}; REPS=${REPS:-5}
WORK=${WORK:-$HOME/.cache/sceau-bench/ceremonies-$N}

bench_install softhsm2-util=softhsm2
bench_build

approve() { # approve PROPOSAL OFFICER
  openssl cms -sign -binary -nodetach -outform DER -md sha256 -in "$1" \
    -signer "$WORK/$2.pem" -inkey "$WORK/$2.key" -out "${1%.json}-$2.der"
}

ceremonies() {
  bench_token "$WORK"
  for officer in alice:Alice:DURAND bruno:Bruno:PETIT chloe:Chloe:MOREAU; do
    IFS=: read -r name given surname <<<"$officer"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
      -keyout "$WORK/$name.key" -out "$WORK/$name.pem" \
      -subj "/GN=$given/SN=$surname/CN=$given $surname" \
      -addext keyUsage=critical,nonRepudiation 2>/dev/null
  done
  mkdir -p "$WORK/proposals"
  local p=$WORK/proposals/init.json
  "$SCEAU" -c "$CONFIG" --log warn ceremony propose init --quorum 2 --officer "$WORK/alice.pem" \
    --officer "$WORK/bruno.pem" --officer "$WORK/chloe.pem" --out "$p" >/dev/null
  for o in alice bruno chloe; do approve "$p" "$o"; done
  "$SCEAU" -c "$CONFIG" --log warn ceremony run "$p" --approval "${p%.json}-alice.der" \
    --approval "${p%.json}-bruno.der" --approval "${p%.json}-chloe.der" >/dev/null
  for i in $(seq 2 "$N"); do
    p=$WORK/proposals/renew-$i.json
    "$SCEAU" -c "$CONFIG" --log warn ceremony propose renew-responders --out "$p" >/dev/null
    approve "$p" alice; approve "$p" chloe
    "$SCEAU" -c "$CONFIG" --log warn ceremony run "$p" --approval "${p%.json}-alice.der" \
      --approval "${p%.json}-chloe.der" >/dev/null
  done
  touch "$WORK/filled"
}

mkdir -p "$WORK"
if [ -f "$WORK/filled" ]; then
  bench_reuse_ca "$WORK"
else
  echo "making a CA and $N ceremonies in $WORK (once)"
  ceremonies
fi
mapfile -t transcripts < <(ls "$WORK"/data/ceremonies/*.json)
[ "${#transcripts[@]}" -eq "$N" ] || { echo "expected $N transcripts, found ${#transcripts[@]}"; exit 1; }
anchor=$WORK/data/certs/audit-key.pem

# seconds COMMAND...: wall time of one run, in seconds.
seconds() {
  local start end
  start=$(date +%s.%N); "$@" >/dev/null || { echo "failed: $*" >&2; exit 1; }; end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN{printf "%.3f", b-a}'
}
verify=(); start=()
for _ in $(seq "$REPS"); do
  verify+=("$(seconds "$SCEAU" ceremony verify --anchor "$anchor" "${transcripts[@]}")")
  start+=("$(seconds "$SCEAU" --version)")
done
v=$(median "${verify[@]}"); s=$(median "${start[@]}")
echo "sceau ceremony verify, $N transcripts: median $v s over $REPS runs (${verify[*]})"
echo "baseline, sceau --version:             median $s s (${start[*]})"
echo "per transcript: $(awk -v v="$v" -v s="$s" -v n="$N" 'BEGIN{printf "%.2f", (v-s)*1000/n}') ms"
