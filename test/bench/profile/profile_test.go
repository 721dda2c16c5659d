// Package profile holds host-side benchmarks of the controller's volume
// operations on a local directory (the fake mounter stands in for NFS), for
// CPU profiles and syscall counts that explain the guest figures of
// `make bench`:
//
//	go test ./test/bench/profile -run=NONE -bench=. -benchtime=2000x -cpuprofile=/tmp/cpu.out
//	strace -f -c -o /tmp/sys.txt go test ... (or the compiled test binary)
//
// On a local filesystem every syscall is cheap, so a syscall that the guest
// turns into an NFS round trip is the thing to count; BenchmarkCreateVolume
// reports syscalls/op of the calling process when run under strace.
package profile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/share"
)

const source = "127.0.0.1:/srv/nfs/a"

var params = map[string]string{"server": "127.0.0.1", "share": "/srv/nfs/a"}

var rwx = []*csi.VolumeCapability{{
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
}}

func newDriver(tb testing.TB) (*driver.Driver, string) {
	tb.Helper()
	dir := tb.TempDir()
	exp := filepath.Join(dir, "export")
	if err := os.Mkdir(exp, 0o755); err != nil {
		tb.Fatal(err)
	}
	fake := mounttest.New()
	fake.AddExport(source, exp)
	ws, err := share.New(share.Config{WorkDir: filepath.Join(dir, "work"), IdleTimeout: time.Hour, FSTimeout: 30 * time.Second,
		ReapInterval: time.Hour, ReapWorkers: 8, Mounter: fake})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go ws.Run(ctx)
	tb.Cleanup(func() { cancel(); ws.Wait(); ws.Close(context.Background()) })
	d, err := driver.New(driver.Options{Name: driver.DefaultName, Version: "bench", Mode: driver.ModeController,
		Endpoint: "unix:///nonexistent", FSTimeout: 30 * time.Second}, ws, fake)
	if err != nil {
		tb.Fatal(err)
	}
	return d, exp
}

// BenchmarkCreateVolume is Driver.Create (what the CreateVolume RPC runs,
// without gRPC) of a new volume per iteration.
func BenchmarkCreateVolume(b *testing.B) {
	d, _ := newDriver(b)
	ctx := context.Background()
	if _, err := d.Create(ctx, driver.CreateRequest{Name: "warmup", Parameters: params, Capabilities: rwx}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Create(ctx, driver.CreateRequest{Name: fmt.Sprintf("v-%d", i), Parameters: params, Capabilities: rwx}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeleteVolume is Driver.Delete of an existing volume per
// iteration (creation untimed).
func BenchmarkDeleteVolume(b *testing.B) {
	d, _ := newDriver(b)
	ctx := context.Background()
	ids := make([]string, b.N)
	for i := range ids {
		v, err := d.Create(ctx, driver.CreateRequest{Name: fmt.Sprintf("v-%d", i), Parameters: params, Capabilities: rwx})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = v.GetVolumeId()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Delete(ctx, driver.DeleteRequest{ID: ids[i]}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMkdirChmod is the floor of BenchmarkCreateVolume on the same
// filesystem.
func BenchmarkMkdirChmod(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		p := filepath.Join(dir, fmt.Sprintf("v-%d", i))
		if err := os.Mkdir(p, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.Chmod(p, 0o777); err != nil {
			b.Fatal(err)
		}
	}
}
