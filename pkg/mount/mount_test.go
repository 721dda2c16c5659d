package mount

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A mount table with the kubelet target mounted twice (rw, then ro on top), a look-alike path, and
// an ordinary root.
const fakeMountinfo = `21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
22 21 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
40 21 0:40 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1/mount rw,relatime shared:10 - nfs4 srv:/export/a rw,vers=4.2,rsize=1048576,addr=10.0.0.1
41 40 0:41 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1/mount ro,relatime shared:11 - nfs4 srv:/export/b rw,vers=4.2,addr=10.0.0.1
42 21 0:42 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1/mount2 rw,relatime shared:12 - nfs srv:/export/c rw,vers=3,addr=10.0.0.1
`

func fakeMounter(t *testing.T, table string) *Mounter {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	m := New(time.Second)
	m.mountinfo = p
	return m
}

func TestMountedAt(t *testing.T) {
	m := fakeMounter(t, fakeMountinfo)
	const pv1 = "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1/mount"
	tests := []struct {
		target   string
		want     bool
		source   string
		fstype   string
		readOnly bool
	}{
		{pv1, true, "srv:/export/b", "nfs4", true}, // the top of the stack, not the first entry
		{pv1 + "/", true, "srv:/export/b", "nfs4", true},
		{pv1 + "/../mount", true, "srv:/export/b", "nfs4", true},
		{pv1 + "2", true, "srv:/export/c", "nfs", false},
		{"/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1", false, "", "", false},
		{"/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1/mount/sub", false, "", "", false},
		{"/", true, "/dev/sda1", "ext4", false},
		{"/proc", true, "proc", "proc", false},
		{"/nowhere", false, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			e, err := m.MountedAt(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if (e != nil) != tc.want {
				t.Fatalf("MountedAt(%q) = %+v, want mounted=%t", tc.target, e, tc.want)
			}
			if e == nil {
				return
			}
			if e.Source != tc.source || e.FSType != tc.fstype || e.ReadOnly != tc.readOnly {
				t.Errorf("MountedAt(%q) = %+v, want source %q fstype %q ro %t", tc.target, e, tc.source, tc.fstype, tc.readOnly)
			}
		})
	}
	// Options carry both the per-mount and the superblock options.
	e, _ := m.MountedAt(pv1 + "2")
	want := map[string]bool{"rw": false, "relatime": false, "vers=3": false}
	for _, o := range e.Options {
		if _, ok := want[o]; ok {
			want[o] = true
		}
	}
	for o, seen := range want {
		if !seen {
			t.Errorf("options %v lack %q", e.Options, o)
		}
	}
}

func TestMountedAtUnreadableTable(t *testing.T) {
	m := New(time.Second)
	m.mountinfo = filepath.Join(t.TempDir(), "missing")
	if e, err := m.MountedAt("/"); err == nil {
		t.Fatalf("MountedAt with no mount table = %+v, nil; want an error", e)
	}
}

func TestMountedAtRealTable(t *testing.T) {
	e, err := New(time.Second).MountedAt("/proc")
	if err != nil {
		t.Fatal(err)
	}
	if e == nil || e.FSType != "proc" {
		t.Fatalf("MountedAt(/proc) on the real table = %+v, want a proc mount", e)
	}
}

func TestUnmountNothingMounted(t *testing.T) {
	// Nothing at the target in the table: success without running umount (which would fail here).
	m := fakeMounter(t, fakeMountinfo)
	if err := m.Unmount(context.Background(), filepath.Join(t.TempDir(), "target")); err != nil {
		t.Fatalf("Unmount of a target with nothing mounted = %v", err)
	}
	m.mountinfo = filepath.Join(t.TempDir(), "missing")
	if err := m.Unmount(context.Background(), "/x"); err == nil {
		t.Fatal("Unmount with an unreadable mount table = nil, want an error")
	}
}

func TestBounded(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	start := time.Now()
	err := Bounded(context.Background(), 50*time.Millisecond, "hung op", func() error { <-hang; return nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Bounded(hung) = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Bounded(hung) took %v", d)
	}
	// The caller's context is honoured when it ends first.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Bounded(ctx, time.Hour, "cancelled", func() error { <-hang; return nil }); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Bounded(cancelled ctx) = %v, want ErrTimeout", err)
	}
	boom := errors.New("boom")
	if err := Bounded(context.Background(), time.Second, "fails", func() error { return boom }); err != boom {
		t.Fatalf("Bounded(fn error) = %v, want the fn's error", err)
	}
	if err := Bounded(context.Background(), time.Second, "ok", func() error { return nil }); err != nil {
		t.Fatalf("Bounded(ok) = %v", err)
	}
}

func TestBoundedValue(t *testing.T) {
	v, err := BoundedValue(context.Background(), time.Second, "ok", func() (int, error) { return 42, nil })
	if err != nil || v != 42 {
		t.Fatalf("BoundedValue = %d, %v; want 42, nil", v, err)
	}
	v, err = BoundedValue(context.Background(), time.Second, "err", func() (int, error) { return 7, fs.ErrPermission })
	if !errors.Is(err, fs.ErrPermission) || v != 7 {
		t.Fatalf("BoundedValue = %d, %v; want 7, permission", v, err)
	}
	release := make(chan struct{})
	done := make(chan struct{})
	s, err := BoundedValue(context.Background(), 30*time.Millisecond, "stat /dead", func() (string, error) {
		<-release
		close(done)
		return "late", nil
	})
	if !errors.Is(err, ErrTimeout) || s != "" {
		t.Fatalf("BoundedValue(hung) = %q, %v; want zero value and ErrTimeout", s, err)
	}
	if want := "stat /dead"; !strings.Contains(err.Error(), want) {
		t.Errorf("timeout error %q does not say what timed out (%q)", err, want)
	}
	close(release) // the late result goes nowhere and does not block the abandoned goroutine
	<-done
}

// TestBoundedOwned: a value that arrives after the deadline is dropped (released), one in time is
// handed over and not dropped, and a late failure drops nothing.
func TestBoundedOwned(t *testing.T) {
	dropped := make(chan string, 2)
	drop := func(s string) { dropped <- s }
	v, err := BoundedOwned(context.Background(), time.Second, "ok", func() (string, error) { return "fd", nil }, drop)
	if err != nil || v != "fd" {
		t.Fatalf("BoundedOwned = %q, %v; want fd, nil", v, err)
	}
	release := make(chan struct{})
	v, err = BoundedOwned(context.Background(), 30*time.Millisecond, "open /dead", func() (string, error) {
		<-release
		return "late-fd", nil
	}, drop)
	if !errors.Is(err, ErrTimeout) || v != "" {
		t.Fatalf("BoundedOwned(hung) = %q, %v; want zero value and ErrTimeout", v, err)
	}
	close(release)
	select {
	case got := <-dropped:
		if got != "late-fd" {
			t.Fatalf("dropped %q, want late-fd", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the late value was never dropped")
	}
	late := make(chan struct{})
	finished := make(chan struct{})
	_, err = BoundedOwned(context.Background(), 30*time.Millisecond, "fails late", func() (string, error) {
		defer close(finished)
		<-late
		return "half", fs.ErrPermission
	}, drop)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("BoundedOwned(hung, then error) = %v, want ErrTimeout", err)
	}
	close(late)
	<-finished
	select {
	case got := <-dropped:
		t.Fatalf("dropped %q from a call in time or one that failed", got)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestIsStale(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{syscall.ESTALE, true},
		{syscall.ENOTCONN, true},
		{&fs.PathError{Op: "stat", Path: "/x", Err: syscall.ESTALE}, true},
		{&fs.PathError{Op: "stat", Path: "/x", Err: syscall.ENOTCONN}, true},
		{fmt.Errorf("create a: %w", &fs.PathError{Op: "mkdir", Path: "a", Err: syscall.ESTALE}), true},
		{&os.SyscallError{Syscall: "openat", Err: syscall.ESTALE}, true},
		{syscall.ENOENT, false},
		{&fs.PathError{Op: "stat", Path: "/x", Err: syscall.ENOENT}, false},
		{fs.ErrNotExist, false},
		{ErrTimeout, false},
		// Not a lost handle or connection: remounting a shared export for these would abort other
		// calls' requests and fix nothing (root_squash, lock contention, missing device).
		{&fs.PathError{Op: "mkdir", Path: "a", Err: syscall.EACCES}, false},
		{&fs.PathError{Op: "open", Path: "a", Err: syscall.EAGAIN}, false},
		{&fs.PathError{Op: "open", Path: "a", Err: syscall.ENODEV}, false},
		{errors.New("stale"), false},
	}
	for _, tc := range tests {
		if got := IsStale(tc.err); got != tc.want {
			t.Errorf("IsStale(%v) = %t, want %t", tc.err, got, tc.want)
		}
	}
}

func TestStatFSAndLstat(t *testing.T) {
	dir := t.TempDir()
	st, err := StatFS(context.Background(), time.Second, dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalBytes <= 0 || st.AvailableBytes < 0 || st.UsedBytes < 0 || st.AvailableBytes > st.TotalBytes {
		t.Errorf("StatFS = %+v, implausible", st)
	}
	if st.UsedInodes != st.TotalInodes-st.FreeInodes {
		t.Errorf("StatFS inodes %+v do not add up", st)
	}
	if _, err := StatFS(context.Background(), time.Second, filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("StatFS(missing) = %v, want not-exist", err)
	}
	if err := os.Symlink("/nonexistent", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	fi, err := Lstat(context.Background(), time.Second, filepath.Join(dir, "l"))
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("Lstat(symlink) = %v, %v; want the link itself", fi, err)
	}
}

func TestSource(t *testing.T) {
	if got := Source("[fd00::1]", "/export/a"); got != "[fd00::1]:/export/a" {
		t.Errorf("Source = %q", got)
	}
	if got := Source("nfs.example", "/"); got != "nfs.example:/" {
		t.Errorf("Source = %q", got)
	}
}

// alive tells whether pid is a live process (a zombie waiting to be reaped by someone else counts as
// dead: it holds no kernel call and no slot).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMountTimeoutKillsTheMountProcesses: a mount that outlives its deadline returns ErrTimeout, and
// the mount process and the helper it started (as mount.nfs is) are killed, not left running.
func TestMountTimeoutKillsTheMountProcesses(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "mount")
	body := "#!/bin/sh\necho $$ > " + dir + "/mount.pid\nsleep 60 &\necho $! > " + dir + "/helper.pid\nwait\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	m := &Mounter{timeout: 300 * time.Millisecond, mountCmd: script}
	start := time.Now()
	err := m.Mount(context.Background(), "srv:/export", dir, []string{"nfsvers=4.1"})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Mount = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Mount returned after %v, want about its 300ms deadline", d)
	}
	mountPid, helperPid := readPid(t, dir+"/mount.pid"), readPid(t, dir+"/helper.pid")
	deadline := time.Now().Add(5 * time.Second)
	for alive(mountPid) || alive(helperPid) {
		if time.Now().After(deadline) {
			t.Fatalf("after the timeout: mount process %d alive=%v, its helper %d alive=%v", mountPid, alive(mountPid), helperPid, alive(helperPid))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMountFailureCarriesTheOutput: a mount that fails says what mount(8) said, and what it ran.
func TestMountFailureCarriesTheOutput(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "mount")
	body := "#!/bin/sh\necho \"$@\" > " + dir + "/args\necho 'mount.nfs: access denied by server' >&2\nexit 32\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	m := &Mounter{timeout: 5 * time.Second, mountCmd: script}
	err := m.Mount(context.Background(), "srv:/export", "/mnt/x", []string{"nfsvers=3", "nolock"})
	if err == nil || !strings.Contains(err.Error(), "access denied by server") || errors.Is(err, ErrTimeout) {
		t.Fatalf("Mount = %v, want mount.nfs's message and no timeout", err)
	}
	args, _ := os.ReadFile(dir + "/args")
	if got, want := strings.TrimSpace(string(args)), "-t nfs -o nfsvers=3,nolock srv:/export /mnt/x"; got != want {
		t.Errorf("mount ran with %q, want %q", got, want)
	}
}
