package share

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/volume"
)

func TestExportMountedOnceForManyCreates(t *testing.T) {
	e := newEnv(t, nil)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := vol(fmt.Sprintf("pvc-%d", i), fmt.Sprintf("pvc-%d", i), volume.OnDeleteDelete)
			_, err := e.ws.Create(context.Background(), v, defaultOpts())
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := e.fake.Calls(mounttest.OpMount); got != 1 {
		t.Errorf("%d creates mounted the export %d times, want 1", n, got)
	}
	if got := e.ws.MountedExports(); got != 1 {
		t.Errorf("MountedExports = %d, want 1", got)
	}
	if got := len(e.entries(".")); got != n+1 { // the volumes and .paddock
		t.Errorf("export holds %d entries, want %d", got, n+1)
	}
	// Another export (same server, another path; and another NFS version) is a separate mount.
	other := filepath.Join(t.TempDir(), "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	e.fake.AddExport(testServer+":/other", other)
	v := volume.Volume{Server: testServer, Share: "/other", SubDir: "v", Name: "pvc-o", OnDelete: volume.OnDeleteDelete}
	e.create(v, defaultOpts())
	v4 := v
	v4.NFSVers, v4.SubDir, v4.Name = "4.1", "v41", "pvc-o41"
	e.create(v4, defaultOpts())
	if got := e.fake.Calls(mounttest.OpMount); got != 3 {
		t.Errorf("three exports mounted %d times, want 3", got)
	}
	if !exists(filepath.Join(other, "v41")) {
		t.Errorf("the nfsvers=4.1 volume was not created")
	}
	var vers []string
	for _, tgt := range e.fake.Targets() {
		m, _ := e.fake.Mounted(tgt)
		vers = append(vers, fmt.Sprint(m.Options))
	}
	slices.Sort(vers)
	if want := []string{"[nolock nfsvers=4.1]", "[nolock]", "[nolock]"}; !slices.Equal(vers, want) {
		t.Errorf("mount options %v, want %v", vers, want)
	}
}

// Two classes with different mount options on one export never share a held mount; a call that
// carries no options of its own (a volume ID alone) mounts the export as it was last mounted.
func TestHeldMountsAreKeyedByOptions(t *testing.T) {
	e := newEnv(t, nil)
	mo := func(opts ...string) string {
		m, err := volume.ParseMountOptions(opts)
		if err != nil {
			t.Fatal(err)
		}
		return m.ControllerString()
	}
	a := vol("pvc-a", "pvc-a", volume.OnDeleteDelete)
	a.MountOptions = mo("nconnect=2", "noexec")
	b := vol("pvc-b", "pvc-b", volume.OnDeleteDelete)
	b.MountOptions = mo("soft", "timeo=100")
	e.create(a, defaultOpts())
	e.create(b, defaultOpts())
	opts := func() []string {
		var got []string
		for _, tgt := range e.fake.Targets() {
			m, _ := e.fake.Mounted(tgt)
			got = append(got, fmt.Sprint(m.Options))
		}
		slices.Sort(got)
		return got
	}
	if want := []string{"[nconnect=2 nolock]", "[nolock soft timeo=100]"}; !slices.Equal(opts(), want) {
		t.Fatalf("held mounts %v, want %v", opts(), want)
	}
	// The export is known once, by place, with the latest options.
	if k := e.ws.Known(); len(k) != 1 || k[0].Options != b.MountOptions {
		t.Fatalf("known exports %+v, want one with options %q", k, b.MountOptions)
	}
	// A delete by ID alone (the CSI DeleteVolume path) uses the latest options: no third mount.
	idOnly, err := volume.ParseID(a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ws.Delete(context.Background(), idOnly); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Calls(mounttest.OpMount); got != 2 {
		t.Errorf("%d mounts after a delete by ID, want 2 (it reuses the latest options)", got)
	}
	if exists(e.path("pvc-a")) {
		t.Error("pvc-a not deleted")
	}
}

func TestIdleExportIsUnmounted(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IdleTimeout = 50 * time.Millisecond })
	e.create(vol("pvc-1", "pvc-1", volume.OnDeleteDelete), defaultOpts())
	eventually(t, "the idle export to be unmounted", func() bool {
		return e.ws.MountedExports() == 0 && e.fake.Calls(mounttest.OpUnmount) == 1 && len(e.fake.Targets()) == 0
	})
	// The next call mounts it again and still sees the volume.
	if err := e.ws.Stat(context.Background(), vol("pvc-1", "pvc-1", volume.OnDeleteDelete)); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Calls(mounttest.OpMount); got != 2 {
		t.Errorf("mounts = %d, want 2", got)
	}
}

func TestExportNotUnmountedWhileInUse(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IdleTimeout = 20 * time.Millisecond })
	err := e.ws.withRoot(context.Background(), xp, time.Minute, "hold", func(r *os.Root) error {
		time.Sleep(200 * time.Millisecond) // ten idle periods
		_, err := r.Stat(".")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Calls(mounttest.OpUnmount); got != 0 {
		t.Errorf("export unmounted %d times while in use", got)
	}
}

// withExport remounts once after a stale handle and runs the operation on the new mount.
func TestStaleHandleRemountsOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-1", "pvc-1", volume.OnDeleteDelete), defaultOpts())
	// The server "re-creates" its export: the remount lands on another directory.
	replacement := filepath.Join(t.TempDir(), "replacement")
	if err := os.MkdirAll(filepath.Join(replacement, "marker"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.fake.AddExport(testSource, replacement)
	calls := 0
	err := e.ws.withRoot(context.Background(), xp, time.Second, "op", func(r *os.Root) error {
		calls++
		if calls == 1 {
			return &fs.PathError{Op: "mkdir", Path: "x", Err: syscall.ESTALE}
		}
		_, err := r.Stat("marker")
		return err
	})
	if err != nil {
		t.Fatalf("withExport after one stale handle = %v", err)
	}
	if calls != 2 {
		t.Errorf("operation ran %d times, want 2", calls)
	}
	if m, u := e.fake.Calls(mounttest.OpMount), e.fake.Calls(mounttest.OpUnmount); m != 2 || u != 1 {
		t.Errorf("mounts %d, unmounts %d; want 2 and 1", m, u)
	}

	// Stale again after the remount: give up with the stale error, no remount loop.
	err = e.ws.withRoot(context.Background(), xp, time.Second, "op", func(r *os.Root) error {
		return &fs.PathError{Op: "stat", Path: "x", Err: syscall.ESTALE}
	})
	if !mount.IsStale(err) {
		t.Fatalf("withExport always stale = %v, want the stale error", err)
	}
	if m := e.fake.Calls(mounttest.OpMount); m != 3 {
		t.Errorf("mounts = %d, want 3 (one remount per call)", m)
	}

	// A failing remount is reported with the original error.
	e.fake.FailNext(mounttest.OpMount, errors.New("server down"))
	calls = 0
	err = e.ws.withRoot(context.Background(), xp, time.Second, "op", func(r *os.Root) error {
		calls++
		return &fs.PathError{Op: "stat", Path: "x", Err: syscall.ENOTCONN}
	})
	if err == nil || !mount.IsStale(err) || calls != 1 {
		t.Fatalf("withExport with a failing remount = %v after %d calls", err, calls)
	}
	// ... and the next call mounts afresh.
	if err := e.ws.withRoot(context.Background(), xp, time.Second, "op", func(r *os.Root) error {
		_, err := r.Stat("marker")
		return err
	}); err != nil {
		t.Fatalf("call after a failed remount = %v", err)
	}
}

// Errors that are not stale handles never remount the shared export.
func TestNonStaleErrorsDoNotRemount(t *testing.T) {
	e := newEnv(t, nil)
	for _, errno := range []syscall.Errno{syscall.EACCES, syscall.EIO, syscall.EAGAIN, syscall.ENOENT, syscall.ENOSPC} {
		err := e.ws.withRoot(context.Background(), xp, time.Second, "op", func(r *os.Root) error {
			return &fs.PathError{Op: "mkdir", Path: "x", Err: errno}
		})
		if !errors.Is(err, errno) {
			t.Errorf("withExport = %v, want %v", err, errno)
		}
	}
	if m, u := e.fake.Calls(mounttest.OpMount), e.fake.Calls(mounttest.OpUnmount); m != 1 || u != 0 {
		t.Errorf("mounts %d, unmounts %d; want 1 and 0", m, u)
	}
}

// Concurrent calls that hit the same stale mount remount it once between them.
func TestConcurrentStaleCallsRemountOnce(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.ws.withRoot(context.Background(), xp, time.Second, "warm", func(*os.Root) error { return nil }); err != nil {
		t.Fatal(err)
	}
	const n = 4
	var arrived sync.WaitGroup
	arrived.Add(n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			errs <- e.ws.withRoot(context.Background(), xp, 5*time.Second, "op", func(*os.Root) error {
				if first {
					first = false
					arrived.Done()
					arrived.Wait() // every call has read the same mount generation
					return &fs.PathError{Op: "stat", Path: "x", Err: syscall.ESTALE}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := e.fake.Calls(mounttest.OpMount); m != 2 {
		t.Errorf("%d concurrent stale calls mounted %d times in all, want 2 (one remount)", n, m)
	}
}

func TestHungMountTimesOut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.FSTimeout = timeout })
	e.fake.Timeout = timeout // the real mounter bounds mount(8) by the same deadline
	b := e.fake.BlockNext(mounttest.OpMount)
	start := time.Now()
	_, err := e.ws.Create(context.Background(), vol("pvc-h", "pvc-h", volume.OnDeleteDelete), defaultOpts())
	if !errors.Is(err, mount.ErrTimeout) {
		t.Fatalf("Create on a hung mount = %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took > timeout+3*time.Second {
		t.Errorf("Create on a hung mount took %v with FSTimeout %v", took, timeout)
	}
	select {
	case <-b.Entered:
	default:
		t.Fatal("the mount never reached the fake")
	}
	// The server comes back: the left-behind mount finishes and the next call uses it.
	b.Release()
	// (The fake's mount is not atomic like the kernel's: wait for it to land.)
	eventually(t, "the left-behind mount to finish", func() bool { return len(e.fake.Targets()) == 1 })
	if _, err := e.ws.Create(context.Background(), vol("pvc-h", "pvc-h", volume.OnDeleteDelete), defaultOpts()); err != nil {
		t.Fatalf("Create after the server came back = %v", err)
	}
	if !exists(e.path("pvc-h")) {
		t.Fatal("volume not created")
	}
}

// A volume whose claim file hangs (like a dead server) holds up only that volume: other volumes on
// the same export go on, a second call on the hung volume waits its turn (and gives up at its own
// deadline), and the hung call returns ErrTimeout at FSTimeout.
func TestSameVolumeSerializesOthersRunInParallel(t *testing.T) {
	const timeout = 2 * time.Second
	e := newEnv(t, func(c *Config) { c.FSTimeout = timeout })
	e.create(vol("pvc-warm", "pvc-warm", volume.OnDeleteDelete), defaultOpts())
	fifo := e.path(claimPath("pvc-a"))
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Let the abandoned open finish: a writer unblocks it.
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	}()
	a := vol("pvc-a", "pvc-a", volume.OnDeleteDelete)
	type result struct {
		err  error
		took time.Duration
	}
	first := make(chan result, 1)
	start := time.Now()
	go func() {
		_, err := e.ws.Create(context.Background(), a, defaultOpts())
		first <- result{err, time.Since(start)}
	}()
	eventually(t, "the first call to hold the volume lock", func() bool { return e.ws.locks.Len() == 1 })

	// A different volume on the same export is not held up.
	if _, err := e.ws.Create(context.Background(), vol("pvc-b", "pvc-b", volume.OnDeleteDelete), defaultOpts()); err != nil {
		t.Fatalf("Create of another volume = %v", err)
	}
	if err := e.ws.Delete(context.Background(), vol("pvc-b", "pvc-b", volume.OnDeleteDelete)); err != nil {
		t.Fatalf("Delete of another volume = %v", err)
	}
	select {
	case r := <-first:
		t.Fatalf("the hung call returned early (%v): the test did not hang it", r.err)
	default:
	}
	// The same volume waits for the hung call, and gives up at its own deadline without touching it.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := e.ws.Delete(ctx, a)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, mount.ErrTimeout) {
		t.Fatalf("second call on the busy volume = %v, want to give up waiting for its turn", err)
	}
	r := <-first
	if !errors.Is(r.err, mount.ErrTimeout) {
		t.Fatalf("hung call = %v, want ErrTimeout", r.err)
	}
	if r.took < timeout || r.took > timeout+3*time.Second {
		t.Errorf("hung call returned after %v, want about FSTimeout %v", r.took, timeout)
	}
	if exists(e.path("pvc-a")) {
		t.Error("the hung call created its directory anyway")
	}
}

// The work dir holds only mounts: a new workspace on it knows no export until it is told (AddExports,
// as the controller does from the cluster) or a call uses one, and AddExports keeps the options.
func TestNewWorkspaceKnowsOnlyWhatItIsTold(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-1", "pvc-1", volume.OnDeleteDelete), defaultOpts())
	names, err := os.ReadDir(e.cfg.WorkDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0].Name() != "exports" {
		t.Fatalf("work dir holds %v, want only exports/ (the mount points)", names)
	}
	ws2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close(context.Background())
	if k := ws2.Known(); len(k) != 0 {
		t.Fatalf("a new workspace knows %v", k)
	}
	x := xp
	x.Options = "nconnect=4,nolock"
	ws2.AddExports(x, Export{Server: testServer, Share: testShare, NFSVers: "4.2"})
	k := ws2.Known()
	if len(k) != 2 || k[0].Options != x.Options || k[1].Options != defaultOptions || k[1].NFSVers != "4.2" {
		t.Fatalf("known after AddExports: %+v", k)
	}
}

func TestClosedWorkspaceRefusesWork(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-1", "pvc-1", volume.OnDeleteDelete), defaultOpts())
	e.ws.Close(context.Background())
	if len(e.fake.Targets()) != 0 {
		t.Errorf("Close left mounts: %v", e.fake.Targets())
	}
	if _, err := e.ws.Create(context.Background(), vol("pvc-2", "pvc-2", volume.OnDeleteDelete), defaultOpts()); err == nil {
		t.Fatal("Create on a closed workspace succeeded")
	}
	if exists(e.path("pvc-2")) {
		t.Fatal("closed workspace created a directory")
	}
}

func TestNewNeedsMounter(t *testing.T) {
	if _, err := New(Config{WorkDir: t.TempDir()}); err == nil {
		t.Fatal("New without a mounter succeeded")
	}
}

func TestForeignMountAtExportPathIsReplaced(t *testing.T) {
	// A mount left at the export's mount point by something else is never used as the export.
	e := newEnv(t, nil)
	elsewhere := t.TempDir()
	if err := os.WriteFile(filepath.Join(elsewhere, "foreign"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.fake.AddExport("other:/x", elsewhere)
	// Find the export's mount point by mounting once, then swap in a foreign mount.
	e.create(vol("pvc-1", "pvc-1", volume.OnDeleteDelete), defaultOpts())
	targets := e.fake.Targets()
	if len(targets) != 1 {
		t.Fatalf("mounts: %v", targets)
	}
	sumPath := targets[0]
	e.ws.Close(context.Background())
	if err := e.fake.Mount(context.Background(), "other:/x", sumPath, nil); err != nil {
		t.Fatal(err)
	}
	ws2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close(context.Background())
	if err := ws2.Stat(context.Background(), vol("pvc-1", "pvc-1", volume.OnDeleteDelete)); err != nil {
		t.Fatalf("Stat through a replaced foreign mount = %v", err)
	}
	if m, _ := e.fake.Mounted(sumPath); m.Source != testSource {
		t.Fatalf("export mount point holds %q, want %q", m.Source, testSource)
	}
	if !exists(filepath.Join(elsewhere, "foreign")) {
		t.Fatal("foreign mount's content touched")
	}
}
