#!/usr/bin/env bash
# benches/node-warmup.sh — how long a responder node takes to warm up from the engine, and how
# much memory each entry costs it, side by side with the CA host's own start on the same data.
#
#   N=100000 benches/node-warmup.sh          (N=1000000: about 15 minutes here, most of it
#                                             issuing and pre-signing)
#
# A CA on SoftHSM2 issues N certificates (10 % revoked); its daemon pre-signs their responses
# (two per certificate: SHA-1 and SHA-256 CertIDs) and publishes every status to one
# nats-server: real responses, each signed on its own. Then, REPS times each:
#   - the CA host restarted: from the process start to its ready line, and its RSS then;
#   - a new node: from the process start to `/readyz` 200 (it has read the publisher's
#     manifest and holds every entry: from the publisher's snapshot, then what changed after
#     it from the bucket), and its RSS then; RSS per entry is the node's RSS minus
#     that of a node with no entry, over N.
# Each run uses a new CA in $WORK (default ~/.cache/sceau-bench/warmup); REUSE=1 keeps the
# previous run's CA, engine and data and only measures.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
N=${N:-100000}
REPS=${REPS:-3}
WORK=${WORK:-$HOME/.cache/sceau-bench/warmup}
PORT_VA=${PORT_VA:-18904}; PORT_ADMIN=${PORT_ADMIN:-18905}; PORT_NATS=${PORT_NATS:-18906}
PORT_NODE=${PORT_NODE:-18907}; PORT_EMPTY=${PORT_EMPTY:-18908}; PORT_NATS_EMPTY=${PORT_NATS_EMPTY:-18909}
NATS=${SCEAU_NATS_SERVER:-$HOME/.cache/sceau/nats/bin/nats-server}
[ -x "$NATS" ] || { echo "no nats-server: run tests/run.sh once (it installs one) or set SCEAU_NATS_SERVER"; exit 1; }

bench_install softhsm2-util=softhsm2 curl=curl
bench_build
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
if [ "${REUSE:-0}" = 1 ]; then
  bench_reuse_ca "$WORK"
else
  rm -rf "$WORK"; mkdir -p "$WORK/nats" "$WORK/nats-empty"
  bench_ca "$WORK"
  printf '\n[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "$PORT_NATS" >> "$CONFIG"
fi
"$NATS" -js -a 127.0.0.1 -p "$PORT_NATS" -sd "$WORK/nats" > "$WORK/nats.log" 2>&1 & pids+=($!)
"$NATS" -js -a 127.0.0.1 -p "$PORT_NATS_EMPTY" -sd "$WORK/nats-empty" > "$WORK/nats-empty.log" 2>&1 & pids+=($!)

ms() { date +%s%3N; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

# serve: starts the CA daemon; sets SERVE_PID, SERVE_MS (start to ready line), SERVE_KIB.
serve() {
  local t0; t0=$(ms)
  "$SCEAU" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_VA" \
    --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/serve.out" 2>> "$WORK/serve.log" &
  SERVE_PID=$!; pids+=("$SERVE_PID")
  for _ in $(seq 1 6000); do grep -q "sceau ready" "$WORK/serve.out" && break; sleep 0.05; done
  grep -q "sceau ready" "$WORK/serve.out" || { echo "the daemon did not start:"; tail "$WORK/serve.log"; exit 1; }
  SERVE_MS=$(( $(ms) - t0 )); SERVE_KIB=$(rss_kib "$SERVE_PID")
}

# node PORT NATS_PORT: starts a node and waits for /readyz 200 (at most 10 minutes); sets
# NODE_PID, NODE_MS, NODE_KIB.
node() {
  local t0 code=000
  printf 'listen = "127.0.0.1:%s"\n[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "$1" "$2" > "$WORK/node-$1.toml"
  t0=$(ms)
  "$SCEAU" -c "$WORK/node-$1.toml" --log warn node > /dev/null 2> "$WORK/node-$1.log" &
  NODE_PID=$!; pids+=("$NODE_PID")
  for _ in $(seq 1 60000); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz" || true)
    [ "$code" = 200 ] && break; sleep 0.01
  done
  [ "$code" = 200 ] || { echo "the node never got ready"; tail "$WORK/node-$1.log"; exit 1; }
  NODE_MS=$(( $(ms) - t0 )); NODE_KIB=$(rss_kib "$NODE_PID")
}

if [ "${REUSE:-0}" != 1 ]; then
  echo "issuing $N certificates (10 % revoked)"
  "$TOOLS" fill "$CONFIG" "$N" 10 "$WORK/fill" > /dev/null
  echo "first start: pre-signing $((2 * N)) responses and publishing every status"
  serve
  echo "  ready after $((SERVE_MS / 1000)) s"
  for _ in $(seq 1 12000); do
    full=$(metric "$PORT_ADMIN" sceau_publisher_full_publications_total)
    depth=$(metric "$PORT_ADMIN" sceau_outbox_depth)
    [ "${full:-0}" -ge 1 ] && [ "${depth:-1}" = 0 ] && break
    sleep 0.1
  done
  echo "  full publication: $(metric "$PORT_ADMIN" sceau_publisher_last_full_publication_ms) ms"
  # New nodes warm up from the publisher's snapshot, written a few seconds after.
  for _ in $(seq 1 12000); do
    [ "$(metric "$PORT_ADMIN" sceau_publisher_snapshots_total)" -ge 1 ] 2>/dev/null && break
    sleep 0.1
  done
  echo "  snapshot: $(metric "$PORT_ADMIN" sceau_publisher_last_snapshot_ms) ms"
  kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
fi

# A node with nothing to hold: the RSS of the process itself. (Its engine has no bucket: the
# node is never ready; its RSS is read after 3 s.)
printf 'listen = "127.0.0.1:%s"\n[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "$PORT_EMPTY" "$PORT_NATS_EMPTY" > "$WORK/node-empty.toml"
"$SCEAU" -c "$WORK/node-empty.toml" --log warn node > /dev/null 2> "$WORK/node-empty.log" & empty=$!
sleep 3; EMPTY_KIB=$(rss_kib "$empty"); kill "$empty"; wait "$empty" 2>/dev/null || true

ca_ms=(); ca_kib=(); node_ms=(); node_kib=()
for rep in $(seq 1 "$REPS"); do
  quiet
  serve; ca_ms+=("$SERVE_MS"); ca_kib+=("$SERVE_KIB")
  kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  quiet
  node "$PORT_NODE" "$PORT_NATS"; node_ms+=("$NODE_MS"); node_kib+=("$NODE_KIB")
  held=$(metric "$PORT_NODE" sceau_ocsp_certificates)
  from_snapshot=$(curl -s "http://127.0.0.1:$PORT_NODE/healthz" | sed -n 's/.*"from_snapshot":\([0-9]*\).*/\1/p')
  kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
  echo "run $rep: CA host ready in ${SERVE_MS} ms (RSS $((SERVE_KIB / 1024)) MiB); node ready in ${NODE_MS} ms holding ${held}, ${from_snapshot:-0} from the snapshot (RSS $((NODE_KIB / 1024)) MiB)"
done
m_ca=$(median "${ca_ms[@]}"); m_node=$(median "${node_ms[@]}")
m_ca_kib=$(median "${ca_kib[@]}"); m_node_kib=$(median "${node_kib[@]}")
echo
echo "N=$N entries, $(nproc) cores, median of $REPS"
echo "  CA host start:  ${m_ca} ms, RSS $((m_ca_kib / 1024)) MiB ($(( m_ca_kib * 1024 / N )) B per certificate)"
echo "  node warm-up:   ${m_node} ms, RSS $((m_node_kib / 1024)) MiB; $(( (m_node_kib - EMPTY_KIB) * 1024 / N )) B per entry above an empty node ($((EMPTY_KIB / 1024)) MiB)"
echo "  node / CA host: time $(ratio "$m_node" "$m_ca"), memory $(ratio "$m_node_kib" "$m_ca_kib")"
