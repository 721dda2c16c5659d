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
PKGS=(busybox-static dash coreutils findutils grep sed nfs-common nfs-kernel-server rpcbind util-linux mount netbase)

log() { echo "build-guest: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
	if [[ $(id -u) -ne 0 ]]; then
		log "this step needs root: $1"
		log "run once as root (e.g. 'sudo $0'), or install it yourself: $2"
		exit 1
	fi
}

apt_updated=0
apt_update() {
	if [[ $apt_updated -eq 0 ]]; then
		need_root "apt-get update" "sudo apt-get update"
		log "apt-get update"
		apt-get update -qq >&2
		apt_updated=1
	fi
}

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
# scripts use; mkguest fails loudly if a needed library is missing.
resolve() {
	local empty
	empty=$(mktemp -d)
	mkdir -p "$empty/partial"
	local kpkg
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[[ -n $kpkg ]] || { rm -rf "$empty"; return 1; }
	{
		apt-get -qq -o Dir::State::status=/dev/null -o Dir::Cache::archives="$empty" -o Debug::NoLocking=1 \
			install --print-uris --no-install-recommends "${PKGS[@]}" 2>/dev/null |
			awk '{print $2}' | grep -vE '^lib(perl|python)' |
			grep -E "^(lib|($(IFS='|'; echo "${PKGS[*]}"))_)" || true
		apt-get -qq -o Debug::NoLocking=1 download --print-uris "$kpkg" 2>/dev/null | awk '{print $2}'
	} | sed -E 's/%3a/:/g' | sort -u
	rm -rf "$empty"
}

# apt re-parses its lists on every call here (this image disables apt's
# binary cache), which costs seconds; reuse the last resolution while the
# package lists are unchanged.
lists_id=$( { echo "${PKGS[*]}"; stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages* 2>/dev/null || true; } | sha256sum | cut -c1-16)
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
lists_id=$( { echo "${PKGS[*]}"; stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages* 2>/dev/null || true; } | sha256sum | cut -c1-16)
echo "$debs" >"$CACHE/vm/.resolved-$lists_id"

key=$(
	{
		echo "$debs"
		cd "$HERE"
		sha256sum build-guest.sh guest/* agent/*.go internal/mkguest/*.go
	} | sha256sum | cut -c1-16
)
out="$CACHE/vm/$key"
if [[ -s $out/vmlinux && -s $out/initrd.img ]]; then
	log "cached guest $key"
	echo "$out"
	exit 0
fi

# --- download (into our own dir: this image's apt hooks delete .debs in
# /var/cache/apt/archives after every dpkg call) ---
todo=()
for f in $debs; do
	[[ -s $CACHE/debs/$f ]] || todo+=("$f")
done
if [[ ${#todo[@]} -gt 0 ]]; then
	log "downloading ${#todo[@]} packages"
	dl=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
	specs=()
	for f in "${todo[@]}"; do
		# name_version_arch.deb -> name=version
		specs+=("$(sed -E 's/^([^_]+)_([^_]+)_.*/\1=\2/' <<<"$f")")
	done
	if ! (cd "$dl" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" "${specs[@]}" >&2); then
		rm -rf "$dl"
		die "apt-get download failed (stale package lists? run 'apt-get update' as root)"
	fi
	for f in "$dl"/*.deb; do
		b=$(basename "$f" | sed -E 's/%3a/:/g')
		mv "$f" "$CACHE/debs/$b"
	done
	rm -rf "$dl"
fi
for f in $debs; do
	[[ -s $CACHE/debs/$f ]] || die "expected $CACHE/debs/$f after download"
done

# --- assemble ---
log "building guest $key"
work=$(mktemp -d "$CACHE/vm/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root" "$work/out" "$work/src/agent" "$work/src/mkguest"
kdeb=$(grep '^linux-image' <<<"$debs")
kdir="$CACHE/kernel/${kdeb%.deb}"
if [[ ! -d $kdir ]]; then
	# Only the kernel and the module subtrees the guest can need; kept across
	# guest rebuilds because decompressing the 70 MB package takes a while.
	log "extracting $kdeb"
	mkdir -p "$CACHE/kernel"
	ktmp=$(mktemp -d "$CACHE/kernel/.x.XXXXXX")
	dpkg-deb --fsys-tarfile "$CACHE/debs/$kdeb" | tar -x -C "$ktmp" --wildcards \
		'./boot/vmlinuz-*' './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/net/*' \
		'./lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/crypto/*' \
		'./lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/net/*' \
		'./lib/modules/*/kernel/drivers/char/*'
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
