// Command mkguest assembles the Paddock test guest from extracted Debian
// packages: an uncompressed vmlinux (for PVH boot) and an uncompressed newc
// cpio initrd holding busybox, util-linux, nfs-utils, rpcbind, xfsprogs, their
// shared library closure, the NFS and XFS kernel modules, the guest init and
// the agent.
//
// It is written in Go (stdlib only) so the build needs no cpio, kmod,
// binutils or python on the host: only dpkg-deb, xz and Go.
package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Binaries taken from the staging tree (paths as shipped by the packages).
// Their shared-library closure is added automatically.
var binaries = []string{
	"bin/busybox", "bin/dash",
	// util-linux: the real mount/umount so that mount -t nfs goes through
	// mount.nfs like on a node, and the tools tests and mount-utils use.
	"bin/mount", "bin/umount", "bin/findmnt", "bin/mountpoint", "bin/lsblk",
	"usr/bin/flock", "usr/bin/setpriv", "usr/bin/nsenter", "usr/bin/unshare",
	"usr/bin/setsid", "usr/bin/fallocate", "usr/bin/getopt", "usr/bin/lslocks",
	"sbin/losetup", "sbin/blkid",
	// nfs-common / nfs-kernel-server / rpcbind
	"sbin/mount.nfs", "sbin/rpc.statd", "sbin/sm-notify", "sbin/rpcbind",
	"sbin/showmount", "sbin/nfsdcltrack",
	"usr/sbin/exportfs", "usr/sbin/rpc.mountd", "usr/sbin/rpc.nfsd",
	"usr/sbin/nfsdcld", "usr/sbin/nfsconf", "usr/sbin/nfsidmap",
	"usr/sbin/nfsstat", "usr/sbin/rpcdebug", "usr/sbin/rpcinfo",
	"usr/sbin/rpc.idmapd",
	// xfsprogs: the XFS export with project quotas (/srv/nfs/q) and the tools
	// tests cross-check quotas with.
	"sbin/mkfs.xfs", "usr/sbin/xfs_quota", "usr/sbin/xfs_io",
}

// Symlinks and data files copied as they are.
var extras = []string{
	"sbin/mount.nfs4", "sbin/umount.nfs", "sbin/umount.nfs4",
	"etc/netconfig", "etc/rpc", "etc/services", "etc/protocols", "etc/ethertypes",
}

// Kernel modules the guest needs; their dependencies are added from .modinfo.
var wantModules = []string{
	"virtio_pci", "virtio_net", "9pnet_virtio", "9p",
	"sunrpc", "lockd", "nfsd", "nfs", "nfsv3", "nfsv4",
	// The kubelet tier's node: pod networking (CNI bridge) and containerd's overlayfs snapshotter.
	"bridge", "veth", "overlay",
	// The XFS export with project quotas: a loop device over a sparse file in
	// a tmpfs. libcrc32c (xfs depends on it) only soft-depends on a crc32c
	// implementation, which the guest cannot modprobe: load it first.
	"loop", "crc32c_generic", "xfs",
}

// Module parameters. lockd's defaults make v3 locks wait up to 50 s after
// server start; tests cannot afford that.
var moduleParams = map[string]string{
	"lockd": "nlm_timeout=3 nlm_grace_period=1",
}

func main() {
	root := flag.String("root", "", "staging dir with the userspace packages extracted")
	kroot := flag.String("kroot", "", "staging dir with the kernel package extracted")
	agent := flag.String("agent", "", "guest agent binary")
	guest := flag.String("guest", "", "dir with init and guest scripts")
	out := flag.String("out", "", "output dir")
	flag.Parse()
	if *root == "" || *kroot == "" || *agent == "" || *guest == "" || *out == "" {
		log.Fatal("mkguest: -root, -kroot, -agent, -guest and -out are required")
	}
	if err := run(*root, *kroot, *agent, *guest, *out); err != nil {
		log.Fatalf("mkguest: %v", err)
	}
}

func run(root, kroot, agent, guest, out string) error {
	kver, err := kernelVersion(kroot)
	if err != nil {
		return err
	}
	if err := extractVmlinux(filepath.Join(kroot, "boot", "vmlinuz-"+kver), filepath.Join(out, "vmlinux")); err != nil {
		return err
	}
	w := newImage()
	// Merged-/usr layout, as on current Debian nodes.
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		w.symlink(d, "usr/"+d)
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "mnt", "host", "srv", "etc/paddock", "var/lib/nfs", "root", "home"} {
		w.dir(d, 0o755)
	}
	w.node("dev/console", 0o600|0o020000, 5, 1)
	w.node("dev/null", 0o666|0o020000, 1, 3)

	r := &resolver{root: root, img: w, seen: map[string]bool{}}
	for _, b := range binaries {
		if err := r.addELF(b); err != nil {
			return err
		}
	}
	// Everything else the packages ship in the command directories, so the
	// guest looks like a node (GNU coreutils, findutils, util-linux ...)
	// rather than busybox, whose applets run busybox mount internally.
	if err := r.addAllCommands(); err != nil {
		return err
	}
	for _, e := range extras {
		if err := r.addPath(e); err != nil {
			return err
		}
	}
	// Debian ships nfs.conf as a template and writes /etc/nfs.conf in postinst.
	if b, err := os.ReadFile(filepath.Join(root, "usr/share/nfs-common/conffiles/nfs.conf")); err == nil {
		w.file("etc/nfs.conf", 0o644, b)
	}
	// /bin/sh is dash, as on a Debian node: busybox sh would run its own
	// builtin mount instead of util-linux mount.
	w.symlink("usr/bin/sh", "dash")
	if err := r.addBusyboxApplets(); err != nil {
		return err
	}

	order, err := addModules(w, kroot, kver)
	if err != nil {
		return err
	}
	var ml bytes.Buffer
	for _, m := range order {
		fmt.Fprintf(&ml, "%s %s\n", m.path, moduleParams[m.name])
	}
	w.file("etc/paddock/modules", 0o644, ml.Bytes())

	ab, err := os.ReadFile(agent)
	if err != nil {
		return err
	}
	w.file("usr/local/bin/paddock-agent", 0o755, ab)
	gi, err := os.ReadFile(filepath.Join(guest, "init"))
	if err != nil {
		return err
	}
	w.file("init", 0o755, gi)
	for _, s := range []string{"nfs-server-start", "nfs-server-stop"} {
		b, err := os.ReadFile(filepath.Join(guest, s))
		if err != nil {
			return err
		}
		w.file("usr/local/bin/"+s, 0o755, b)
	}

	f, err := os.Create(filepath.Join(out, "initrd.img"))
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := w.writeTo(bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "manifest.txt"), []byte(w.manifest()+"kernel "+kver+"\n"), 0o644)
}

func kernelVersion(kroot string) (string, error) {
	ents, err := os.ReadDir(filepath.Join(kroot, "lib/modules"))
	if err != nil {
		return "", err
	}
	if len(ents) != 1 {
		return "", fmt.Errorf("expected one kernel in %s, found %d", kroot, len(ents))
	}
	return ents[0].Name(), nil
}

// extractVmlinux finds the xz stream inside the bzImage and decompresses it
// with xz(1); PVH boot of the raw ELF skips the in-kernel decompressor.
func extractVmlinux(vmlinuz, dst string) error {
	b, err := os.ReadFile(vmlinuz)
	if err != nil {
		return err
	}
	magic := []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	for off := 0; ; {
		i := bytes.Index(b[off:], magic)
		if i < 0 {
			return fmt.Errorf("no xz-compressed ELF kernel found in %s", vmlinuz)
		}
		off += i
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(b[off:])
		var o bytes.Buffer
		cmd.Stdout = &o
		if err := cmd.Run(); err == nil && bytes.HasPrefix(o.Bytes(), []byte("\x7fELF")) {
			return os.WriteFile(dst, o.Bytes(), 0o644)
		}
		off++
	}
}

// resolver copies files from the staging tree into the image, mapping
// /bin, /sbin, /lib onto /usr and following symlinks and DT_NEEDED.
type resolver struct {
	root string
	img  *image
	seen map[string]bool
}

func usrPath(p string) string {
	for _, d := range []string{"bin/", "sbin/", "lib/", "lib64/"} {
		if strings.HasPrefix(p, d) {
			return "usr/" + p
		}
	}
	return p
}

// addPath adds one staged path (file or symlink chain) and returns the
// final regular file's staged path.
func (r *resolver) addPath(p string) error {
	_, err := r.add(p)
	return err
}

func (r *resolver) add(p string) (string, error) {
	for hops := 0; hops < 20; hops++ {
		full := filepath.Join(r.root, p)
		st, err := os.Lstat(full)
		if err != nil {
			return "", fmt.Errorf("%s is not in the staged packages: %w", p, err)
		}
		dst := usrPath(p)
		if st.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(full)
			if err != nil {
				return "", err
			}
			if !r.seen[dst] {
				r.seen[dst] = true
				r.img.symlink(dst, t)
			}
			if path.IsAbs(t) {
				p = strings.TrimPrefix(path.Clean(t), "/")
			} else {
				p = path.Join(path.Dir(p), t)
			}
			// Resolve the target through the merged-/usr view too.
			if _, err := os.Lstat(filepath.Join(r.root, p)); err != nil && strings.HasPrefix(p, "usr/") {
				p = strings.TrimPrefix(p, "usr/")
			}
			continue
		}
		if !r.seen[dst] {
			r.seen[dst] = true
			b, err := os.ReadFile(full)
			if err != nil {
				return "", err
			}
			r.img.file(dst, uint32(st.Mode().Perm()), b)
		}
		return p, nil
	}
	return "", fmt.Errorf("symlink loop at %s", p)
}

var libDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"}

func (r *resolver) addELF(p string) error {
	real, err := r.add(p)
	if err != nil {
		return err
	}
	if r.seen["elf:"+real] {
		return nil
	}
	r.seen["elf:"+real] = true
	f, err := elf.Open(filepath.Join(r.root, real))
	if err != nil {
		return fmt.Errorf("%s: %w", real, err)
	}
	defer f.Close()
	if interp := f.Section(".interp"); interp != nil {
		b, err := interp.Data()
		if err != nil {
			return err
		}
		ip := strings.TrimPrefix(strings.TrimRight(string(b), "\x00"), "/")
		if err := r.addELF(ip); err != nil {
			return err
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", real, err)
	}
	for _, l := range libs {
		found := ""
		for _, d := range libDirs {
			if _, err := os.Lstat(filepath.Join(r.root, d, l)); err == nil {
				found = path.Join(d, l)
				break
			}
		}
		if found == "" {
			return fmt.Errorf("%s needs %s, which no staged package provides", real, l)
		}
		if err := r.addELF(found); err != nil {
			return err
		}
	}
	return nil
}

func (r *resolver) addAllCommands() error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin"} {
		ents, err := os.ReadDir(filepath.Join(r.root, d))
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := path.Join(d, e.Name())
			if r.seen[usrPath(p)] || e.IsDir() {
				continue
			}
			ok, err := r.usable(p, 0)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := r.addELFOrFile(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// usable reports whether p (after symlinks) is an ELF file whose libraries
// are all staged, or a script for /bin/sh.
func (r *resolver) usable(p string, depth int) (bool, error) {
	if depth > 20 {
		return false, nil
	}
	full := filepath.Join(r.root, p)
	st, err := os.Lstat(full)
	if err != nil {
		return false, nil
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		t, _ := os.Readlink(full)
		if path.IsAbs(t) {
			t = strings.TrimPrefix(path.Clean(t), "/")
		} else {
			t = path.Join(path.Dir(p), t)
		}
		if _, err := os.Lstat(filepath.Join(r.root, t)); err != nil && strings.HasPrefix(t, "usr/") {
			t = strings.TrimPrefix(t, "usr/")
		}
		return r.usable(t, depth+1)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return false, nil
	}
	b := make([]byte, 64)
	fh, err := os.Open(full)
	if err != nil {
		return false, err
	}
	n, _ := fh.Read(b)
	fh.Close()
	b = b[:n]
	if bytes.HasPrefix(b, []byte("#!")) {
		line, _, _ := strings.Cut(string(b[2:]), "\n")
		interp := strings.Fields(line)
		return len(interp) > 0 && (interp[0] == "/bin/sh" || interp[0] == "/usr/bin/sh"), nil
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return false, nil
	}
	return r.libsStaged(p, map[string]bool{}), nil
}

func (r *resolver) libsStaged(p string, seen map[string]bool) bool {
	if seen[p] {
		return true
	}
	seen[p] = true
	f, err := elf.Open(filepath.Join(r.root, p))
	if err != nil {
		return false
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return false
	}
	for _, l := range libs {
		found := false
		for _, d := range libDirs {
			if _, err := os.Stat(filepath.Join(r.root, d, l)); err == nil {
				if !r.libsStaged(path.Join(d, l), seen) {
					return false
				}
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (r *resolver) addELFOrFile(p string) error {
	real, err := r.add(p)
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(r.root, real)); err == nil && bytes.HasPrefix(b, []byte("\x7fELF")) {
		return r.addELF(real)
	}
	return nil
}

// addBusyboxApplets links every busybox applet that no real binary provides.
func (r *resolver) addBusyboxApplets() error {
	out, err := exec.Command(filepath.Join(r.root, "bin/busybox"), "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, name := range strings.Fields(string(out)) {
		if name == "sh" {
			continue
		}
		if r.img.has("usr/bin/"+name) || r.img.has("usr/sbin/"+name) {
			continue
		}
		r.img.symlink("usr/bin/"+name, "busybox")
	}
	return nil
}

type module struct {
	name, path string
	deps       []string
}

func addModules(w *image, kroot, kver string) ([]module, error) {
	base := filepath.Join(kroot, "lib/modules", kver)
	all := map[string]*module{}
	err := filepath.WalkDir(filepath.Join(base, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return err
		}
		name := strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")
		rel, _ := filepath.Rel(kroot, p)
		all[name] = &module{name: name, path: "/" + filepath.ToSlash(rel)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string) error
	visit = func(n string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", n)
		case 2:
			return nil
		}
		m := all[n]
		if m == nil {
			return fmt.Errorf("module %s not found in the staged kernel (extract more of the tree?)", n)
		}
		state[n] = 1
		deps, err := moduleDepends(filepath.Join(kroot, m.path))
		if err != nil {
			return err
		}
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, *m)
		b, err := os.ReadFile(filepath.Join(kroot, m.path))
		if err != nil {
			return err
		}
		w.file(strings.TrimPrefix(usrPath(strings.TrimPrefix(m.path, "/")), "/"), 0o644, b)
		return nil
	}
	for _, n := range wantModules {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	for i := range order {
		order[i].path = "/" + usrPath(strings.TrimPrefix(order[i].path, "/"))
	}
	return order, nil
}

func moduleDepends(ko string) ([]string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("%s has no .modinfo", ko)
	}
	b, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// image is an in-memory list of cpio entries; parents are created on demand.
type image struct {
	entries []entry
	index   map[string]int
}

type entry struct {
	name         string
	mode         uint32 // full st_mode
	data         []byte
	rmaj, rmin   uint32
	isDir, isDev bool
}

func newImage() *image { return &image{index: map[string]int{}} }

func (w *image) has(name string) bool { _, ok := w.index[name]; return ok }

func (w *image) put(e entry) {
	if d := path.Dir(e.name); d != "." && !w.has(d) {
		w.dir(d, 0o755)
	}
	if i, ok := w.index[e.name]; ok {
		if e.isDir && w.entries[i].isDir {
			return
		}
		w.entries[i] = e
		return
	}
	w.index[e.name] = len(w.entries)
	w.entries = append(w.entries, e)
}

func (w *image) dir(name string, perm uint32) {
	w.put(entry{name: name, mode: 0o040000 | perm, isDir: true})
}

func (w *image) file(name string, perm uint32, data []byte) {
	w.put(entry{name: name, mode: 0o100000 | perm, data: data})
}

func (w *image) symlink(name, target string) {
	w.put(entry{name: name, mode: 0o120777, data: []byte(target)})
}

func (w *image) node(name string, mode, maj, min uint32) {
	w.put(entry{name: name, mode: mode, rmaj: maj, rmin: min, isDev: true})
}

func (w *image) manifest() string {
	var b strings.Builder
	for _, e := range w.entries {
		fmt.Fprintf(&b, "%06o %9d %s\n", e.mode, len(e.data), e.name)
	}
	return b.String()
}

// writeTo writes a newc cpio archive, every entry owned by root.
func (w *image) writeTo(o io.Writer) error {
	ino := uint32(1)
	var off int64
	write := func(name string, mode uint32, data []byte, rmaj, rmin uint32) error {
		nlink := uint32(1)
		if mode&0o170000 == 0o040000 {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
		ino++
		var buf bytes.Buffer
		buf.WriteString(hdr)
		buf.WriteString(name)
		buf.WriteByte(0)
		for (off+int64(buf.Len()))%4 != 0 {
			buf.WriteByte(0)
		}
		buf.Write(data)
		for (off+int64(buf.Len()))%4 != 0 {
			buf.WriteByte(0)
		}
		n, err := o.Write(buf.Bytes())
		off += int64(n)
		return err
	}
	for _, e := range w.entries {
		if err := write(e.name, e.mode, e.data, e.rmaj, e.rmin); err != nil {
			return err
		}
	}
	if err := write("TRAILER!!!", 0, nil, 0, 0); err != nil {
		return err
	}
	if off%512 != 0 {
		_, err := o.Write(make([]byte, 512-off%512))
		return err
	}
	return nil
}
