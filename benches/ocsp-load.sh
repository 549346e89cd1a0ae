#!/usr/bin/env bash
# benches/ocsp-load.sh — OCSP under load, side by side in one run, on the same data:
#
#   bare-hyper   a hyper server answering every request with 1,163 fixed bytes (the ceiling)
#   sceau        `sceau serve`: pre-signed GET and POST, and nonce POST (signed live by the
#                P-256 responder key in SoftHSM2)
#   openssl      `openssl ocsp -multi 2`, signing every answer live with a P-256 key in software
#   cfssl        `cfssl ocspserve` (Debian golang-cfssl) serving sceau's own pre-signed responses
#
# The store holds N certificates (default 100,000) issued through sceau's real pipeline, REVOKED
# percent of them revoked (default 10). OpenSSL gets the same data as an index.txt, CFSSL as a
# responses file exported from sceau's store. Load: wrk -t2 -c$CONNS -d$DUR, keep-alive, a fixed
# request (a good certificate, SHA-1 CertID); REPS runs per case, median. Each run waits for an
# idle machine first. Every server's answer is checked with `openssl ocsp -respin` before it is
# measured, and wrk's non-2xx and socket errors are reported: a fast error is not an answer.
#
#   benches/ocsp-load.sh                 N=100000 REVOKED=10 CONNS=32 DUR=10s REPS=3
#
# Installs wrk and golang-cfssl if missing. The filled store is cached in $WORK (default
# ~/.cache/sceau-bench/ocsp-N); delete it to start over.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
N=${N:-100000}; REVOKED=${REVOKED:-10}; CONNS=${CONNS:-32}; DUR=${DUR:-10s}; REPS=${REPS:-3}
WORK=${WORK:-$HOME/.cache/sceau-bench/ocsp-$N}
PORT_BARE=${PORT_BARE:-18881}; PORT_SCEAU=${PORT_SCEAU:-18882}; PORT_ADMIN=${PORT_ADMIN:-18883}
PORT_OPENSSL=${PORT_OPENSSL:-18884}; PORT_CFSSL=${PORT_CFSSL:-18885}

bench_install wrk=wrk cfssl=golang-cfssl softhsm2-util=softhsm2
bench_build
fill() { rm -rf "$WORK/data-out"; "$TOOLS" fill "$CONFIG" "$N" "$REVOKED" "$WORK/data-out"; }
bench_filled "$WORK" "$N certificates" fill
D=$WORK/data-out

# --- helpers -------------------------------------------------------------------------------
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_http() { # url [data-file]
  for _ in $(seq 1 600); do
    if [ -n "${2:-}" ]; then curl -s -o /dev/null --max-time 2 --data-binary @"$2" -H 'Content-Type: application/ocsp-request' "$1" && return 0
    else curl -s -o /dev/null --max-time 2 "$1" && return 0; fi
    sleep 0.2
  done; echo "no answer from $1" >&2; return 1
}
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'; }
cat > "$WORK/post.lua" <<'LUA'
-- POST the DER request named by OCSP_REQ. wrk's connection probe is skipped: an empty
-- connection sends `openssl ocsp` 3.0 into an endless read loop.
function wrk.resolve(host, service) wrk.addrs = wrk.lookup(host, service) end
local path = os.getenv("OCSP_REQ")
if path and path ~= "" then
  local f = assert(io.open(path, "rb")); wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
  wrk.headers["Content-Type"] = "application/ocsp-request"
end
LUA
declare -A RPS P50 P99 ERRS
load() { # name url request-file-or-empty
  local name=$1 url=$2 req=$3 rps=() p50=() p99=() errs=0 i out
  for i in $(seq 1 "$REPS"); do
    [ -n "${BEFORE_RUN:-}" ] && "$BEFORE_RUN"
    quiet
    out=$(OCSP_REQ="$req" wrk -t2 -c"$CONNS" -d"$DUR" --latency -s "$WORK/post.lua" "$url" 2>&1)
    rps+=("$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")")
    p50+=("$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")")
    p99+=("$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")")
    errs=$(( errs + $(awk '/Non-2xx/ {n = $NF} END {print n + 0}' <<<"$out") ))
    errs=$(( errs + $(awk '/Socket errors/ {gsub(",", ""); n = $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out") ))
    echo "  $name run $i: ${rps[-1]} req/s, p50 ${p50[-1]} ms, p99 ${p99[-1]} ms"
    [ -n "${AFTER_RUN:-}" ] && "$AFTER_RUN"
  done
  RPS[$name]=$(median "${rps[@]}"); P50[$name]=$(median "${p50[@]}"); P99[$name]=$(median "${p99[@]}")
  ERRS[$name]=$errs
}
check() { # name url request expected-status [verify-args...]
  local name=$1 url=$2 req=$3 want=$4; shift 4
  curl -s --data-binary @"$req" -H 'Content-Type: application/ocsp-request' "$url" -o "$WORK/check.der"
  local text; text=$(openssl ocsp -respin "$WORK/check.der" -resp_text "$@" 2>&1 || true)
  if grep -q "Cert Status: $want" <<<"$text"; then echo "  $name answers: $want ($(stat -c%s "$WORK/check.der") bytes)"
  else echo "  $name gave no valid '$want' answer:"; tail -5 <<<"$text"; exit 1; fi
}
GOOD=$D/good.der; NONCE=$D/good-nonce.der; REVOKED_REQ=$D/revoked.der
GETPATH=$(base64 -w0 "$GOOD" | sed -e 's/+/%2B/g' -e 's#/#%2F#g' -e 's/=/%3D/g')

echo "wrk -t2 -c$CONNS -d$DUR, $REPS runs each; $N certificates ($REVOKED% revoked); $(nproc) cores"

# --- the ceiling -----------------------------------------------------------------------------
"$TOOLS" bare-hyper "127.0.0.1:$PORT_BARE" >/dev/null & PIDS+=($!)
wait_http "http://127.0.0.1:$PORT_BARE/"
echo "bare hyper (1,163 fixed bytes)"
load bare-post "http://127.0.0.1:$PORT_BARE/ocsp" "$GOOD"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

# --- sceau -----------------------------------------------------------------------------------
"$SCEAU" -c "$CONFIG" --log info serve --listen-va "127.0.0.1:$PORT_SCEAU" --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/serve.out" 2> "$WORK/serve.log" & SCEAU_PID=$!; PIDS+=($SCEAU_PID)
t0=$(date +%s.%N)
wait_http "http://127.0.0.1:$PORT_SCEAU/healthz"
echo "sceau ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
# Wait until every response is in memory: read back from the store, or signed (first start).
for _ in $(seq 1 2400); do
  grep -q "to_sign=0\|OCSP responses signed at start-up" "$WORK/serve.log" && break; sleep 0.5
done
echo "  sceau RSS with $N certificates: $(awk '/VmRSS/ {print $2" "$3}' /proc/$SCEAU_PID/status)"
check sceau "http://127.0.0.1:$PORT_SCEAU/ocsp" "$GOOD" good -CAfile "$WORK/data/certs/racine.pem" -VAfile "$WORK/data/certs/ocsp-ac-agents.pem"
check sceau "http://127.0.0.1:$PORT_SCEAU/ocsp" "$REVOKED_REQ" revoked -VAfile "$WORK/data/certs/ocsp-ac-agents.pem"
echo "sceau"
load sceau-post "http://127.0.0.1:$PORT_SCEAU/ocsp" "$GOOD"
load sceau-get "http://127.0.0.1:$PORT_SCEAU/ocsp/$GETPATH" ""
load sceau-nonce "http://127.0.0.1:$PORT_SCEAU/ocsp" "$NONCE"
curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" | grep -E '^sceau_ocsp_(responses|signatures|live)' | sed 's/^/  /'
kill "$SCEAU_PID"; wait "$SCEAU_PID" 2>/dev/null || true

# --- openssl ocsp, live P-256 signatures in software ----------------------------------------------
if [ ! -f "$WORK/peer-ocsp.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/peer-ocsp.key" -out "$WORK/peer-ocsp.pem" \
    -days 30 -subj "/CN=peer OCSP responder" -addext "extendedKeyUsage=OCSPSigning" 2>/dev/null
fi
# `openssl ocsp` is restarted for every run: a connection wrk drops at the end of a run can wedge
# it (OpenSSL 3.0 then spins on read() = 0 and never answers again).
start_openssl() {
  openssl ocsp -index "$D/index.txt" -CA "$D/issuer.pem" -rsigner "$WORK/peer-ocsp.pem" -rkey "$WORK/peer-ocsp.key" \
    -port "$PORT_OPENSSL" -multi 2 -nmin 60 > "$WORK/openssl.log" 2>&1 &
  OPENSSL_PID=$!
  sleep 0.5; wait_http "http://127.0.0.1:$PORT_OPENSSL/" "$GOOD"; sleep 0.5
}
stop_openssl() {
  kill "$OPENSSL_PID" 2>/dev/null || true
  pkill -9 -f "openssl ocsp -index $D/index.txt" 2>/dev/null || true
  wait "$OPENSSL_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT_OPENSSL/" || break; sleep 0.1; done
}
start_openssl
check openssl "http://127.0.0.1:$PORT_OPENSSL/" "$GOOD" good -noverify
stop_openssl
echo "openssl ocsp -multi 2 (P-256, software)"
BEFORE_RUN=start_openssl AFTER_RUN=stop_openssl load openssl-post "http://127.0.0.1:$PORT_OPENSSL/" "$GOOD"

# --- cfssl ocspserve, pre-signed (sceau's own responses) --------------------------------------------
[ -s "$WORK/responses.b64" ] || "$TOOLS" export-responses "$CONFIG" "$WORK/responses.b64"
cfssl ocspserve -address 127.0.0.1 -port "$PORT_CFSSL" -responses "$WORK/responses.b64" -loglevel 3 > "$WORK/cfssl.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$PORT_CFSSL/" "$GOOD"
check cfssl "http://127.0.0.1:$PORT_CFSSL/" "$GOOD" good -VAfile "$WORK/data/certs/ocsp-ac-agents.pem"
echo "cfssl ocspserve (pre-signed)"
load cfssl-post "http://127.0.0.1:$PORT_CFSSL/" "$GOOD"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

# --- summary ------------------------------------------------------------------------------------
echo
echo "== OCSP, $N certificates, wrk -t2 -c$CONNS -d$DUR, median of $REPS =="
printf '%-14s %12s %9s %9s %8s %10s %10s\n' case "req/s" "p50 ms" "p99 ms" errors "of ceiling" "x best peer"
best=$(printf '%s\n' "${RPS[openssl-post]}" "${RPS[cfssl-post]}" | sort -g | tail -1)
for c in bare-post sceau-post sceau-get sceau-nonce openssl-post cfssl-post; do
  printf '%-14s %12s %9s %9s %8s %9.0f%% %9.1fx\n' "$c" "${RPS[$c]}" "${P50[$c]}" "${P99[$c]}" "${ERRS[$c]}" \
    "$(awk -v a="${RPS[$c]}" -v b="${RPS[bare-post]}" 'BEGIN{print 100*a/b}')" \
    "$(awk -v a="${RPS[$c]}" -v b="$best" 'BEGIN{print a/b}')"
done
echo "nonce (live) vs openssl live P-256: $(awk -v a="${RPS[sceau-nonce]}" -v b="${RPS[openssl-post]}" 'BEGIN{printf "%.2f", a/b}')x"
