#!/usr/bin/env bash
# Builds etcd and kube-apiserver from the Go module proxy into $CACHE/bin, once.
# Both upstream modules use relative replace directives, so each is built through a small
# throwaway wrapper module. The wrappers are never tidied: tidy would ask the proxy for
# test-only modules it does not serve.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBEFTP_CACHE:-$root/.cache}
KUBE_VERSION=${KUBE_VERSION:-1.32.13}
ETCD_VERSION=${ETCD_VERSION:-3.5.21}
bin=$CACHE/bin
mkdir -p "$bin" "$CACHE/build/etcd" "$CACHE/build/kube-apiserver"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

stamp() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }

if ! stamp etcd "$ETCD_VERSION"; then
  echo "building etcd v$ETCD_VERSION (first time only, a few minutes)" >&2
  cd "$CACHE/build/etcd"
  cat > go.mod <<MOD
module etcdbuild

go 1.23.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v$ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 v$ETCD_VERSION
	go.etcd.io/etcd/client/v2 => go.etcd.io/etcd/client/v2 v2.305.${ETCD_VERSION##*.}
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 v$ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 v$ETCD_VERSION
	go.etcd.io/etcd/raft/v3 => go.etcd.io/etcd/raft/v3 v$ETCD_VERSION
)

// reflect2 v1.0.1 (what etcd 3.5 resolves by itself) is memory-unsafe on Go >= 1.18
require (
	github.com/json-iterator/go v1.1.12 // indirect
	github.com/modern-go/reflect2 v1.0.2 // indirect
)
MOD
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
  echo "$ETCD_VERSION" > "$bin/.etcd.version"
fi

if ! stamp kube-apiserver "$KUBE_VERSION"; then
  echo "building kube-apiserver v$KUBE_VERSION (first time only, a few minutes)" >&2
  cd "$CACHE/build/kube-apiserver"
  staging="v0.${KUBE_VERSION#1.}"
  modfile=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    printf 'module kasbuild\n\ngo 1.23.0\n\ngodebug default=go1.23\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$KUBE_VERSION"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$modfile" | awk -v v="$staging" '{print "\t"$1" => "$1" "v}'
    printf ')\n'
  } > go.mod
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION"
  ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  go build -trimpath -ldflags "$ldflags" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  echo "$KUBE_VERSION" > "$bin/.kube-apiserver.version"
fi
