#!/usr/bin/env bash
# Build the local Kubernetes control plane from Go modules:
#   kube-apiserver, kube-controller-manager, kube-scheduler
#                                            k8s.io/kubernetes (go.mod here)
#   etcd                                     go.etcd.io/etcd/server/v3 at the version
#                                            k8s.io/kubernetes requires (go.mod here)
#   kwok                                     sigs.k8s.io/kwok (kwok/go.mod), and in kwok.d/
#                                            its CRDs, default stages and resource-usage
#                                            metrics (from its module)
#   metrics-server                           sigs.k8s.io/metrics-server (metrics-server/go.mod),
#                                            and in metrics-server.d/ its API objects
# into ${BANK_CACHE_DIR:-$HOME/.cache/bank-ml}/kube/<k8s version>/bin, outside the repo.
#
# Idempotent: exits at once when that directory already holds the binaries of these
# exact versions (its VERSIONS file says which). Atomic: builds into a temporary
# directory beside it and renames it into place, under a lock, so an interrupted or
# concurrent run never leaves a half-filled bin/. Needs only Go (>= the go lines of
# the go.mod files) and the Go module proxy; no cgo, no C compiler.
#
#   devstack/kube/build.sh          build if missing, print the bin directory last
#   devstack/kube/build.sh --print  print the bin directory only, build nothing
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
start=$SECONDS

log() { printf '[kube-build %4ds] %s\n' "$((SECONDS - start))" "$*" >&2; }

# The one place versions are pinned is the go.mod files: read them from there.
mod_version() { # mod_version GO_MOD_FILE MODULE
	awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) && /v[0-9]/ {
		for (i = 1; i <= NF; i++) if ($i ~ /^v[0-9]/) { print $i; exit } }' "$1"
}
k8s_version="$(mod_version "$here/go.mod" k8s.io/kubernetes)"
kwok_version="$(mod_version "$here/kwok/go.mod" sigs.k8s.io/kwok)"
etcd_version="$(mod_version "$here/go.mod" go.etcd.io/etcd/server/v3)"
ms_version="$(mod_version "$here/metrics-server/go.mod" sigs.k8s.io/metrics-server)"
if [[ -z $k8s_version || -z $kwok_version || -z $etcd_version || -z $ms_version ]]; then
	echo "build.sh: cannot read the pinned versions from $here/go.mod, kwok/go.mod and metrics-server/go.mod" >&2
	exit 2
fi

cache="${BANK_CACHE_DIR:-$HOME/.cache/bank-ml}/kube/$k8s_version"
bin="$cache/bin"
binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok metrics-server)
# What a bin/ directory built by this script for these versions holds in VERSIONS.
manifest="kubernetes $k8s_version
etcd $etcd_version
kwok $kwok_version
metrics-server $ms_version"

if [[ ${1-} == --print ]]; then
	echo "$bin"
	exit 0
fi

complete() { # complete DIR: true if DIR holds every binary of exactly these versions
	local b
	for b in "${binaries[@]}"; do [[ -x $1/$b ]] || return 1; done
	[[ -f $1/kwok.d/stage-crd.yaml && -f $1/kwok.d/metrics/metrics-resource.yaml ]] || return 1
	[[ -f $1/metrics-server.d/rbac.yaml ]] || return 1
	[[ "$(cat "$1/VERSIONS" 2>/dev/null)" == "$manifest" ]]
}

if complete "$bin"; then
	log "up to date: kubernetes $k8s_version, etcd $etcd_version, kwok $kwok_version, metrics-server $ms_version in $bin"
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
log "taking the build lock $cache/.lock (waits while another build of this version runs)"
flock 9
if complete "$bin"; then # another run built it while this one waited
	log "built by another run meanwhile: $bin"
	echo "$bin"
	exit 0
fi

if ! "$GO" version >/dev/null 2>&1; then
	log "no Go toolchain ($GO): install Go >= $(awk '$1 == "go" {print $2}' "$here/go.mod") or set GO=/path/to/go"
	exit 2
fi
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
chmod 755 "$tmp" # mktemp makes it 0700
trap 'rm -rf "$tmp"' EXIT

log "$("$GO" version) (GOMODCACHE=$("$GO" env GOMODCACHE), GOCACHE=$("$GO" env GOCACHE))"

# Static binaries, as the Kubernetes release builds them; no C toolchain needed.
export CGO_ENABLED=0
# -mod=readonly: go.mod and go.sum are complete (go mod tidy); a build never edits the repo.
export GOFLAGS="-mod=readonly -buildvcs=false"

# What `kubectl version` and GET /version report, set the way hack/lib/version.sh does.
# The module proxy gives no commit hash (gitCommit stays unset); the build date is the
# tag's time as the proxy reports it, so two builds of one version give one binary.
log "fetching k8s.io/kubernetes $k8s_version (go build fetches the other modules it needs)"
build_date="$(cd "$here" && "$GO" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
minor="${k8s_version#v1.}"
minor="${minor%%.*}"
version_flags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	version_flags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	version_flags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done

log "building kube-apiserver, kube-controller-manager, kube-scheduler, etcd (one go build: shared compilation; many minutes on 2 cores)"
(cd "$here" && "$GO" build -trimpath -ldflags="-s -w$version_flags" -o "$tmp/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	go.etcd.io/etcd/server/v3)
# go names the binary of a .../server/v3 main package "server".
mv "$tmp/server" "$tmp/etcd"
log "building kwok"
(cd "$here/kwok" && "$GO" build -trimpath -ldflags="-s -w" -o "$tmp/" sigs.k8s.io/kwok/cmd/kwok)
# What `metrics-server --version` reports, set as its Makefile does.
ms_flags="-X k8s.io/client-go/pkg/version.gitVersion=$ms_version"
log "building metrics-server"
(cd "$here/metrics-server" && "$GO" build -trimpath -ldflags="-s -w $ms_flags" -o "$tmp/" \
	sigs.k8s.io/metrics-server/cmd/metrics-server)

# kwok runs with --enable-crds=Stage (and, for resource metrics, Metric and
# ClusterResourceUsage): devstack/kube creates these CRDs and these stages (the defaults
# kwokctl gives kwok) in the API. Copied from the same module.
log "copying kwok's CRDs, default stages and resource-usage metrics into kwok.d/"
kwok_src="$(cd "$here/kwok" && "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
mkdir -p "$tmp/kwok.d/stages" "$tmp/kwok.d/metrics"
cp "$kwok_src/kustomize/crd/bases/kwok.x-k8s.io_stages.yaml" "$tmp/kwok.d/stage-crd.yaml"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
	pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
	cp "$kwok_src/kustomize/stage/$f" "$tmp/kwok.d/stages/"
done
for crd in metrics clusterresourceusages; do
	cp "$kwok_src/kustomize/crd/bases/kwok.x-k8s.io_$crd.yaml" "$tmp/kwok.d/metrics/$crd-crd.yaml"
done
cp "$kwok_src/kustomize/metrics/resource/metrics-resource.yaml" "$kwok_src/kustomize/metrics/usage/usage-from-annotation.yaml" \
	"$tmp/kwok.d/metrics/"
chmod -R u+w "$tmp/kwok.d" # the module cache is read-only

# metrics-server's own API objects (its RBAC, Service, APIService), which devstack/kube/metrics.py
# creates, the Service pointed at the process on this host. Copied from its module.
log "copying metrics-server's manifests into metrics-server.d/"
ms_src="$(cd "$here/metrics-server" && "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/metrics-server)"
mkdir -p "$tmp/metrics-server.d"
cp "$ms_src/manifests/base/rbac.yaml" "$ms_src/manifests/base/service.yaml" "$ms_src/manifests/base/apiservice.yaml" \
	"$tmp/metrics-server.d/"
chmod -R u+w "$tmp/metrics-server.d"

printf '%s\n' "$manifest" >"$tmp/VERSIONS"
for b in "${binaries[@]}"; do
	[[ -x $tmp/$b ]] || { log "missing after the build: $b"; exit 1; }
done
log "sizes: $(cd "$tmp" && du -sh "${binaries[@]}" | awk '{printf "%s %s  ", $2, $1}')"

# Swap the new bin/ in with two renames (an old or partial bin/ moved aside first):
# bin/ may be missing for an instant, never half-filled.
if [[ -e $bin ]]; then
	mv "$bin" "$tmp/old-bin"
fi
mv "$tmp" "$bin"
rm -rf "$bin/old-bin"
trap - EXIT
log "built kubernetes $k8s_version, etcd $etcd_version, kwok $kwok_version, metrics-server $ms_version into $bin"
echo "$bin"
