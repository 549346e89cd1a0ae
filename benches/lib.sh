# benches/lib.sh — sourced by the load scripts in benches/: building, a CA in its own SoftHSM2
# token, and the timing helpers they share.

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sceau-target}

# bench_install TOOL=PACKAGE... : apt-get install the packages of the tools that are missing.
bench_install() {
  local pair tool pkg
  for pair in "$@"; do
    tool=${pair%%=*}; pkg=${pair#*=}
    if ! command -v "$tool" >/dev/null; then
      echo "installing $pkg"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    fi
  done
}

# bench_build: the release binary and the bench helpers; sets SCEAU and TOOLS (va_tools).
bench_build() {
  echo "building (release)"
  (cd "$bench_root" && cargo build --release -q --bin sceau && cargo bench --no-run -q 2>/dev/null)
  SCEAU=$CARGO_TARGET_DIR/release/sceau
  TOOLS=$(ls -t "$CARGO_TARGET_DIR"/release/deps/va_tools-* | grep -v '\.d$' | head -1)
}

# bench_ca DIR : a SoftHSM2 token, a configuration (DIR/sceau.toml, from config/sceau.toml) and
# `sceau init`, all in DIR. Sets CONFIG and exports SOFTHSM2_CONF.
bench_ca() {
  bench_token "$1"
  "$SCEAU" -c "$CONFIG" --log warn init --without-dual-control >/dev/null
}

# bench_token DIR : bench_ca without the CA (an empty data directory).
bench_token() {
  local dir=$1
  export SOFTHSM2_CONF=$dir/softhsm2.conf
  CONFIG=$dir/sceau.toml
  rm -rf "$dir"/{tokens,data,publish}; mkdir -p "$dir/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir" > "$SOFTHSM2_CONF"
  echo "bench-pin-0000" > "$dir/pin"
  softhsm2-util --init-token --free --label sceau-bench --so-pin so-bench-0000 --pin bench-pin-0000 >/dev/null
  sed -e "s#^data_dir = .*#data_dir = \"$dir/data\"#" -e "s#^publish_dir = .*#publish_dir = \"$dir/publish\"#" \
      -e "s#^policies_dir = .*#policies_dir = \"$bench_root/policies\"#" -e 's#^token_label = .*#token_label = "sceau-bench"#' \
      -e "s#^pin_file = .*#pin_file = \"$dir/pin\"#" -e "s#^module_env = .*#module_env = { SOFTHSM2_CONF = \"$SOFTHSM2_CONF\" }#" \
      -e '/^\[ra\]/,$d' "$bench_root/config/sceau.toml" > "$CONFIG"
}

# bench_reuse_ca DIR : the CA bench_ca made earlier in DIR.
bench_reuse_ca() {
  export SOFTHSM2_CONF=$1/softhsm2.conf
  CONFIG=$1/sceau.toml
}

# bench_filled DIR WHAT FILL : the CA of DIR, made by bench_ca and filled by the function FILL
# (which reads $CONFIG) the first time only; later runs reuse it (DIR/filled marks it: delete
# DIR to start over).
bench_filled() {
  local dir=$1 what=$2 fill=$3
  mkdir -p "$dir"
  if [ -f "$dir/filled" ]; then
    bench_reuse_ca "$dir"
    return
  fi
  echo "setting up a CA and $what in $dir (once)"
  bench_ca "$dir"
  "$fill"
  touch "$dir/filled"
}

# idle_pct: the share of idle CPU over two seconds. quiet: wait (at most a minute) until the
# machine is at least 85 % idle, so that one run does not measure another's leftovers.
idle_pct() {
  local a b t=0 i
  read -ra a < /proc/stat; sleep 2; read -ra b < /proc/stat
  for i in 1 2 3 4 5 6 7 8; do t=$(( t + b[i] - a[i] )); done
  echo $(( t > 0 ? 100 * ((b[4]-a[4]) + (b[5]-a[5])) / t : 100 ))
}
quiet() {
  for _ in $(seq 1 30); do [ "$(idle_pct)" -ge 85 ] && return 0; done
  echo "  (machine busy: measuring anyway)"
}

# median V... : the median of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# bench_ra DIR : a self-signed TLS certificate for the RA listener (DIR/ra-tls.pem, .key) and
# an [ra] table without rate limits appended to $CONFIG.
bench_ra() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=sceau RA bench" \
    -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$1/ra-tls.key" -out "$1/ra-tls.pem" 2>/dev/null
  printf '\n[ra]\ntls_certificate = "%s"\ntls_private_key = "%s"\nrequests_per_minute = 1000000\nburst = 100000\n' \
    "$1/ra-tls.pem" "$1/ra-tls.key" >> "$CONFIG"
}

# ratio A B : A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
