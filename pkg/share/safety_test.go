package share

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// Tests of the safety rules of docs/design.md, each named for what it protects.

// secondController is another Workspace (another controller process) on the same export.
func (e *env) secondController(mod func(*Config)) *Workspace {
	e.t.Helper()
	fake := mounttest.New()
	fake.AddExport(testSource, e.export)
	cfg := e.cfg
	cfg.WorkDir = filepath.Join(filepath.Dir(e.cfg.WorkDir), "work2")
	cfg.Mounter = fake
	if mod != nil {
		mod(&cfg)
	}
	ws, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		fake.ReleaseAll()
		ws.Close(context.Background())
	})
	return ws
}

// A static volume's directory that holds dynamic volumes (subDir "team-a" while volumes live at
// "team-a/pvc-*") is never scrubbed: Recycle would hand every one of them to the reaper.
func TestScrubNeverTakesVolumesBelow(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-1", "team-a/pvc-1", volume.OnDeleteDelete), defaultOpts())
	e.write("team-a/pvc-1/data", "tenant 1")
	e.write("team-a/notes", "the admin's")
	before := listing(t, e.export)
	err := e.ws.Scrub(context.Background(), vol("static", "team-a", volume.OnDeleteRetain))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Scrub of a directory holding a volume = %v, want ErrConflict", err)
	}
	if got := listing(t, e.export); got != before {
		t.Fatalf("refused Scrub changed the export:\n%s\n---\n%s", before, got)
	}
	// A volume below the directory deleted, the static directory scrubs; it then holds a claim that
	// keeps new volumes out of it.
	if err := e.ws.Delete(context.Background(), vol("pvc-1", "team-a/pvc-1", volume.OnDeleteDelete)); err != nil {
		t.Fatal(err)
	}
	if err := e.ws.Scrub(context.Background(), vol("static", "team-a", volume.OnDeleteRetain)); err != nil {
		t.Fatalf("Scrub after the volume below left = %v", err)
	}
	if got := e.entries("team-a"); len(got) != 0 {
		t.Fatalf("scrubbed directory holds %v", got)
	}
	if _, err := e.ws.Create(context.Background(), vol("pvc-2", "team-a/pvc-2", volume.OnDeleteDelete), defaultOpts()); !errors.Is(err, ErrConflict) {
		t.Fatalf("Create inside a scrubbed static volume = %v, want ErrConflict", err)
	}
}

// Two exports of one server where one lies inside the other: no volume of the outer export is the
// inner export's root, lies above it or below it, whatever the call.
func TestInnerExportRootIsNeverAVolume(t *testing.T) {
	e := newEnv(t, nil)
	inner := Export{Server: testServer, Share: testShare + "/inner"}
	e.mkdir("inner", 0o755)
	e.fake.AddExport(testServer+":"+inner.Share, e.path("inner"))
	e.ws.AddExports(xp, inner)
	iv := volume.Volume{Server: testServer, Share: inner.Share, SubDir: "x", Name: "pvc-in", OnDelete: volume.OnDeleteDelete}
	if _, err := e.ws.Create(context.Background(), iv, defaultOpts()); err != nil {
		t.Fatal(err)
	}
	e.write("inner/x/data", "inner tenant")
	e.create(vol("pvc-a", "a", volume.OnDeleteDelete), defaultOpts()) // the outer export's first call marks the inner root
	if c, err := e.claimOf("inner"); err != nil || c.Export != inner.Share {
		t.Fatalf("the outer export's claim at the inner root = %+v, %v; want its marker", c, err)
	}
	before := listing(t, e.export)
	for _, tc := range []struct {
		what string
		call func() error
	}{
		{"create the root", func() error {
			_, err := e.ws.Create(context.Background(), vol("pvc-o", "inner", volume.OnDeleteDelete), defaultOpts())
			return err
		}},
		{"adopt the root", func() error {
			_, err := e.ws.Create(context.Background(), vol("pvc-o", "inner", volume.OnDeleteDelete), CreateOptions{Mode: 0o777, UID: -1, GID: -1, Reuse: true})
			return err
		}},
		{"create below the root", func() error {
			_, err := e.ws.Create(context.Background(), vol("pvc-o", "inner/y", volume.OnDeleteDelete), defaultOpts())
			return err
		}},
		{"adopt a volume of the inner export", func() error {
			_, err := e.ws.Create(context.Background(), vol("pvc-o", "inner/x", volume.OnDeleteDelete), CreateOptions{Mode: 0o777, UID: -1, GID: -1, Reuse: true})
			return err
		}},
		{"scrub the root", func() error { return e.ws.Scrub(context.Background(), vol("static", "inner", volume.OnDeleteDelete)) }},
	} {
		if err := tc.call(); !errors.Is(err, ErrConflict) {
			t.Errorf("%s = %v, want ErrConflict", tc.what, err)
		}
		if got := listing(t, e.export); got != before {
			t.Fatalf("%s changed the export:\n%s\n---\n%s", tc.what, before, got)
		}
	}
	// A forged ID naming the root deletes nothing.
	if err := e.ws.Delete(context.Background(), vol("pvc-o", "inner", volume.OnDeleteDelete)); err != nil {
		t.Fatalf("Delete of the root by a forged ID = %v, want nil (no such volume)", err)
	}
	if got := listing(t, e.export); got != before {
		t.Fatalf("Delete changed the export:\n%s\n---\n%s", before, got)
	}
}

// Create("a") and Create("a/b") racing on two controllers never both succeed: one tenant's volume
// inside another's would be destroyed with it.
func TestRacingNestedCreatesNeverBothSucceed(t *testing.T) {
	e := newEnv(t, nil)
	other := e.secondController(nil)
	both := 0
	for round := 0; round < 150; round++ {
		outer := vol(fmt.Sprintf("pvc-o%d", round), fmt.Sprintf("r%d", round), volume.OnDeleteDelete)
		inner := vol(fmt.Sprintf("pvc-i%d", round), fmt.Sprintf("r%d/b", round), volume.OnDeleteDelete)
		var wg sync.WaitGroup
		var errO, errI error
		start := make(chan struct{})
		wg.Add(2)
		go func() { defer wg.Done(); <-start; _, errO = e.ws.Create(context.Background(), outer, defaultOpts()) }()
		go func() { defer wg.Done(); <-start; _, errI = other.Create(context.Background(), inner, defaultOpts()) }()
		close(start)
		wg.Wait()
		if errO == nil && errI == nil {
			t.Fatalf("round %d: Create(%s) and Create(%s) both succeeded", round, outer.SubDir, inner.SubDir)
		}
		if errO == nil || errI == nil {
			both++
		}
		for _, err := range []error{errO, errI} {
			if err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrExists) {
				t.Fatalf("round %d: refused Create = %v, want ErrConflict or ErrExists", round, err)
			}
		}
	}
	if both < 150 {
		t.Fatalf("only %d of 150 rounds created either volume", both)
	}
}

// blockChown makes the next chowns hang until released: a call stuck on a dead server.
func blockChown(t *testing.T) (entered chan string, release func()) {
	saved := lchown
	entered = make(chan string, 100)
	gate := make(chan struct{})
	var once sync.Once
	lchown = func(r *os.Root, name string, uid, gid int) error {
		entered <- name
		<-gate
		return saved(r, name, uid, gid)
	}
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); lchown = saved })
	return entered, release
}

// A call abandoned at its deadline keeps its volume locked until its work has stopped: a later call
// on the volume is refused (ErrInProgress) instead of running beside it, and the export stays
// mounted under it however long it is idle.
func TestAbandonedCallKeepsItsVolumeUntilItStops(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IdleTimeout = 20 * time.Millisecond })
	entered, release := blockChown(t)
	v := vol("pvc-a", "a", volume.OnDeleteDelete)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := e.ws.Create(ctx, v, CreateOptions{Mode: 0o770, UID: 1000, GID: 1000}); !errors.Is(err, mount.ErrTimeout) {
		t.Fatalf("Create stuck in chown = %v, want ErrTimeout", err)
	}
	<-entered
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := e.ws.Delete(ctx2, v); !errors.Is(err, ErrInProgress) {
		t.Fatalf("Delete while the create still runs = %v, want ErrInProgress", err)
	}
	time.Sleep(5 * e.cfg.IdleTimeout)
	if n := e.fake.Calls(mounttest.OpUnmount); n != 0 {
		t.Fatalf("the export was unmounted %d times under a running call", n)
	}
	if !exists(e.path("a")) {
		t.Fatal("the directory is gone")
	}
	release()
	eventually(t, "the abandoned create to finish", func() bool {
		c, err := e.claimOf("a")
		return err == nil && c.State == stateReady
	})
	eventually(t, "the volume lock to be released", func() bool { return e.ws.locks.Len() == 0 })
	if err := e.ws.Delete(context.Background(), v); err != nil {
		t.Fatalf("Delete after the create stopped = %v", err)
	}
	eventually(t, "the idle export to be unmounted", func() bool { return e.fake.Calls(mounttest.OpUnmount) > 0 })
}

// EEXIST on mkdir is not proof that the directory is someone else's: two controllers creating the
// same volume at once both succeed (or one is told to retry), and the claim is never taken back.
func TestTwoControllersCreatingOneVolumeKeepItsClaim(t *testing.T) {
	e := newEnv(t, nil)
	other := e.secondController(nil)
	for round := 0; round < 100; round++ {
		v := vol(fmt.Sprintf("pvc-%d", round), fmt.Sprintf("ns/v%d", round), volume.OnDeleteDelete)
		opts := CreateOptions{Mode: 0o2770, UID: os.Getuid(), GID: os.Getgid()} // the pending path: claim, mkdir, chown, chmod, ready
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, ws := range []*Workspace{e.ws, other} {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = ws.Create(context.Background(), v, opts) }()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			}
		}
		if ok == 0 {
			t.Fatalf("round %d: neither controller created the volume: %v", round, errs)
		}
		c, err := e.claimOf(v.SubDir)
		if err != nil || c.Name != v.Name {
			t.Fatalf("round %d: after %v the claim is %+v, %v", round, errs, c, err)
		}
		if err := other.Delete(context.Background(), v); err != nil {
			t.Fatalf("round %d: Delete = %v", round, err)
		}
		if exists(e.path(v.SubDir)) {
			t.Fatalf("round %d: Delete left the directory", round)
		}
	}
}

// A delete whose reply was lost, retried after a new claim re-created the same template path,
// succeeds and touches the new volume not at all.
func TestDeleteRetryAfterPathReuseTouchesNothing(t *testing.T) {
	e := newEnv(t, nil)
	old := vol("pvc-old", "ns/claim", volume.OnDeleteDelete)
	e.create(old, defaultOpts())
	if err := e.ws.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	e.create(vol("pvc-new", "ns/claim", volume.OnDeleteDelete), defaultOpts())
	e.write("ns/claim/data", "the new tenant's")
	before := listing(t, e.export)
	if err := e.ws.Delete(context.Background(), old); err != nil {
		t.Fatalf("retried Delete of the old volume = %v, want nil", err)
	}
	if got := listing(t, e.export); got != before {
		t.Fatalf("retried Delete changed the export:\n%s\n---\n%s", before, got)
	}
}

// The same volume name with other arguments is ALREADY_EXISTS, never a second directory or an ID that
// disagrees with the directory.
func TestSameNameOtherArgumentsIsIncompatible(t *testing.T) {
	e := newEnv(t, nil)
	v := vol("pvc-1", "ns/one", volume.OnDeleteDelete)
	e.create(v, defaultOpts())
	for _, tc := range []struct {
		what string
		v    volume.Volume
		o    CreateOptions
	}{
		{"another subDir", vol("pvc-1", "ns/two", volume.OnDeleteDelete), defaultOpts()},
		{"another onDelete", vol("pvc-1", "ns/one", volume.OnDeleteArchive), defaultOpts()},
		{"another mode", v, CreateOptions{Mode: 0o700, UID: -1, GID: -1}},
		{"another owner", v, CreateOptions{Mode: 0o777, UID: 5, GID: -1}},
	} {
		before := listing(t, e.export)
		if _, err := e.ws.Create(context.Background(), tc.v, tc.o); !errors.Is(err, ErrIncompatible) {
			t.Errorf("Create with %s = %v, want ErrIncompatible", tc.what, err)
		}
		if got := listing(t, e.export); got != before {
			t.Errorf("Create with %s changed the export:\n%s\n---\n%s", tc.what, before, got)
		}
	}
	// After the volume is deleted, its name may be created anywhere (a new PV could never reuse a
	// name, but a failed create must not block it either).
	if err := e.ws.Delete(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	e.create(vol("pvc-1", "ns/two", volume.OnDeleteDelete), defaultOpts())
}

// A forged DeleteVolume naming an export Paddock never used registers nothing: the reaper will not
// sweep it, and no metadata area is made there.
func TestForgedDeleteRegistersNoExport(t *testing.T) {
	e := newEnv(t, nil)
	foreign := filepath.Join(filepath.Dir(e.export), "foreign")
	if err := os.MkdirAll(filepath.Join(foreign, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.fake.AddExport(testServer+":/foreign", foreign)
	forged := volume.Volume{Server: testServer, Share: "/foreign", SubDir: "data", Name: "pvc-x", OnDelete: volume.OnDeleteDelete}
	if err := e.ws.Delete(context.Background(), forged); err != nil {
		t.Fatalf("forged Delete = %v", err)
	}
	for _, x := range e.ws.Known() {
		if x.Share == "/foreign" {
			t.Fatalf("the forged export is known: %v", e.ws.Known())
		}
	}
	if _, err := e.ws.Reap(context.Background(), Export{Server: testServer, Share: "/foreign"}); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(foreign, volume.MetaDir)) {
		t.Fatal("a metadata area was made on the foreign export")
	}
}

// A dead server costs a fixed number of stuck calls: beyond the limiter's bound, calls fail at once
// with ErrBusy, and they work again once the server is back.
func TestDeadServerCostsABoundedNumberOfCalls(t *testing.T) {
	const bound = 4
	e := newEnv(t, func(c *Config) { c.Limiter = mount.NewLimiter(bound) })
	entered, release := blockChown(t)
	var stuck atomic.Int32
	go func() {
		for range entered {
			stuck.Add(1)
		}
	}()
	var wg sync.WaitGroup
	var busy atomic.Int32
	create := func(i int) {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		v := vol(fmt.Sprintf("pvc-%d", i), fmt.Sprintf("v%d", i), volume.OnDeleteDelete)
		_, err := e.ws.Create(ctx, v, CreateOptions{Mode: 0o770, UID: 1000, GID: 1000})
		if errors.Is(err, mount.ErrBusy) {
			busy.Add(1)
		} else if err == nil {
			t.Errorf("Create %d succeeded against a hung server", i)
		}
	}
	// First the calls that get stuck: once the bound's worth are stuck past their deadline, the
	// server is known dead. (Launched together with the rest, on a loaded machine every call could
	// reach its deadline before any got stuck, and none would be refused.)
	for i := 0; i < bound; i++ {
		wg.Add(1)
		go create(i)
	}
	eventually(t, "the first calls to be stuck past their deadline", func() bool { return e.ws.limiter.Stuck(testServer) == bound })
	for i := bound; i < 200; i++ {
		wg.Add(1)
		go create(i)
	}
	wg.Wait()
	if n := stuck.Load(); n > bound {
		t.Fatalf("%d calls are stuck in the filesystem, more than the bound %d", n, bound)
	}
	if busy.Load() == 0 {
		t.Fatal("no call was refused with ErrBusy")
	}
	release()
	eventually(t, "the stuck calls to return", func() bool { return e.ws.limiter.Stuck(testServer) == 0 })
	if _, err := e.ws.Create(context.Background(), vol("pvc-after", "after", volume.OnDeleteDelete), defaultOpts()); err != nil {
		t.Fatalf("Create after the server came back = %v", err)
	}
}

// Volumes made before pins existed (claims without a token) are still protected where the cheap
// check allows: a directory holding one is not adopted or scrubbed.
func TestLegacyNestedClaimsAreSeen(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-new", "other", volume.OnDeleteDelete), defaultOpts()) // makes the metadata area
	r, err := os.OpenRoot(e.export)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e.mkdir("old/pvc-legacy", 0o777)
	must(t, writeClaim(r, claim{Name: "pvc-legacy", SubDir: "old/pvc-legacy", State: stateReady}))
	if _, err := e.ws.Create(context.Background(), vol("pvc-x", "old", volume.OnDeleteDelete), CreateOptions{Mode: 0o777, UID: -1, GID: -1, Reuse: true}); !errors.Is(err, ErrConflict) {
		t.Fatalf("adopting a directory holding a legacy volume = %v, want ErrConflict", err)
	}
	if err := e.ws.Scrub(context.Background(), vol("static", "old", volume.OnDeleteDelete)); !errors.Is(err, ErrConflict) {
		t.Fatalf("scrubbing a directory holding a legacy volume = %v, want ErrConflict", err)
	}
	if _, err := e.claimOf("old"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused call left a claim: %v", err)
	}
}

// A snapshot of a forged source volume on an export Paddock never used creates nothing there.
func TestForgedSnapshotSourceCreatesNothing(t *testing.T) {
	e := newEnv(t, nil)
	foreign := filepath.Join(filepath.Dir(e.export), "foreign")
	if err := os.MkdirAll(filepath.Join(foreign, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.fake.AddExport(testServer+":/foreign", foreign)
	forged := volume.Volume{Server: testServer, Share: "/foreign", SubDir: "data", Name: "pvc-x", OnDelete: volume.OnDeleteDelete}
	if _, err := e.ws.CreateSnapshot(context.Background(), forged, "snap"); !errors.Is(err, ErrSourceNotFound) {
		t.Fatalf("snapshot of a forged source = %v, want ErrSourceNotFound", err)
	}
	if exists(filepath.Join(foreign, volume.MetaDir)) {
		t.Fatal("a metadata area was made on the foreign export")
	}
	if err := e.ws.DeleteSnapshot(context.Background(), volume.SnapshotOf(forged, "snap")); err != nil {
		t.Fatalf("DeleteSnapshot of a forged snapshot = %v", err)
	}
	if exists(filepath.Join(foreign, volume.MetaDir)) {
		t.Fatal("DeleteSnapshot made a metadata area on the foreign export")
	}
}

// A volume directly above a new one is deleted (by another controller) after the create has looked at
// its parents and before it pinned them: the create must make the missing parent, not fail ENOENT.
// TestTwoControllersNeverNest (e2e) once saw Internal "mkdirat: no such file or directory" here.
func TestCreateMakesAParentDeletedMeanwhile(t *testing.T) {
	e := newEnv(t, nil)
	other := e.secondController(nil)
	above := vol("pvc-above", "p/b", volume.OnDeleteDelete)
	below := vol("pvc-below", "p/b/c", volume.OnDeleteDelete)
	e.create(above, defaultOpts())
	fired := false
	testHookParentsSeen = func(v volume.Volume) {
		if v.Name != below.Name || fired {
			return
		}
		fired = true
		if err := other.Delete(context.Background(), above); err != nil {
			t.Errorf("Delete(%s) from the other controller: %v", above.SubDir, err)
		}
	}
	t.Cleanup(func() { testHookParentsSeen = nil })
	if _, err := e.ws.Create(context.Background(), below, defaultOpts()); err != nil {
		t.Fatalf("Create(%s) after %s was deleted under it: %v", below.SubDir, above.SubDir, err)
	}
	if !fired {
		t.Fatal("the hook never ran: the test no longer reaches the window it is about")
	}
	fi, err := os.Stat(e.path(below.SubDir))
	if err != nil || !fi.IsDir() {
		t.Fatalf("%s on the export: %v", below.SubDir, err)
	}
	if _, err := e.claimOf(above.SubDir); err == nil {
		t.Errorf("%s still has a claim after its volume was deleted", above.SubDir)
	}
}
