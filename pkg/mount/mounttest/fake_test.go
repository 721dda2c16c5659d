package mounttest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
)

func TestFakeMountResolvesExportsAndSubdirs(t *testing.T) {
	export, root := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(export, "sub", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(export, "sub", "deeper", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := New()
	f.AddExport("srv:/export", export)
	f.AddExport("[fd00::1]:/", root)
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tgt := filepath.Join(t.TempDir(), "tgt")
	if err := os.Mkdir(tgt, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := f.Mount(ctx, "srv:/export/sub", tgt, []string{"ro", "nfsvers=4.1"}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(tgt, "deeper", "f")); err != nil || string(b) != "x" {
		t.Fatalf("file through the fake mount = %q, %v", b, err)
	}
	e, err := f.MountedAt(tgt + "/")
	if err != nil || e == nil || e.Source != "srv:/export/sub" || !e.ReadOnly {
		t.Fatalf("MountedAt = %+v, %v", e, err)
	}
	if err := f.Unmount(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(tgt); err != nil || !fi.IsDir() {
		t.Fatalf("after unmount the target is %v, %v; want an empty directory back", fi, err)
	}
	if e, _ := f.MountedAt(tgt); e != nil {
		t.Fatalf("still mounted: %+v", e)
	}
	if err := f.Mount(ctx, "[fd00::1]:/sub", tgt, nil); err != nil {
		t.Fatalf("pseudo-root export: %v", err)
	}
	if err := f.Mount(ctx, "srv:/export/missing", filepath.Join(t.TempDir()), nil); err == nil {
		t.Fatal("mount of a missing directory succeeded")
	}
	if err := f.Mount(ctx, "other:/export", tgt, nil); err == nil {
		t.Fatal("mount of an unknown server succeeded")
	}
	if got := f.Calls(OpMount); got != 4 {
		t.Errorf("Calls(mount) = %d, want 4", got)
	}
}

func TestFakeFaults(t *testing.T) {
	f := New()
	f.AddExport("srv:/e", t.TempDir())
	tgt := t.TempDir()
	boom := errors.New("boom")
	f.FailNext(OpMount, boom)
	if err := f.Mount(context.Background(), "srv:/e", tgt, nil); err != boom {
		t.Fatalf("Mount = %v, want boom", err)
	}
	b := f.BlockNext(OpMount)
	done := make(chan error, 1)
	go func() { done <- f.Mount(context.Background(), "srv:/e", tgt, nil) }()
	<-b.Entered
	select {
	case err := <-done:
		t.Fatalf("blocked Mount returned %v before release", err)
	default:
	}
	b.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// With Timeout set, a hung call gives up like the real mounter.
	f.Timeout = 20 * time.Millisecond
	b = f.BlockNext(OpUnmount)
	if err := f.Unmount(context.Background(), tgt); !errors.Is(err, mount.ErrTimeout) {
		b.Release()
		t.Fatalf("hung Unmount = %v, want ErrTimeout", err)
	}
	// The abandoned call still finishes once released; wait for it (it holds the fake's lock while it
	// re-creates tgt) so it cannot race t.TempDir's cleanup.
	b.Release()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, mounted := f.Mounted(tgt); !mounted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("released Unmount never finished")
		}
	}
}
