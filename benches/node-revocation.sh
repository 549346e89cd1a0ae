#!/usr/bin/env bash
# benches/node-revocation.sh — how long after `sceau revoke` returns a responder node answers
# "revoked", over N revocations in a row, on loopback: the CA daemon on SoftHSM2 publishing to
# one nats-server with JetStream, two responder nodes (`sceau node`), measured on the second.
#
#   benches/node-revocation.sh            N=1000
#
# Each revocation goes through the admin API (what `sceau revoke` calls); the clock starts
# when its answer arrives and stops when node B's answer to a POSTed OCSP request (keep-alive)
# says "revoked". Each run uses a new CA in $WORK (default ~/.cache/sceau-bench/node).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
N=${N:-1000}
WORK=${WORK:-$HOME/.cache/sceau-bench/node}
PORT_VA=${PORT_VA:-18894}; PORT_ADMIN=${PORT_ADMIN:-18895}; PORT_NATS=${PORT_NATS:-18896}
PORT_A=${PORT_A:-18897}; PORT_B=${PORT_B:-18898}
NATS=${SCEAU_NATS_SERVER:-$HOME/.cache/sceau/nats/bin/nats-server}
[ -x "$NATS" ] || { echo "no nats-server: run tests/run.sh once (it installs one) or set SCEAU_NATS_SERVER"; exit 1; }

bench_install softhsm2-util=softhsm2
bench_build
NODE_TOOLS=$(ls -t "$CARGO_TARGET_DIR"/release/deps/node_tools-* | grep -v '\.d$' | head -1)
rm -rf "$WORK"; mkdir -p "$WORK/nats"
bench_ca "$WORK"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
"$NATS" -js -a 127.0.0.1 -p "$PORT_NATS" -sd "$WORK/nats" > "$WORK/nats.log" 2>&1 & pids+=($!)
printf '\n[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "$PORT_NATS" >> "$CONFIG"
echo "issuing $N certificates"
"$TOOLS" fill "$CONFIG" "$N" 0 "$WORK/fill" > /dev/null

"$SCEAU" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_VA" \
  --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/serve.out" 2> "$WORK/serve.log" & pids+=($!)
for _ in $(seq 1 150); do grep -q "sceau ready" "$WORK/serve.out" && break; sleep 0.2; done
grep -q "sceau ready" "$WORK/serve.out" || { echo "the daemon did not start:"; cat "$WORK/serve.log"; exit 1; }
for name in a b; do
  port=PORT_${name^^}
  printf 'listen = "127.0.0.1:%s"\n[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "${!port}" "$PORT_NATS" > "$WORK/node-$name.toml"
  "$SCEAU" -c "$WORK/node-$name.toml" --log warn node > /dev/null 2> "$WORK/node-$name.log" & pids+=($!)
done
# Ready, and caught up with every certificate the CA published at start.
for _ in $(seq 1 300); do
  published=$(curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" | awk '/^sceau_outbox_depth / {print $2}' || true)
  known=$(curl -s "http://127.0.0.1:$PORT_B/metrics" | awk '/^sceau_ocsp_certificates / {print $2}' || true)
  [ "${published:-1}" = 0 ] && [ "${known:-0}" -ge "$N" ] && break
  sleep 0.2
done
echo "node B knows ${known:-0} certificates; $(nproc) cores"
quiet
"$NODE_TOOLS" revocation-latency "$CONFIG" "127.0.0.1:$PORT_B" "$WORK/fill/index.txt" "$N"
