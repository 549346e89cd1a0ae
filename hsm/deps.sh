# hsm/deps.sh — sourced by hsm/dev-serve.sh and tests/run.sh: installs what building and running
# sceau needs on Debian, and nothing that is already there.
#
#   sceau_packages PKG...   apt-get install the Debian packages that are missing (as root, or
#                           through sudo), plus build-essential when there is no C compiler
#   sceau_rust              a Rust toolchain through rustup when cargo is missing
#   sceau_target_dir        exports CARGO_TARGET_DIR (default ~/.cache/sceau-target): outside
#                           the clone, so that a new clone rebuilds only what changed (the
#                           bundled RocksDB alone takes about 18 minutes on 2 cores)

sceau_packages() {
  local need=() pkg sudo_cmd=""
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  command -v cc >/dev/null 2>&1 || need+=(build-essential)
  if [ ${#need[@]} -eq 0 ]; then
    echo "packages: all present ($*)"
    return 0
  fi
  echo "packages: installing ${need[*]}"
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
}

sceau_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "rust: installing a toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
}

sceau_target_dir() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sceau-target}
  echo "cargo target directory: $CARGO_TARGET_DIR"
}
