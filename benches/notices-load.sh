#!/usr/bin/env bash
# benches/notices-load.sh — RA approvals with notices to dead receivers, side by side with none,
# in one run on the same machine: `ra_tools load` (CLIENTS clients submit as an OC and approve
# as an AED, N cards in all) against
#
#   none   a daemon without [notices];
#   dead   the same with [notices]: two webhooks and an SMTP relay on ports nobody listens on,
#          every scan each second (each card's request, its expiry: notices to deliver, each
#          delivery failing and retried).
#
# The p99 of an approval (submit + approve, per card) must not change: notices are derived
# and delivered by a task of their own, off the RA's path.
#
#   benches/notices-load.sh            N=400 CLIENTS=4
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
N=${N:-400}; CLIENTS=${CLIENTS:-4}
WORK=${WORK:-$HOME/.cache/sceau-bench/notices}
PORT_VA=${PORT_VA:-18897}; PORT_RA=${PORT_RA:-18898}; PORT_ADMIN=${PORT_ADMIN:-18899}

bench_install softhsm2-util=softhsm2
bench_build
RA_TOOLS=$(ls -t "$CARGO_TARGET_DIR"/release/deps/ra_tools-* | grep -v '\.d$' | head -1)
dead_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() {
  local name=$1
  rm -rf "$WORK/$name"; mkdir -p "$WORK/$name"
  bench_ca "$WORK/$name"
  bench_ra "$WORK/$name"
  if [ "$name" = dead ]; then
    printf '\n[notices]\nwebhooks = ["http://127.0.0.1:%s/a", "http://127.0.0.1:%s/b"]\nsmtp_relay = "127.0.0.1:%s"\nsmtp_to = ["aed@justice.test"]\nstill_waiting_hours = 0\nexpiry_days = [1100]\nscan_every_seconds = 1\n' \
      "$(dead_port)" "$(dead_port)" "$(dead_port)" >> "$CONFIG"
  fi
  "$SCEAU" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_VA" --listen-ra "127.0.0.1:$PORT_RA" \
    --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/$name/serve.out" 2> "$WORK/$name/serve.log" & pid=$!
  for _ in $(seq 1 100); do grep -q "sceau ready" "$WORK/$name/serve.out" && break; sleep 0.2; done
  grep -q "sceau ready" "$WORK/$name/serve.out" || { echo "the daemon did not start:"; cat "$WORK/$name/serve.log"; exit 1; }
  quiet
  "$RA_TOOLS" load "$CONFIG" "127.0.0.1:$PORT_RA" "$WORK/$name/ra-tls.pem" "$N" "$CLIENTS" 2> "$WORK/$name/load.err" \
    | awk '/^cards\/s:/ {print $2}' > "$WORK/$name/rate"
  kill $pid; wait $pid 2>/dev/null || true
  grep -o 'p50 [0-9.]* ms, p99 [0-9.]* ms' "$WORK/$name/load.err"
}

echo "$N cards, $CLIENTS clients; $(nproc) cores"
none=$(run none); dead=$(run dead)
p99() { awk '{print $5}' <<<"$1"; }
echo
echo "== submit + approve per card, $N cards =="
printf '%-36s %s  (%s cards/s)\n' "no notices" "$none" "$(cat "$WORK/none/rate")"
printf '%-36s %s  (%s cards/s)\n' "notices to dead receivers" "$dead" "$(cat "$WORK/dead/rate")"
echo "p99 dead / none: $(ratio "$(p99 "$dead")" "$(p99 "$none")")"
echo "notice deliveries that failed (dead receivers, retried): $(grep -c 'a notice was not delivered' "$WORK/dead/serve.log" || true)"
