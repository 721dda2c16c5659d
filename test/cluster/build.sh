#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kubelet (for the guest node of test/e2e/kubelet), and the
# snapshot-controller and csi-snapshotter of external-snapshotter (for the
# cluster tier's restores) from the Go module proxy (module ./tools) into a
# cache directory keyed
# by versions and a hash of tools/go.mod, and prints that bin dir on the last
# stdout line. A second run with the binaries present only prints the dir.
#
# Env: PADDOCK_CACHE (default $HOME/.cache/paddock).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=$here/tools
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet snapshot-controller csi-snapshotter)

# Versions come from go.mod (what MVS selected), so the stamps and the cache key
# can never disagree with what is actually compiled.
modver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$tools/go.mod"; }
k8s_ver=$(modver k8s.io/kubernetes)
etcd_ver=$(modver go.etcd.io/etcd/server/v3)
snap_ver=$(modver github.com/kubernetes-csi/external-snapshotter/v8)
[[ -n $k8s_ver && -n $etcd_ver && -n $snap_ver ]] || { echo "build.sh: cannot read versions from $tools/go.mod" >&2; exit 1; }

# Bump when the build flags change, so old binaries are not reused.
recipe=1
# Comment lines are left out so that documenting go.mod does not force a rebuild.
hash=$( { grep -v '^[[:space:]]*//' "$tools/go.mod"; echo "recipe=$recipe"; } | sha256sum | cut -c1-12)
cache=${PADDOCK_CACHE:-$HOME/.cache/paddock}
dir=$cache/cluster/k8s-$k8s_ver-etcd-$etcd_ver-$hash
bin=$dir/bin

have_all() { for b in "${bins[@]}"; do [[ -x $bin/$b ]] || return 1; done; }

if ! have_all; then
	mkdir -p "$dir"
	# Serialize concurrent builds (e.g. two test packages starting at once);
	# the loser finds the binaries present after the lock.
	exec 9>"$dir/.lock"
	if command -v flock >/dev/null; then flock 9; fi
	if ! have_all; then
		start=$(date +%s)
		tmp=$(mktemp -d "$dir/bin.tmp.XXXXXX")
		trap 'rm -rf "$tmp"' EXIT
		chmod 755 "$tmp" # mktemp makes it 0700
		major=${k8s_ver#v}; major=${major%%.*}
		minor=${k8s_ver#v*.}; minor=${minor%%.*}
		commit=$(sed -n 's/.*"Origin".*"Hash":"\([0-9a-f]*\)".*/\1/p' \
			"$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$k8s_ver.info" 2>/dev/null || true)
		ld="-s -w"
		for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ld+=" -X $p.gitVersion=$k8s_ver -X $p.gitMajor=$major -X $p.gitMinor=$minor"
			ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
			[[ -n $commit ]] && ld+=" -X $p.gitCommit=$commit"
		done
		ld+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_ver"
		# external-snapshotter's commands print main.version (the kube mains have none).
		ld+=" -X main.version=$snap_ver"
		echo "build.sh: building k8s $k8s_ver + etcd $etcd_ver + external-snapshotter $snap_ver into $bin (cold: ~11 min on 2 cores)" >&2
		# One invocation: packages shared by the binaries compile once.
		# CGO_ENABLED=0 gives static binaries and needs no C toolchain.
		# GOWORK=off: a go.work elsewhere in the tree must not pull this module in.
		GOWORK=off CGO_ENABLED=0 go -C "$tools" build -trimpath -ldflags="$ld" -o "$tmp/" \
			go.etcd.io/etcd/server/v3 \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler \
			k8s.io/kubernetes/cmd/kubectl \
			k8s.io/kubernetes/cmd/kubelet \
			github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller \
			github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter >&2
		# go names the etcd main after its path minus the /v3 suffix.
		mv "$tmp/server" "$tmp/etcd"
		rm -rf "$bin"
		mv "$tmp" "$bin"
		trap - EXIT
		echo "build.sh: built in $(($(date +%s) - start))s" >&2
	fi
fi
echo "$bin"
