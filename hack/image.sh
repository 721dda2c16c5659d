#!/usr/bin/env bash
# Builds container image archives with no registry and no container engine, from Debian
# packages (apt, as test/vm/build-guest.sh does) and static Go binaries, for
# `ctr -n k8s.io images import` / `docker load`:
#
#   paddock  registry.paddock.test/paddock:e2e  $OUT/images/paddock.tar (+ packages.txt)
#            what the Dockerfile builds: the packages in build/image/packages on top of
#            what debian:bookworm-slim provides and they need (build/image/base), /paddock
#   pause    registry.paddock.test/pause:e2e    $OUT/images/pause.tar   (test/images/pause)
#   busybox  registry.paddock.test/busybox:e2e  $OUT/images/busybox.tar (busybox-static)
#
# usage: hack/image.sh [paddock|pause|busybox]...   (default: paddock)
#
# Archives are cached in $PADDOCK_CACHE/images under a hash of their inputs (the .debs, the
# binaries, the builder); a warm rerun only rebuilds the Go binaries and copies. The .debs
# are shared with the guest build in $PADDOCK_CACHE/debs. Progress goes to stderr.
# Environment: PADDOCK_CACHE, OUT (default _output), GO, VERSION, LDFLAGS (the Makefile's).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${PADDOCK_CACHE:-$HOME/.cache/paddock}
OUT=${OUT:-_output}
DEST=$OUT/images
GO=${GO:-go}
VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
LDFLAGS=${LDFLAGS:--s -w -X main.version=$VERSION}
REGISTRY=registry.paddock.test
TAG=e2e
# Debian's default PATH, as in debian:bookworm-slim.
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Of a package closure keep the listed packages and lib*, but no perl or python (as the guest).
EXCLUDE='^lib(perl|python)|-perl_'

log() { echo "image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/debs.sh
source "$ROOT/hack/lib/debs.sh"

images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(paddock)
for i in "${images[@]}"; do
	case $i in
	paddock | pause | busybox) ;;
	*) die "unknown image $i (paddock, pause, busybox)" ;;
	esac
done
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this script needs a Debian/Ubuntu host"
command -v "$GO" >/dev/null || die "$GO not found in PATH"

mkdir -p "$CACHE/images" "$CACHE/debs" "$DEST"
exec 9>"$CACHE/images/.lock"
flock 9
work=$(mktemp -d "$CACHE/images/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$EPOCHREALTIME

# Packages, one a line, # comments.
read_list() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$' || true; }

# resolve NAME PKG...: the .debs of PKG's closure (see debs_closure), one a line; reuses the
# last resolution while apt's lists are unchanged.
resolve() {
	local name=$1 debs p
	shift
	complete() {
		for p in "$@"; do
			[[ $(grep -c "^${p}_" <<<"$debs" || true) -eq 1 ]] || return 1
		done
	}
	debs=$(cat "$CACHE/images/.resolved-$(debs_lists_id image "$name" "$@")" 2>/dev/null || true)
	if ! complete "$@"; then
		debs=$(debs_closure "$EXCLUDE" "$@" | sed -E 's/%3a/:/g' | sort -u)
	fi
	if ! complete "$@"; then
		log "package lists incomplete; refreshing"
		apt_update
		debs=$(debs_closure "$EXCLUDE" "$@" | sed -E 's/%3a/:/g' | sort -u)
	fi
	complete "$@" || die "apt cannot resolve $p (for the $name image)"
	echo "$debs" >"$CACHE/images/.resolved-$(debs_lists_id image "$name" "$@")"
	echo "$debs"
}

# gobuild NAME PKG LDFLAGS: a static binary, $bin/NAME. The directory persists so that go
# build finds the binary up to date and skips the link (seconds for paddock).
bin=$CACHE/images/bin
mkdir -p "$bin"
gobuild() {
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$3" -o "$bin/$1" "$2"
}

log "building mkimage"
gobuild mkimage ./hack/mkimage "-s -w"

# key NAME FILE...: a hash of everything the archive is made from (contents, not paths).
key() {
	local name=$1
	shift
	{
		echo "$name $REGISTRY $TAG"
		cat "$bin/mkimage" "$@" hack/image.sh hack/lib/debs.sh build/image/packages build/image/base | sha256sum
	} | sha256sum | cut -c1-16
}

# publish NAME KEY: copy the cached archive to $DEST; keep the newest three of NAME.
publish() {
	local name=$1 k=$2
	cp "$CACHE/images/$name-$k.tar" "$DEST/.$name.tar.tmp"
	mv "$DEST/.$name.tar.tmp" "$DEST/$name.tar"
	touch "$CACHE/images/$name-$k.tar"
	# shellcheck disable=SC2012 # our own file names
	ls -t "$CACHE/images/$name-"*.tar | tail -n +4 | while read -r old; do
		rm -f "$old" "${old%.tar}.packages"
	done
	log "$REGISTRY/$name:$TAG -> $DEST/$name.tar ($(du -h "$DEST/$name.tar" | cut -f1))"
}

# mkimage NAME KEY ROOTFS FLAGS...: build the archive into the cache.
mkimage() {
	local name=$1 k=$2 rootfs=$3
	shift 3
	"$bin/mkimage" -rootfs "$rootfs" -tag "$REGISTRY/$name:$TAG" -out "$CACHE/images/$name-$k.tar" "$@"
}

# extract ROOTFS DEB...: unpack the packages as dpkg would (no maintainer scripts), leaving
# out what debian:bookworm-slim leaves out (docs but the copyright files, man, info, locales),
# then merge /bin, /sbin, /lib, /lib64 into /usr as on a bookworm system.
extract() {
	local r=$1 d f clash
	shift
	mkdir -p "$r"
	printf '%s\n' "$@" | xargs -P 2 -n 8 sh -c 'for d; do dpkg-deb -x "$d" "$0"; done' "$r"
	rm -rf "$r"/usr/share/{man,info,locale,lintian,linda,groff}
	if [[ -d $r/usr/share/doc ]]; then
		find "$r/usr/share/doc" ! -type d ! -name copyright -delete
		find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
	fi
	for d in bin sbin lib lib64; do
		[[ -d $r/$d && ! -L $r/$d ]] || continue
		mkdir -p "$r/usr/$d"
		clash=$(cd "$r/$d" && find . ! -type d | while read -r f; do
			if [[ -e $r/usr/$d/$f || -L $r/usr/$d/$f ]]; then echo "/$d/${f#./}"; fi
		done)
		[[ -z $clash ]] || die "merged /usr: both /$d and /usr/$d ship $clash"
		# A relative link climbing out of /$d would point elsewhere from /usr/$d.
		clash=$(find "$r/$d" -type l -lname '*../*' -printf '/%P ')
		[[ -z $clash ]] || die "merged /usr: relative links out of /$d: $clash"
		cp -a "$r/$d/." "$r/usr/$d/"
		rm -rf "${r:?}/$d"
		ln -s "usr/$d" "$r/$d"
	done
}

# etc ROOTFS: what a container's /etc needs beyond the packages' files.
etc() {
	local r=$1
	mkdir -p "$r/etc" "$r/tmp" "$r/root" "$r/run" "$r/var"
	chmod 1777 "$r/tmp"
	chmod 700 "$r/root"
	[[ -e $r/var/run ]] || ln -s ../run "$r/var/run"
	ln -sfn /proc/self/mounts "$r/etc/mtab"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$r/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$r/etc/group"
	printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' 'networks: files' \
		'protocols: files' 'services: files' 'ethers: files' 'rpc: files' >"$r/etc/nsswitch.conf"
	chmod 644 "$r/etc/passwd" "$r/etc/group" "$r/etc/nsswitch.conf"
}

# check ROOTFS CMD...: run CMD in ROOTFS; a missing library or file fails the build.
check() {
	local r=$1 o
	shift
	if ! o=$(chroot "$r" "$@" 2>&1); then
		die "sanity check failed: chroot $r $*: $o"
	fi
	log "  ok: $* ($(head -1 <<<"$o"))"
}
can_chroot() { [[ $(id -u) -eq 0 ]] && command -v chroot >/dev/null; }

build_paddock() {
	local pkgs debs files k r f
	mapfile -t pkgs < <(read_list build/image/packages; read_list build/image/base)
	[[ ${#pkgs[@]} -gt 0 ]] || die "build/image/packages lists nothing"
	debs=$(resolve paddock "${pkgs[@]}")
	# shellcheck disable=SC2086 # file names have no spaces
	debs_download "$CACHE/debs" $debs
	mapfile -t files < <(sed "s|^|$CACHE/debs/|" <<<"$debs")
	log "building paddock ($VERSION)"
	gobuild paddock ./cmd/paddock "$LDFLAGS"
	k=$(key paddock "$bin/paddock" "${files[@]}")
	if [[ ! -s $CACHE/images/paddock-$k.tar ]]; then
		log "assembling paddock $k from ${pkgs[*]} ($(wc -l <<<"$debs") packages)"
		r=$work/paddock-root
		extract "$r" "${files[@]}"
		etc "$r"
		# Debian ships these as templates its maintainer scripts copy to /etc.
		for f in nfs.conf idmapd.conf; do
			if [[ -f $r/usr/share/nfs-common/conffiles/$f && ! -e $r/etc/$f ]]; then
				install -m 644 "$r/usr/share/nfs-common/conffiles/$f" "$r/etc/$f"
			fi
		done
		install -m 755 "$bin/paddock" "$r/paddock"
		if can_chroot; then
			log "sanity checks in the rootfs"
			check "$r" /sbin/mount.nfs -V
			check "$r" /bin/mount --version
			check "$r" /bin/umount --version
			check "$r" /paddock --version
			# NFSv3 with locking: mount.nfs runs start-statd (sh, flock, cat) to start rpc.statd.
			check "$r" /bin/sh -c 'for c in start-statd rpc.statd flock cat; do command -v $c || exit 1; done; rpc.statd --version'
			for f in /sbin/mount.nfs /sbin/rpc.statd /usr/sbin/start-statd /bin/mount /bin/umount; do
				[[ -e $r$f ]] || die "sanity check failed: $f missing"
			done
		else
			log "WARNING: not root or no chroot: sanity checks skipped"
		fi
		mkimage paddock "$k" "$r" -entrypoint '["/paddock"]' -env "$PATH_ENV"
		echo "$debs" >"$CACHE/images/paddock-$k.packages"
	else
		log "cached paddock $k"
	fi
	publish paddock "$k"
	cp "$CACHE/images/paddock-$k.packages" "$DEST/packages.txt"
}

build_pause() {
	local k r
	log "building pause"
	gobuild pause ./test/images/pause "-s -w"
	k=$(key pause "$bin/pause")
	if [[ ! -s $CACHE/images/pause-$k.tar ]]; then
		r=$work/pause-root
		mkdir -p "$r"
		install -m 755 "$bin/pause" "$r/pause"
		if can_chroot; then
			check "$r" /pause -v
		fi
		# As the Kubernetes pause image: nobody's IDs, nothing else in the image.
		mkimage pause "$k" "$r" -entrypoint '["/pause"]' -user 65535:65535
	else
		log "cached pause $k"
	fi
	publish pause "$k"
}

build_busybox() {
	local debs k r a
	debs=$(resolve busybox busybox-static)
	debs=$(grep '^busybox-static_' <<<"$debs")
	debs_download "$CACHE/debs" "$debs"
	k=$(key busybox "$CACHE/debs/$debs")
	if [[ ! -s $CACHE/images/busybox-$k.tar ]]; then
		log "assembling busybox from $debs"
		r=$work/busybox-root
		mkdir -p "$work/busybox-deb" "$r/bin"
		dpkg-deb -x "$CACHE/debs/$debs" "$work/busybox-deb"
		install -m 755 "$work/busybox-deb/bin/busybox" "$r/bin/busybox"
		# As the busybox image: every applet a link in /bin.
		for a in $("$r/bin/busybox" --list); do
			[[ $a == busybox ]] || ln -s busybox "$r/bin/$a"
		done
		etc "$r"
		if can_chroot; then
			check "$r" /bin/sh -c 'echo hi >/tmp/x && cat /tmp/x && ls /bin/sh && id -u && rm /tmp/x'
		fi
		mkimage busybox "$k" "$r" -cmd '["sh"]' -env "$PATH_ENV"
	else
		log "cached busybox $k"
	fi
	publish busybox "$k"
}

for i in "${images[@]}"; do
	"build_$i"
done
log "done in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s"
