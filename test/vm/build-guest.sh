#!/usr/bin/env bash
# Builds the Paddock test guest (vmlinux + initrd.img) from Debian packages.
# Idempotent: outputs live in $PADDOCK_CACHE/vm/<key>/, where key hashes the
# resolved package versions and the guest sources, so a rebuild happens only
# when one of those changes. Progress goes to stderr; the last line of stdout
# is the output directory.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PADDOCK_CACHE:-$HOME/.cache/paddock}
# Userspace packages of the guest; their library dependencies are added below.
# xfsprogs: the guest's XFS export with project quotas (/srv/nfs/q; mkfs.xfs,
# xfs_quota, xfs_io).
PKGS=(busybox-static dash coreutils findutils grep sed nfs-common nfs-kernel-server rpcbind util-linux mount netbase xfsprogs)

log() { echo "build-guest: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# need_root, apt_update, debs_closure, debs_lists_id, debs_download
# shellcheck source=../../hack/lib/debs.sh
source "$HERE/../../hack/lib/debs.sh"

# --- host tools ---
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v xz >/dev/null || missing+=(xz-utils)
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this script needs a Debian/Ubuntu host"
command -v go >/dev/null || die "go not found in PATH"
if [[ ${#missing[@]} -gt 0 ]]; then
	need_root "installing ${missing[*]}" "sudo apt-get install -y --no-install-recommends ${missing[*]}"
	apt_update
	log "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$CACHE/vm" "$CACHE/debs"
# Several test processes may start guests at once: build under one lock.
exec 9>"$CACHE/vm/.lock"
flock 9

# --- resolve package versions (no download) ---
# apt with an empty dpkg status computes the full dependency closure as if
# nothing were installed. Of that closure the guest needs only the shared
# libraries (lib*), not perl/python/adduser and friends that maintainer
# scripts use; mkguest fails loudly if a needed library is missing. libicu
# (36 MB, needed only by xfs_scrub, which the guest does not need) is left
# out too: mkguest then skips xfs_scrub as a command whose libraries are
# not staged.
resolve() {
	local kpkg
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[[ -n $kpkg ]] || return 1
	{
		debs_closure '^lib(perl|python|icu)' "${PKGS[@]}"
		apt-get -qq -o Debug::NoLocking=1 download --print-uris "$kpkg" 2>/dev/null | awk '{print $2}'
	} | sed -E 's/%3a/:/g' | sort -u
}

# Reuse the last resolution while the package lists are unchanged.
lists_id=$(debs_lists_id "${PKGS[@]}")
resolved="$CACHE/vm/.resolved-$lists_id"
if [[ -s $resolved ]]; then
	debs=$(cat "$resolved")
else
	debs=$(resolve || true)
fi
if [[ $(grep -c '^linux-image' <<<"$debs" || true) -ne 1 || $(grep -c '^nfs-kernel-server_' <<<"$debs" || true) -ne 1 ]]; then
	log "package lists incomplete; refreshing"
	apt_update
	debs=$(resolve) || die "cannot resolve the guest packages with apt"
fi
[[ $(grep -c '^linux-image' <<<"$debs") -eq 1 ]] || die "no linux-image-*-amd64 package found"
lists_id=$(debs_lists_id "${PKGS[@]}")
echo "$debs" >"$CACHE/vm/.resolved-$lists_id"

key=$(
	{
		echo "$debs"
		cd "$HERE"
		sha256sum build-guest.sh ../../hack/lib/debs.sh guest/* agent/*.go internal/mkguest/*.go
	} | sha256sum | cut -c1-16
)
out="$CACHE/vm/$key"
if [[ -s $out/vmlinux && -s $out/initrd.img ]]; then
	log "cached guest $key"
	echo "$out"
	exit 0
fi

# --- download ---
# shellcheck disable=SC2086 # file names have no spaces
debs_download "$CACHE/debs" $debs

# --- assemble ---
log "building guest $key"
work=$(mktemp -d "$CACHE/vm/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root" "$work/out" "$work/src/agent" "$work/src/mkguest"
kdeb=$(grep '^linux-image' <<<"$debs")
# Only the kernel and the module subtrees the guest can need. The extracted
# tree is kept across guest rebuilds (decompressing the 70 MB package takes a
# while), in a directory keyed by this list so that a longer list extracts anew.
kpatterns=(
	'./boot/vmlinuz-*' './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/net/*'
	'./lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/crypto/*'
	'./lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/net/*'
	'./lib/modules/*/kernel/drivers/char/*' './lib/modules/*/kernel/drivers/block/loop.ko'
)
kdir="$CACHE/kernel/${kdeb%.deb}-$(printf '%s\n' "${kpatterns[@]}" | sha256sum | cut -c1-8)"
if [[ ! -d $kdir ]]; then
	log "extracting $kdeb"
	mkdir -p "$CACHE/kernel"
	ktmp=$(mktemp -d "$CACHE/kernel/.x.XXXXXX")
	dpkg-deb --fsys-tarfile "$CACHE/debs/$kdeb" | tar -x -C "$ktmp" --wildcards "${kpatterns[@]}"
	mv "$ktmp" "$kdir"
fi
grep -v '^linux-image' <<<"$debs" | sed "s|^|$CACHE/debs/|" | xargs -P 4 -n 8 sh -c 'for d; do dpkg-deb -x "$d" "$0"; done' "$work/root"

# Build the agent and the assembler from copies in a scratch module, so the
# guest build does not depend on the state of the repository's go.mod.
cp "$HERE"/agent/*.go "$work/src/agent/"
cp "$HERE"/internal/mkguest/*.go "$work/src/mkguest/"
printf 'module paddockguest\n\ngo 1.22\n' >"$work/src/go.mod"
(
	cd "$work/src"
	export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
	go build -trimpath -ldflags='-s -w' -o "$work/paddock-agent" ./agent
	go build -o "$work/mkguest" ./mkguest
) >&2
"$work/mkguest" -root "$work/root" -kroot "$kdir" -agent "$work/paddock-agent" \
	-guest "$HERE/guest" -out "$work/out" >&2
printf '%s\n' $debs >"$work/out/packages.txt"

rm -rf "$out"
mv "$work/out" "$out"
log "built $out ($(du -sh "$out/initrd.img" | cut -f1) initrd, $(du -sh "$out/vmlinux" | cut -f1) vmlinux)"
echo "$out"
