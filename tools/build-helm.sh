#!/usr/bin/env bash
# Builds helm from the Go module proxy into $CACHE/bin/helm, once per version (~3.5 min cold).
# The chart tests (test/helm) run this binary; nothing else in the project needs helm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBEFTP_CACHE:-$root/.cache}
HELM_VERSION=${HELM_VERSION:-3.16.4}
# The Kubernetes minor that helm v3.16 is built against; `helm template` and `helm lint`
# report it as .Capabilities.KubeVersion when no cluster is asked.
HELM_KUBE_MINOR=${HELM_KUBE_MINOR:-31}
bin=$CACHE/bin
mkdir -p "$bin"

if [ -x "$bin/helm" ] && [ "$(cat "$bin/.helm.version" 2>/dev/null)" = "$HELM_VERSION" ]; then
  exit 0
fi
echo "building helm v$HELM_VERSION (first time only, a few minutes)" >&2
# The upstream Makefile stamps the version the same way; without it `helm version` says v3.16.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
done
# Outside any module: `go install pkg@version` resolves helm's own go.mod, not ours.
(cd "$CACHE" && GOFLAGS= GOTOOLCHAIN=local GOBIN="$bin" CGO_ENABLED=0 \
  go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION")
echo "$HELM_VERSION" > "$bin/.helm.version"
