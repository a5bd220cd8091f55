#!/usr/bin/env bash
# Installs everything the tests and the demo need, idempotently: Debian packages, then the
# binaries built from the Go module proxy (cached under .cache/, git-ignored).
# Usage: install-deps.sh [all|demo]   (demo: without helm, which only the tests use)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(haproxy vsftpd openssh-server openssh-client ansible-core lftp curl iproute2 iptables
          socat openssl procps psmisc ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "install-deps: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: otherwise ansible-core drags in the 500 MB collections bundle
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the daemons it installs where it can; the lab runs its own copies.
for svc in haproxy vsftpd ssh; do
  if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done

"$root/tools/build-control-plane.sh"
# helm is for the chart's tests only: `install-deps.sh demo` leaves it out.
if [ "${1:-all}" != demo ]; then
  "$root/tools/build-helm.sh"
fi
