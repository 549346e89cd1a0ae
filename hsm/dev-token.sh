#!/usr/bin/env bash
# hsm/dev-token.sh — create (idempotently) the development SoftHSM2 token that
# config/sceau.toml points at, under var/ in the working tree:
#
#   var/softhsm2.conf   SoftHSM2 configuration (token directory var/tokens), rewritten each run
#   var/tokens/         the token files
#   var/pin             the user PIN (development only: a production PIN never sits in the tree)
#   var/so-pin          the security officer PIN
#   var/ra-tls.pem/.key the RA listener's self-signed TLS certificate (development only)
#
# Installs softhsm2 (apt) if it is missing. Safe to run again: an existing token is kept.
# Usage: hsm/dev-token.sh [LABEL]   (default label: sceau-dev)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
var="$root/var"
label=${1:-sceau-dev}

if ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "dev-token: installing softhsm2" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq softhsm2 >/dev/null
fi

umask 077
mkdir -p "$var/tokens"
cat > "$var/softhsm2.conf" <<CONF
# Written by hsm/dev-token.sh: the development token of sceau.
directories.tokendir = $var/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$var/softhsm2.conf"

random_pin() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
[ -s "$var/pin" ] || random_pin > "$var/pin"
[ -s "$var/so-pin" ] || random_pin > "$var/so-pin"

if softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label:[[:space:]]+$label[[:space:]]*$"; then
  echo "dev-token: token \"$label\" already exists in $var/tokens"
else
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$var/so-pin")" --pin "$(cat "$var/pin")" >/dev/null
  echo "dev-token: created token \"$label\" in $var/tokens (PIN in $var/pin)"
fi

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
