#!/usr/bin/env bash
# benches/sealed-ocsp.sh — OCSP GET throughput under wrk of one daemon on one store and token, in
# the three ways it can serve: sealed (the PIN split, pre-signed responses only), unsealed (the
# same process after `sceau unseal`: the validation listener switched over without closing), and
# with the PIN whole (no switch at all), side by side in one run.
#
# It uses the development CA of hsm/dev-serve.sh (run it once first: its PIN is split between
# the two development officers, whose shares and token are under var/officers). For the third
# way, the development PIN is rebuilt from the two development shares into a temporary file,
# removed at the end: a development shortcut, never a production one.
#
#   benches/sealed-ocsp.sh           RUNS=3 SECONDS_EACH=8 CONNECTIONS=32
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}; SECONDS_EACH=${SECONDS_EACH:-8}; CONNECTIONS=${CONNECTIONS:-32}
# shellcheck source=hsm/deps.sh
. hsm/deps.sh
sceau_target_dir
sceau="$CARGO_TARGET_DIR/release/sceau"
officers=var/officers
[ -d "$officers/shares" ] || { echo "run hsm/dev-serve.sh first (a development CA with a split PIN)" >&2; exit 1; }
export SOFTHSM2_CONF=$PWD/var/softhsm2.conf
scratch=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$scratch" var/sceau-whole-pin.toml' EXIT
pid=
openssl ocsp -issuer var/data/certs/ac-agents.pem -cert var/demo/auth.pem -no_nonce \
  -reqout "$scratch/req.der" >/dev/null 2>&1
encoded=$(python3 -c "import base64,sys,urllib.parse;print(urllib.parse.quote(base64.b64encode(open(sys.argv[1],'rb').read()).decode(),safe=''))" "$scratch/req.der")
url=http://127.0.0.1:8080/ocsp/$encoded
load() { # load LABEL: RUNS wrk runs, requests per second each
  local i
  for i in $(seq 1 "$RUNS"); do
    wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" "$url" | awk -v l="$1" '/Requests\/sec/ {print l, $2}'
  done
}
await() { # await PREFIX: a line of the daemon's standard output
  local _
  for _ in $(seq 1 300); do grep -q "^$1" "$scratch/out" && return; sleep 0.1; done
  echo "the daemon never said $1" >&2; exit 1
}

"$sceau" -c var/sceau-dev.toml --log warn serve > "$scratch/out" 2>"$scratch/err" &
pid=$!
await "sceau sealed"
load sealed
for officer in 1:Alex 2:Sacha; do
  IFS=: read -r n given <<<"$officer"
  share=$(grep -l "\"name\": \"$given DEVELOPPEMENT\"" "$officers"/shares/*.json)
  "$sceau" -c var/sceau-dev.toml --log warn unseal --share "$share" \
    --module /usr/lib/softhsm/libsofthsm2.so --token sceau-officers \
    --key-label "dev-officer-$n" --certificate "$officers/dev-officer-$n.pem" \
    --pin-file "$officers/pin" >/dev/null
done
await "sceau ready"
sleep 2
load unsealed
kill "$pid"; wait "$pid" 2>/dev/null || true

# The development PIN rebuilt from the two shares (Shamir over GF(256), polynomial 0x11d, as
# the blahaj crate deals them).
python3 - "$officers"/shares/*.json > "$scratch/pin" <<'PY'
import base64, json, sys
exp, log, x = [0] * 512, [0] * 256, 1
for i in range(255):
    exp[i], log[x] = x, i
    x <<= 1
    if x & 0x100:
        x ^= 0x11D
for i in range(255, 512):
    exp[i] = exp[i - 255]
mul = lambda a, b: 0 if 0 in (a, b) else exp[log[a] + log[b]]
div = lambda a, b: 0 if a == 0 else exp[(log[a] - log[b]) % 255]
shares = [base64.b64decode(json.load(open(p))["share"]) for p in sys.argv[1:]]
secret = []
for k in range(1, len(shares[0])):
    acc = 0
    for i, si in enumerate(shares):
        weight = 1
        for j, sj in enumerate(shares):
            if j != i:
                weight = mul(weight, div(sj[0], sj[0] ^ si[0]))
        acc ^= mul(weight, si[k])
    secret.append(acc)
sys.stdout.write(bytes(secret).decode())
PY
sed "s|^pin_split = true|pin_file = \"$scratch/pin\"|" var/sceau-dev.toml > var/sceau-whole-pin.toml
: > "$scratch/out"
"$sceau" -c var/sceau-whole-pin.toml --log warn serve > "$scratch/out" 2>"$scratch/err" &
pid=$!
await "sceau ready"
sleep 2
load whole-pin
