#!/usr/bin/env bash
# Builds the container runtime of the test node from the Go module proxy into a cache directory keyed
# by versions: containerd, containerd-shim-runc-v2 and ctr (CGO_ENABLED=0), runc (static, with seccomp:
# containerd refuses sandboxes without it) and the CNI plugins bridge, host-local and loopback. kubelet
# comes from test/cluster/build.sh (the control plane's wrapper module). Prints the bin dir on the last
# stdout line; a second run with the binaries present only prints it.
#
# runc needs cgo (libcontainer/nsenter). It links statically against libseccomp.a, taken from Debian's
# libseccomp-dev .deb (apt-get download, no root needed), with a pkg-config stub pointing at it.
#
# Env: PADDOCK_CACHE (default $HOME/.cache/paddock).
set -euo pipefail

CONTAINERD=v2.4.2
RUNC=v1.5.3
CNI=v1.10.0
# Bump when the build flags change, so old binaries are not reused.
recipe=1

cache=${PADDOCK_CACHE:-$HOME/.cache/paddock}
dir=$cache/node/containerd-$CONTAINERD-runc-$RUNC-cni-$CNI-r$recipe
bin=$dir/bin
bins=(containerd containerd-shim-runc-v2 ctr runc bridge host-local loopback)
have_all() { for b in "${bins[@]}"; do [[ -x $bin/$b ]] || return 1; done; }
log() { echo "node/build.sh: $*" >&2; }

if have_all; then echo "$bin"; exit 0; fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if have_all; then echo "$bin"; exit 0; fi

command -v gcc >/dev/null || { log "gcc is needed for runc (cgo): apt-get install gcc libc6-dev"; exit 1; }
start=$(date +%s)
tmp=$(mktemp -d "$dir/bin.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
export GOWORK=off GOFLAGS=-trimpath

log "containerd $CONTAINERD (cold: ~3 min on 2 cores)"
t=$(date +%s)
ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD"
for c in containerd containerd-shim-runc-v2 ctr; do
	CGO_ENABLED=0 GOBIN=$tmp go install -ldflags "$ld" "github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD" >&2
done
log "containerd built in $(($(date +%s) - t))s"

log "CNI plugins $CNI"
t=$(date +%s)
for p in main/bridge ipam/host-local main/loopback; do
	CGO_ENABLED=0 GOBIN=$tmp go install -ldflags "-s -w" "github.com/containernetworking/plugins/plugins/$p@$CNI" >&2
done
log "CNI plugins built in $(($(date +%s) - t))s"

log "runc $RUNC (static, seccomp)"
t=$(date +%s)
seccomp=$cache/node/libseccomp
if [[ ! -s $seccomp/usr/lib/x86_64-linux-gnu/libseccomp.a ]]; then
	dl=$(mktemp -d)
	(cd "$dl" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" libseccomp-dev >&2) ||
		{ log "apt-get download libseccomp-dev failed (stale package lists? run 'apt-get update' as root)"; exit 1; }
	rm -rf "$seccomp.tmp" && mkdir -p "$seccomp.tmp"
	dpkg-deb -x "$dl"/libseccomp-dev_*.deb "$seccomp.tmp"
	rm -rf "$dl" "$seccomp" && mv "$seccomp.tmp" "$seccomp"
fi
pc=$(mktemp -d)
cat >"$pc/libseccomp.pc" <<PC
Name: libseccomp
Description: static libseccomp from Debian's libseccomp-dev
Version: 2.5.4
Cflags: -I$seccomp/usr/include
Libs: -L$seccomp/usr/lib/x86_64-linux-gnu -lseccomp
PC
PKG_CONFIG_PATH=$pc CGO_ENABLED=1 GOBIN=$tmp go install -tags "seccomp netgo osusergo" \
	-ldflags "-s -w -X main.version=${RUNC#v} -extldflags -static" "github.com/opencontainers/runc@$RUNC" >&2
rm -rf "$pc"
log "runc built in $(($(date +%s) - t))s"

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
log "built in $(($(date +%s) - start))s"
echo "$bin"
