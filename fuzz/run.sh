#!/usr/bin/env bash
# fuzz/run.sh — build the fuzz targets and run each one for a while.
#
#     fuzz/run.sh [--keep] [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); every target unless some are named. Each run starts from the
# committed corpus (fuzz/corpus/TARGET) in a scratch copy; with --keep, what the run finds is
# merged back (minimised) into fuzz/corpus. A crash stops the script and leaves its input in
# fuzz/artifacts/TARGET: turn it into a regression test next to the decoder it broke.
#
# Needs the nightly toolchain (rustup) and cargo-fuzz (installed from crates.io if missing).
# The targets in daemon/ link RocksDB from the project's own build (tests/run.sh builds it) instead of
# compiling it a second time with the fuzzing flags: the targets never open a store.
set -euo pipefail
cd "$(dirname "$0")"

keep=false
if [ "${1:-}" = "--keep" ]; then keep=true; shift; fi
seconds=${1:-60}
[ $# -gt 0 ] && shift
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz/run.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

main_target=${SCEAU_TARGET_DIR:-$HOME/.cache/sceau-target}
rocksdb=$(ls -t "$main_target"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)
if [ -n "$rocksdb" ]; then
  export ROCKSDB_LIB_DIR=$(dirname "$rocksdb") ROCKSDB_STATIC=1
fi
export CARGO_TARGET_DIR=${SCEAU_FUZZ_TARGET_DIR:-$HOME/.cache/sceau-fuzz-target}

# Two fuzz packages: this folder's targets need only the pure formats (src/x509, sceau-x509);
# daemon/'s need the daemon's own code (and link RocksDB). Each target runs in its package
# (--fuzz-dir: cargo-fuzz run from a package's own folder finds the one above it).
packages=(. daemon)
declare -A package_of
for package in "${packages[@]}"; do
  while read -r target; do package_of[$target]=$package; done < <(cargo +nightly fuzz list --fuzz-dir "$package")
done
for package in "${packages[@]}"; do
  printf '%s\n' "${package_of[@]}" | grep -qx "$package" || { echo "fuzz/run.sh: no target found in $package" >&2; exit 1; }
done
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(printf '%s\n' "${!package_of[@]}" | sort)
fi
needed=()
for target in "${targets[@]}"; do
  [ -n "${package_of[$target]:-}" ] || { echo "fuzz/run.sh: no fuzz target $target" >&2; exit 1; }
  case " ${needed[*]} " in *" ${package_of[$target]} "*) ;; *) needed+=("${package_of[$target]}") ;; esac
done
for package in "${needed[@]}"; do
  cargo +nightly fuzz build --fuzz-dir "$package" --release 2>&1 | tail -3
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "$scratch/$target"
  cp -r "corpus/$target/." "$scratch/$target/"
  echo "== $target: ${seconds}s"
  status=0
  cargo +nightly fuzz run --fuzz-dir "${package_of[$target]}" --release "$target" "$scratch/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ +DONE' "$scratch/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz/run.sh: $target failed; its input is in fuzz/${package_of[$target]#./}/artifacts/$target" >&2
    exit 1
  fi
  if $keep; then
    cargo +nightly fuzz cmin --fuzz-dir "${package_of[$target]}" --release "$target" "$scratch/$target" >/dev/null 2>&1 || true
    rm -rf "corpus/$target" && cp -r "$scratch/$target" "corpus/$target"
  fi
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each: no crash"
