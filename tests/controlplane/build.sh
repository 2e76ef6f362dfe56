#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok, helm) from the Go module proxy into a cache directory
# outside the repository, keyed by the versions in versions.env and the wrapper
# modules' go.mod/go.sum. Prints the bin directory as its last line.
#
# A cache directory is used only when its `.complete` marker exists; a build that
# was interrupted leaves no marker and is redone from scratch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${SANDBOX_CP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandbox-operator/controlplane}
key=$(cat "$here/versions.env" "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/etcd/main.go" | sha256sum | cut -c1-12)
dest="$cache_root/k8s-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}-${key}"

if [[ -f "$dest/.complete" ]]; then
  echo "$dest/bin"
  exit 0
fi

log() { printf '[controlplane build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
if [[ -d "$dest" ]]; then
  log "found an unfinished build in $dest: removing it and building again"
  rm -rf "$dest"
fi
mkdir -p "$dest/bin"
start=$(date +%s)
log "building into $dest (a first build takes 20-40 minutes on 2 cores; later runs reuse it)"

export CGO_ENABLED=0
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
ver_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ver_flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ver_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build_k8s() {
  local cmd=$1 t0
  t0=$(date +%s)
  log "go build $cmd ..."
  (cd "$here/k8s" && go build -trimpath -ldflags "-s -w $ver_flags" -o "$dest/bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
  mv "$dest/bin/$cmd.tmp" "$dest/bin/$cmd"
  log "$cmd done in $(( $(date +%s) - t0 ))s"
}

log "go build etcd ..."
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$dest/bin/etcd" .)
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  build_k8s "$cmd"
done
log "go install kwok $KWOK_VERSION ..."
GOBIN="$dest/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
log "go install helm $HELM_VERSION ..."
GOBIN="$dest/bin" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

# KWOK's default stages ship inside its module; copy them next to the binaries.
kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
mkdir -p "$dest/kwok-stages"
cp -r "$kwok_dir/kustomize/stage/." "$dest/kwok-stages/" 2>/dev/null || true
chmod -R u+w "$dest/kwok-stages"

touch "$dest/.complete"
log "control plane built in $(( $(date +%s) - start ))s"
echo "$dest/bin"
