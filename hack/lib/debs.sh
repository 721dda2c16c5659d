# Debian packages without installing them: resolve a dependency closure with apt and
# download the .debs into a cache directory. Sourced by test/vm/build-guest.sh (the test
# guest) and hack/image.sh (the container images), which share $PADDOCK_CACHE/debs.
#
# The sourcing script defines log() and die() and runs under `set -euo pipefail`.

# need_root WHAT HOWTO: stop with a hint unless we are root.
need_root() {
	if [[ $(id -u) -ne 0 ]]; then
		log "this step needs root: $1"
		log "run once as root (e.g. 'sudo $0'), or install it yourself: $2"
		exit 1
	fi
}

# apt_update: apt-get update, at most once per run.
apt_updated=0
apt_update() {
	if [[ $apt_updated -eq 0 ]]; then
		need_root "apt-get update" "sudo apt-get update"
		log "apt-get update"
		apt-get update -qq >&2
		apt_updated=1
	fi
}

# debs_closure EXCLUDE PKG...: the .deb file names (name_version_arch.deb, as apt-get
# download names them, %3a still escaped) of PKG and their dependency closure, as if nothing
# were installed (apt with an empty dpkg status), recommends left out. Of the closure only
# PKG themselves and the shared-library packages (lib*) are kept, not the perl/python,
# adduser, debconf and friends that maintainer scripts use; names matching the extended
# regexp EXCLUDE are dropped too. Prints nothing if apt knows none of them.
debs_closure() {
	local exclude=$1 empty
	shift
	empty=$(mktemp -d)
	mkdir -p "$empty/partial"
	apt-get -qq -o Dir::State::status=/dev/null -o Dir::Cache::archives="$empty" -o Debug::NoLocking=1 \
		install --print-uris --no-install-recommends "$@" 2>/dev/null |
		awk '{print $2}' | grep -vE "$exclude" |
		grep -E "^(lib|($(IFS='|'; echo "$*"))_)" || true
	rm -rf "$empty"
}

# debs_lists_id WORDS...: an ID of the apt package lists (and WORDS), to reuse a resolution
# while the lists are unchanged: apt re-parses its lists on every call here (this image
# disables apt's binary cache), which costs seconds.
debs_lists_id() {
	{ echo "$*"; stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages* 2>/dev/null || true; } | sha256sum | cut -c1-16
}

# debs_download DIR FILE...: make sure DIR/FILE exists for every .deb file name given (as
# debs_closure prints them, %3a unescaped), downloading the missing ones with apt-get
# download. Into our own dir: this image's apt hooks delete .debs in
# /var/cache/apt/archives after every dpkg call. Concurrent callers are safe: each
# downloads into a directory of its own and renames into DIR.
debs_download() {
	local dir=$1 f b dl
	shift
	local todo=() specs=()
	mkdir -p "$dir"
	for f in "$@"; do
		[[ -s $dir/$f ]] || todo+=("$f")
	done
	if [[ ${#todo[@]} -gt 0 ]]; then
		log "downloading ${#todo[@]} packages"
		dl=$(mktemp -d "$dir/.dl.XXXXXX")
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
			mv "$f" "$dir/$b"
		done
		rm -rf "$dl"
	fi
	for f in "$@"; do
		[[ -s $dir/$f ]] || die "expected $dir/$f after download"
	done
}
