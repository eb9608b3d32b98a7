#!/usr/bin/env bash
# Builds the Kubernetes release and etcd the cluster e2e tests run, at the
# versions pinned in tests/kube/build/{kubernetes,etcd}/go.mod, into a cache
# keyed by those pins and the Go version: a second run (or a second checkout)
# costs nothing. Prints the directory holding the binaries.
#
#   scripts/kube.sh          build if missing, print the directory
#   scripts/kube.sh --dir    print the directory only (no build)
set -euo pipefail
cd "$(dirname "$0")/.."

k8s_mod=tests/kube/build/kubernetes
etcd_mod=tests/kube/build/etcd
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$k8s_mod/go.mod")
[ -n "$version" ] || { echo "kube.sh: no k8s.io/kubernetes version in $k8s_mod/go.mod" >&2; exit 1; }
minor=${version#v1.}; minor=${minor%%.*}

# Everything that changes the binaries is in the key.
key=$( { cat "$k8s_mod/go.mod" "$k8s_mod/go.sum" "$etcd_mod/go.mod" "$etcd_mod/go.sum"
	go version; sed -n '/^# key-start/,/^# key-end/p' scripts/kube.sh; } | sha256sum | cut -c1-12)
cache=${PODVNET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podvnet}
dir=$cache/kube/$version-$key

if [ "${1:-}" = --dir ]; then echo "$dir"; exit 0; fi
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi

# One build at a time: a second caller (another checkout, a parallel make)
# waits for the first and then finds its result.
mkdir -p "$cache/kube"
exec 9>"$cache/kube/.lock"
flock 9
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi

# key-start
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
# key-end

tmp=$(mktemp -d "$cache/kube/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "kube.sh: building Kubernetes $version and etcd into $dir (cold caches: ~10-25 min)" >&2
(cd "$k8s_mod" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${k8s_cmds[@]/#/k8s.io/kubernetes/cmd/}")
(cd "$etcd_mod" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
echo "kube.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$(( $(date +%s) - start ))" > "$tmp/.build-seconds"
touch "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
