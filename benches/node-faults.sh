#!/usr/bin/env bash
# benches/node-faults.sh — a responder node under a wrk load while what it depends on fails,
# with every answer checked: each phase runs wrk against node A (POSTed OCSP requests for a
# valid certificate, keep-alive) for $DUR seconds and counts the answers that are not a
# 200 carrying the full signed response (a tryLater or an error is 5 to 100 bytes).
#
#   ca-killed      the CA daemon is killed (-9) two seconds in
#   engine-down    node A's nats-server is killed two seconds in and comes back after
#                  $DOWN seconds (default 60); then a revocation made while it was down must
#                  reach node A within a second of its return
#
#   benches/node-faults.sh            DUR=10 DOWN=60 CONNS=32
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
DUR=${DUR:-10}; DOWN=${DOWN:-60}; CONNS=${CONNS:-32}
WORK=${WORK:-$HOME/.cache/sceau-bench/faults}
PORT_VA=${PORT_VA:-18884}; PORT_ADMIN=${PORT_ADMIN:-18885}; PORT_NATS=${PORT_NATS:-18886}; PORT_A=${PORT_A:-18887}
NATS=${SCEAU_NATS_SERVER:-$HOME/.cache/sceau/nats/bin/nats-server}
[ -x "$NATS" ] || { echo "no nats-server: run tests/run.sh once (it installs one) or set SCEAU_NATS_SERVER"; exit 1; }

bench_install wrk=wrk softhsm2-util=softhsm2
bench_build
rm -rf "$WORK"; mkdir -p "$WORK/nats"
bench_ca "$WORK"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
start_nats() { "$NATS" -js -a 127.0.0.1 -p "$PORT_NATS" -sd "$WORK/nats" >> "$WORK/nats.log" 2>&1 & nats_pid=$!; pids+=("$nats_pid"); }
start_ca() {
  : > "$WORK/serve.out"
  "$SCEAU" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_VA" \
    --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/serve.out" 2>> "$WORK/serve.log" & ca_pid=$!; pids+=("$ca_pid")
  for _ in $(seq 1 150); do grep -q "sceau ready" "$WORK/serve.out" && return; sleep 0.2; done
  echo "the CA daemon did not start"; cat "$WORK/serve.log"; exit 1
}
start_nats
printf '\n[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "$PORT_NATS" >> "$CONFIG"
"$TOOLS" fill "$CONFIG" 100 0 "$WORK/fill" > /dev/null
start_ca
printf 'listen = "127.0.0.1:%s"\n[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "$PORT_A" "$PORT_NATS" > "$WORK/node-a.toml"
"$SCEAU" -c "$WORK/node-a.toml" --log warn node > /dev/null 2> "$WORK/node-a.log" & pids+=($!)
for _ in $(seq 1 150); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_A/readyz")" = 200 ] && break; sleep 0.2; done
for _ in $(seq 1 150); do
  known=$(curl -s "http://127.0.0.1:$PORT_A/metrics" | awk '/^sceau_ocsp_certificates / {print $2}' || true)
  [ "${known:-0}" -ge 100 ] && break; sleep 0.2
done

cat > "$WORK/check.lua" <<'LUA'
-- POSTs the request in OCSP_REQ; counts answers that are not 200 with a full signed response.
local path = os.getenv("OCSP_REQ")
local f = assert(io.open(path, "rb")); wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/ocsp-request"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0; answers = 0 end
function response(status, headers, body)
  answers = answers + 1
  if status ~= 200 or #body < 200 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total_bad, total = 0, 0
  for _, t in ipairs(threads) do total_bad = total_bad + t:get("bad"); total = total + t:get("answers") end
  io.write(string.format("checked %d answers, %d not a full signed response, %d socket errors\n",
    total, total_bad, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
phase() { # name seconds
  OCSP_REQ="$WORK/fill/good.der" wrk -t2 -c"$CONNS" -d"${2}s" -s "$WORK/check.lua" "http://127.0.0.1:$PORT_A/ocsp" 2>&1 \
    | awk -v n="$1" '/Requests\/sec:/ {r=$2} /^checked/ {c=$0} END {printf "%-14s %s (%s req/s)\n", n, c, r}'
}
echo "node A under wrk -t2 -c$CONNS; $(nproc) cores"
phase baseline "$DUR"
( sleep 2; kill -9 "$ca_pid" ) & phase ca-killed "$DUR"
start_ca
( sleep 2; kill -9 "$nats_pid" ) & phase engine-down "$((DOWN + 4))" &
load_pid=$!
sleep 4
# A revocation while the engine is down: it waits in the CA's outbox.
serial=$(awk -F'\t' '$1 == "V" {print $4; exit}' "$WORK/fill/index.txt")
"$SCEAU" -c "$CONFIG" --log warn revoke --serial "$serial" --reason key-compromise > /dev/null
issuer="$WORK/data/certs/ac-agents.pem"
openssl ocsp -issuer "$issuer" -serial "0x$serial" -no_nonce -reqout "$WORK/revoked-req.der" > /dev/null 2>&1
sleep $((DOWN - 2))
start_nats
back=$(date +%s%N)
until curl -s --data-binary @"$WORK/revoked-req.der" -H 'Content-Type: application/ocsp-request' \
        "http://127.0.0.1:$PORT_A/ocsp" -o "$WORK/after.der" \
      && openssl ocsp -respin "$WORK/after.der" -issuer "$issuer" -serial "0x$serial" -noverify 2>/dev/null | grep -q ': revoked'; do
  [ $(( ($(date +%s%N) - back) / 1000000 )) -gt 10000 ] && { echo "node A did not catch up within 10 s"; break; }
  sleep 0.05
done
echo "node A answered the revocation made while the engine was down $(( ($(date +%s%N) - back) / 1000000 )) ms after the engine came back"
wait "$load_pid"
