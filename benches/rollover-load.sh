#!/usr/bin/env bash
# benches/rollover-load.sh — OCSP under wrk load while the issuing CA key and every OCSP signer
# are rotated, to count failed or wrong answers (there must be none).
#
#   benches/rollover-load.sh            DUR=12s CONNS=16
#
# A new CA in $WORK (default ~/.cache/sceau-bench/rollover) issues one certificate; the daemon
# starts; `sceau ca rotate` makes AC Agents 2, which issues a second one. wrk then POSTs the
# two certificates' OCSP requests in turn for DUR while, three seconds in, `sceau ca rotate`
# (AC Agents 3) and then `sceau ocsp renew-signer` (a new responder for each of the three CAs,
# every response re-signed) run. Every answer is checked in wrk: HTTP 200 and a successful
# OCSPResponse; the script prints how many were not.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
DUR=${DUR:-12s}; CONNS=${CONNS:-16}
WORK=${WORK:-$HOME/.cache/sceau-bench/rollover}
PORT_VA=${PORT_VA:-18894}; PORT_ADMIN=${PORT_ADMIN:-18895}

bench_install wrk=wrk softhsm2-util=softhsm2
bench_build
rm -rf "$WORK"; mkdir -p "$WORK"
bench_ca "$WORK"
sceau() { "$SCEAU" -c "$CONFIG" --log warn "$@"; }
certs=$WORK/data/certs
holder() { # NAME: a P-256 key, a CSR and the certificate, through the daemon
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -utf8 \
    -subj "/C=FR/O=MINISTERE DE LA JUSTICE TEST/OU=0002 123456789/GN=Lea/SN=PETIT/CN=Lea PETIT" \
    -keyout "$WORK/$1.key" -out "$WORK/$1.csr" 2>/dev/null
  sceau issue --policy justice-auth --csr "$WORK/$1.csr" > "$WORK/$1.pem"
}

# The binary itself in the background (not the function: $! would be a subshell's).
"$SCEAU" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_VA" --listen-admin "127.0.0.1:$PORT_ADMIN" \
  > "$WORK/serve.out" 2> "$WORK/serve.log" & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "sceau ready" "$WORK/serve.out" && break; sleep 0.2; done
grep -q "sceau ready" "$WORK/serve.out" || { echo "the daemon did not start:"; cat "$WORK/serve.log"; exit 1; }

holder first
sceau ca rotate > /dev/null
holder second
openssl ocsp -issuer "$certs/ac-agents.pem" -cert "$WORK/first.pem" -no_nonce -reqout "$WORK/first.req" >/dev/null
openssl ocsp -issuer "$certs/ac-agents-2.pem" -cert "$WORK/second.pem" -no_nonce -reqout "$WORK/second.req" >/dev/null
for n in first:ac-agents second:ac-agents-2; do
  openssl ocsp -issuer "$certs/${n#*:}.pem" -cert "$WORK/${n%%:*}.pem" -url "http://127.0.0.1:$PORT_VA/ocsp" \
    -CAfile "$certs/racine.pem" 2>&1 | grep -q "Response verify OK" || { echo "no valid OCSP answer for ${n%%:*}"; exit 1; }
done

cat > "$WORK/two.lua" <<'LUA'
-- POSTs the two OCSP requests in turn; counts answers that are not 200 + successful OCSP.
local threads = {}
function setup(thread) table.insert(threads, thread) end
local function read(path) local f = assert(io.open(path, "rb")); local b = f:read("*a"); f:close(); return b end
function init(args)
  bodies = { read(os.getenv("REQ_A")), read(os.getenv("REQ_B")) }
  n = 0; bad = 0
end
function request()
  n = n + 1
  return wrk.format("POST", "/ocsp", { ["Content-Type"] = "application/ocsp-request" }, bodies[n % 2 + 1])
end
function response(status, headers, body)
  -- OCSPResponse: SEQUENCE (4-octet header) then responseStatus ENUMERATED 0.
  if status ~= 200 or string.sub(body, 5, 7) ~= "\10\1\0" then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("failed or wrong answers: %d of %d\n", total, summary.requests))
end
LUA
echo "wrk -t2 -c$CONNS -d$DUR; ca rotate and ocsp renew-signer at +3 s"
REQ_A=$WORK/first.req REQ_B=$WORK/second.req wrk -t2 -c"$CONNS" -d"$DUR" --latency -s "$WORK/two.lua" \
  "http://127.0.0.1:$PORT_VA" > "$WORK/wrk.txt" 2>&1 & load=$!
sleep 3
echo "rotate: $(sceau ca rotate)"
echo "renew: $(sceau ocsp renew-signer | grep -o '"responses_resigned":[0-9]*')"
wait $load
cat "$WORK/wrk.txt"
grep -q "failed or wrong answers: 0 of" "$WORK/wrk.txt"
