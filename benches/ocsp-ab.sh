#!/usr/bin/env bash
# benches/ocsp-ab.sh — two (or more) sceau binaries on the same store, interleaved: requests/s
# and the daemon's CPU time per answer for pre-signed GET and POST and live-signed nonce POST,
# with bare hyper measured in every round. CPU per answer varies less than requests/s on a
# noisy machine: it is the figure to compare between binaries.
#
#   benches/ocsp-ab.sh OLD-BINARY NEW-BINARY     ROUNDS=3 DUR=8s CASES="get post nonce"
#
# Uses the store benches/ocsp-load.sh filled (run it once first; $WORK as there). To get the
# binary of a commit: `git stash` or `git checkout REV`, `cargo build --release --bin sceau`,
# copy $CARGO_TARGET_DIR/release/sceau aside.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 SCEAU-BINARY..." >&2; exit 2; }
N=${N:-100000}; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-8s}; CASES=${CASES:-get post nonce}
WORK=${WORK:-$HOME/.cache/sceau-bench/ocsp-$N}
PORT_BARE=${PORT_BARE:-18881}; PORT_SCEAU=${PORT_SCEAU:-18882}; PORT_ADMIN=${PORT_ADMIN:-18883}
[ -f "$WORK/filled" ] || { echo "no filled store in $WORK: run benches/ocsp-load.sh first" >&2; exit 1; }
bench_install wrk=wrk
TOOLS=$(ls -t "$CARGO_TARGET_DIR"/release/deps/va_tools-* | grep -v '\.d$' | head -1)
bench_reuse_ca "$WORK"
D=$WORK/data-out
GETPATH=$(base64 -w0 "$D/good.der" | sed -e 's/+/%2B/g' -e 's#/#%2F#g' -e 's/=/%3D/g')

PIDS=()
trap 'for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null || true' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # label pid url request-file-or-empty
  local before after out answers
  before=$(cpu_ticks "$2")
  out=$(OCSP_REQ="$4" wrk -t2 -c32 -d"$DUR" -s "$WORK/post.lua" "$3" 2>&1)
  after=$(cpu_ticks "$2")
  answers=$(echo "$out" | awk '/requests in/ {print $1}')
  printf '%-28s %10s req/s %8.1f us cpu/answer %s\n' "$1" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(awk -v t=$((after - before)) -v n="$answers" -v hz="$(getconf CLK_TCK)" 'BEGIN{print t * 1e6 / hz / n}')" \
    "$(echo "$out" | grep -o 'Non-2xx.*' || true)"
}

"$TOOLS" bare-hyper "127.0.0.1:$PORT_BARE" >/dev/null & PIDS+=($!); BARE=$!
sleep 1
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  run bare-post "$BARE" "http://127.0.0.1:$PORT_BARE/ocsp" "$D/good.der"
  # The order alternates between rounds: whichever binary runs second in a round was seen
  # slower by up to 8 % (both orders, perf profiles alike), a bias the median would keep.
  order=("$@")
  if [ $((round % 2)) -eq 0 ]; then
    order=(); for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done
  fi
  for binary in "${order[@]}"; do
    "$binary" -c "$CONFIG" --log warn serve --listen-va "127.0.0.1:$PORT_SCEAU" \
      --listen-admin "127.0.0.1:$PORT_ADMIN" > "$WORK/ab.out" 2> "$WORK/ab.log" & pid=$!
    for _ in $(seq 1 100); do grep -q "sceau ready" "$WORK/ab.out" && break; sleep 0.2; done
    sleep 2 # the responses are read back from the store
    for case in $CASES; do
      case $case in
        get) run "$(basename "$binary")-get" "$pid" "http://127.0.0.1:$PORT_SCEAU/ocsp/$GETPATH" "" ;;
        post) run "$(basename "$binary")-post" "$pid" "http://127.0.0.1:$PORT_SCEAU/ocsp" "$D/good.der" ;;
        nonce) run "$(basename "$binary")-nonce" "$pid" "http://127.0.0.1:$PORT_SCEAU/ocsp" "$D/good-nonce.der" ;;
      esac
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
