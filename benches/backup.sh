#!/usr/bin/env bash
# benches/backup.sh — backup and restore of a store of N certificates (default 100,000, a tenth
# revoked), side by side in one run with a baseline that checks nothing:
#
#   sceau backup    `sceau backup --out DIR` (no daemon running): RocksDB checkpoint, the CA
#                   certificates and CRLs, the manifest with the SHA-256 of every file, then the
#                   check of what was written (digests, the whole audit chain, the counts).
#   tar (baseline)  `tar -cf` of the stopped data directory: a copy, nothing checked.
#   sceau restore   `sceau restore --from DIR` into an empty data directory: the backup checked
#                   again, the HSM's keys checked, the store copied, CRL numbers raised.
#
# Each is run REPS times (default 3); the script prints the median wall time of each, the
# backup's size, and the ratios.
#
#   benches/backup.sh            N=100000 REPS=3
#
# The filled store is cached in $WORK (default ~/.cache/sceau-bench/backup-N).
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
N=${N:-100000}; REPS=${REPS:-3}
WORK=${WORK:-$HOME/.cache/sceau-bench/backup-$N}

bench_install softhsm2-util=softhsm2 /usr/bin/time=time
bench_build
fill() { "$TOOLS" fill "$CONFIG" "$N" 10 "$WORK/fill" > /dev/null; }
bench_filled "$WORK" "$N certificates" fill

# seconds COMMAND...: wall time of one run, in seconds (3 decimals).
seconds() {
  local start end
  start=$(date +%s.%N); "$@" > /dev/null; end=$(date +%s.%N)
  echo "$end - $start" | bc -l | xargs printf '%.3f'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

backups=() tars=() restores=()
for rep in $(seq "$REPS"); do
  quiet
  rm -rf "$WORK/b$rep" "$WORK/t$rep.tar"
  backups+=("$(seconds "$SCEAU" -c "$CONFIG" backup --out "$WORK/b$rep")")
  quiet
  tars+=("$(seconds tar -cf "$WORK/t$rep.tar" -C "$WORK" data)")
  # Restore into an empty data directory, then put the original back.
  mv "$WORK/data" "$WORK/data.kept"
  quiet
  restores+=("$(seconds "$SCEAU" -c "$CONFIG" restore --from "$WORK/b$rep")")
  rm -rf "$WORK/data"; mv "$WORK/data.kept" "$WORK/data"
done
certs=$(grep -o '"certificates": [0-9]*' "$WORK/b1/manifest.json" | grep -o '[0-9]*$')
size=$(du -sb "$WORK/b1" | cut -f1)
tar_size=$(stat -c %s "$WORK/t1.tar")
b=$(printf '%s\n' "${backups[@]}" | median)
t=$(printf '%s\n' "${tars[@]}" | median)
r=$(printf '%s\n' "${restores[@]}" | median)
echo "certificates in the store: $certs"
echo "sceau backup:  median ${b} s over $REPS runs (${backups[*]}); $((size / 1024 / 1024)) MiB"
echo "tar baseline:  median ${t} s (${tars[*]}); $((tar_size / 1024 / 1024)) MiB"
echo "sceau restore: median ${r} s (${restores[*]})"
echo "ratio backup/tar: $(echo "$b / $t" | bc -l | xargs printf '%.2f')"
rm -rf "$WORK"/b* "$WORK"/t*.tar
