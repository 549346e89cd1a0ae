#!/usr/bin/env bash
# hsm/dev-token.sh — create (idempotently) a development token under var/ in the working tree.
#
# Usage: hsm/dev-token.sh [--token softhsm2|nss|kryoptic] [LABEL]   (default: softhsm2, sceau-dev)
#
# softhsm2 (the default) makes the token config/sceau.toml points at:
#   var/softhsm2.conf   SoftHSM2 configuration (token directory var/tokens), rewritten each run
#   var/tokens/         the token files
# nss makes NSS softokn's key database var/nssdb (certutil -N); kryoptic builds kryoptic's
# module (hsm/kryoptic.sh) and makes its SQLite token var/kryoptic/token.sqlite, declared in
# var/kryoptic/kryoptic.conf and initialised with OpenSC's pkcs11-tool. Each of those two
# writes var/sceau-TOKEN.toml: config/sceau.toml with its [hsm] module lines pointing at that
# token (relative paths resolve alike from config/ and var/); `hsm/dev-serve.sh --token TOKEN`
# serves with it. README.md (HSM tokens) says what differs between the three.
# Every token kind also gets:
#   var/pin             the user PIN (development only: a production PIN never sits in the tree)
#   var/so-pin          the security officer PIN
#   var/ra-tls.pem/.key the RA listener's self-signed TLS certificate (development only)
#
# Installs what the token needs (apt) if it is missing. Safe to run again: an existing token is
# kept.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
var="$root/var"
token=softhsm2
if [ "${1:-}" = "--token" ]; then
  token=${2:?"dev-token: --token needs softhsm2, nss or kryoptic"}
  shift 2
fi
label=${1:-sceau-dev}
# shellcheck source=hsm/deps.sh
. "$root/hsm/deps.sh"

umask 077
mkdir -p "$var"
random_pin() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
[ -s "$var/pin" ] || random_pin > "$var/pin"
[ -s "$var/so-pin" ] || random_pin > "$var/so-pin"

# The RA listener's TLS certificate (config/sceau.toml [ra]): self-signed, for 127.0.0.1 and
# localhost, development only.
if [ ! -s "$var/ra-tls.pem" ] || [ ! -s "$var/ra-tls.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=sceau RA (development)" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -addext "extendedKeyUsage=serverAuth" -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$var/ra-tls.key" -out "$var/ra-tls.pem" 2>/dev/null
  echo "dev-token: RA TLS certificate in $var/ra-tls.pem"
fi

# var/sceau-TOKEN.toml: config/sceau.toml with the [hsm] table's module lines replaced by $1,
# and its own data and publish folders (var/data-TOKEN, var/publish-TOKEN): a CA's store goes
# with the token that holds its keys.
write_config() {
  local lines=$1 out="$var/sceau-$token.toml"
  HSM_LINES="$lines" TOKEN="$token" awk '
    /^(data_dir|publish_dir) = "\.\.\/var\/[a-z]+"$/ { sub(/"$/, "-" ENVIRON["TOKEN"] "\"") }
    /^\[/ { in_hsm = ($0 == "[hsm]") }
    in_hsm && /^(module|token_label|module_env|module_parameters) *=/ {
      if (!done) { print ENVIRON["HSM_LINES"]; done = 1 }
      next
    }
    { print }
  ' "$root/config/sceau.toml" > "$out"
  echo "dev-token: $out serves from it (hsm/dev-serve.sh --token $token)"
}

case "$token" in
  softhsm2) ;;
  nss)
    sceau_packages libnss3 libnss3-tools
    if [ -f "$var/nssdb/key4.db" ]; then
      echo "dev-token: NSS database already in $var/nssdb"
    else
      mkdir -p "$var/nssdb"
      certutil -N -d "sql:$var/nssdb" -f "$var/pin"
      echo "dev-token: created the NSS database $var/nssdb (PIN in $var/pin)"
    fi
    write_config "module = \"/usr/lib/x86_64-linux-gnu/libsoftokn3.so\"
token_label = \"$label\"
module_parameters = \"configdir='sql:$var/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags= dbTokenDescription='$label'\""
    exit 0
    ;;
  kryoptic)
    sceau_packages libssl-dev libsqlite3-dev libclang-dev pkg-config opensc
    module=$("$root/hsm/kryoptic.sh")
    mkdir -p "$var/kryoptic"
    printf '[[slots]]\nslot = 1\ndbtype = "sqlite"\ndbargs = "%s"\n' "$var/kryoptic/token.sqlite" \
      > "$var/kryoptic/kryoptic.conf"
    export KRYOPTIC_CONF="$var/kryoptic/kryoptic.conf"
    if pkcs11-tool --module "$module" -L 2>/dev/null | grep -Eq "token label +: $label\$"; then
      echo "dev-token: kryoptic token \"$label\" already exists in $var/kryoptic"
    else
      pkcs11-tool --module "$module" --init-token --label "$label" --so-pin "$(cat "$var/so-pin")" >/dev/null
      pkcs11-tool --module "$module" --token-label "$label" --login --login-type so \
        --so-pin "$(cat "$var/so-pin")" --init-pin --pin "$(cat "$var/pin")" >/dev/null
      echo "dev-token: created kryoptic token \"$label\" in $var/kryoptic (PIN in $var/pin)"
    fi
    write_config "module = \"$module\"
token_label = \"$label\"
module_parameters = \"kryoptic_conf=$var/kryoptic/kryoptic.conf\""
    exit 0
    ;;
  *)
    echo "dev-token: --token $token: expected softhsm2, nss or kryoptic" >&2
    exit 64
    ;;
esac

sceau_packages softhsm2
mkdir -p "$var/tokens"
cat > "$var/softhsm2.conf" <<CONF
# Written by hsm/dev-token.sh: the development token of sceau.
directories.tokendir = $var/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$var/softhsm2.conf"

if softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label:[[:space:]]+$label[[:space:]]*$"; then
  echo "dev-token: token \"$label\" already exists in $var/tokens"
else
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$var/so-pin")" --pin "$(cat "$var/pin")" >/dev/null
  echo "dev-token: created token \"$label\" in $var/tokens (PIN in $var/pin)"
fi
