package driver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
)

// hangingFS plays NFS servers through the node's direct calls (nodeFS): statfs and lstat of a path
// under a hung prefix block until release, like calls to a dead hard-mounted server; under a failing
// prefix they return its error; anything else goes to the real call. It records how many calls are
// blocked at once.
type hangingFS struct {
	mu      sync.Mutex
	hung    []string
	failing map[string]error
	release chan struct{}
	in, max int // calls blocked now, and at most
}

func newHangingFS() *hangingFS {
	return &hangingFS{failing: map[string]error{}, release: make(chan struct{})}
}

func under(p, prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }

// enter blocks p's call if p is under a hung prefix, or returns its failure.
func (h *hangingFS) enter(p string) error {
	h.mu.Lock()
	for prefix, err := range h.failing {
		if under(p, prefix) {
			h.mu.Unlock()
			return err
		}
	}
	hung := false
	for _, prefix := range h.hung {
		hung = hung || under(p, prefix)
	}
	if !hung {
		h.mu.Unlock()
		return nil
	}
	h.in++
	h.max = max(h.max, h.in)
	release := h.release
	h.mu.Unlock()
	<-release
	h.mu.Lock()
	h.in--
	h.mu.Unlock()
	return nil
}

func (h *hangingFS) blocked() (now, most int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.in, h.max
}

// unhang lets every blocked call return and stops hanging new ones.
func (h *hangingFS) unhang() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hung = nil
	select {
	case <-h.release:
	default:
		close(h.release)
	}
}

func (h *hangingFS) nodeFS() nodeFS {
	return nodeFS{
		statfs: func(p string) (mount.Stats, error) {
			if err := h.enter(p); err != nil {
				return mount.Stats{}, &os.PathError{Op: "statfs", Path: p, Err: err}
			}
			return mount.ReadStats(p)
		},
		lstat: func(p string) (os.FileInfo, error) {
			if err := h.enter(p); err != nil {
				return nil, &os.PathError{Op: "lstat", Path: p, Err: err}
			}
			return os.Lstat(p)
		},
	}
}

// testNode is a node service with a fake mounter and hangingFS, called directly (no gRPC).
func testNode(t *testing.T, fsTimeout time.Duration, maxStuck int) (*node, *mounttest.Fake, *hangingFS) {
	t.Helper()
	fake := mounttest.New()
	d, err := New(Options{Name: DefaultName, Mode: ModeNode, NodeID: "node-1", Endpoint: "unix:///nowhere.sock",
		FSTimeout: fsTimeout, MaxStuckCalls: maxStuck}, nil, fake)
	if err != nil {
		t.Fatal(err)
	}
	hfs := newHangingFS()
	d.fs = hfs.nodeFS()
	t.Cleanup(func() { hfs.unhang(); fake.ReleaseAll() })
	return &node{d: d}, fake, hfs
}

// mountFake "mounts" server:/export/sub at a new target under base, with the export in a directory
// of its own; it returns the target.
func mountFake(t *testing.T, fake *mounttest.Fake, base, server, sub string) string {
	t.Helper()
	export := filepath.Join(base, "exports", server)
	target := filepath.Join(base, "pods", server, sub, "mount")
	for _, d := range []string{filepath.Join(export, sub), target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake.AddExport(server+":/export", export)
	if err := fake.Mount(context.Background(), server+":/export/"+sub, target, nil); err != nil {
		t.Fatal(err)
	}
	return target
}

// stuckGauge reads paddock_calls_stuck{server}.
func stuckGauge(t *testing.T, server string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "paddock_calls_stuck" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "server" && l.GetValue() == server {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// 500 NodeGetVolumeStats calls against a volume whose server hangs: they all end within about one
// --fs-timeout, Unavailable or DeadlineExceeded, and no more than the bound ever sit in statfs. A
// volume on another server is unaffected, and once the server answers again so are the calls.
func TestNodeGetVolumeStatsHungServer(t *testing.T) {
	const (
		bound     = 8
		calls     = 500
		fsTimeout = 200 * time.Millisecond
		hung      = "hung.example"
	)
	n, fake, hfs := testNode(t, fsTimeout, bound)
	base := t.TempDir()
	deadTarget := mountFake(t, fake, base, hung, "pvc-1")
	okTarget := mountFake(t, fake, base, "ok.example", "pvc-2")
	hfs.hung = []string{deadTarget}
	ctx := context.Background()
	stats := func(target string) error {
		_, err := n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "vol-1", VolumePath: target})
		return err
	}

	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	byCode := map[codes.Code]int{}
	var slowest time.Duration
	for range calls {
		wg.Go(func() {
			t0 := time.Now()
			err := stats(deadTarget)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			byCode[status.Code(err)]++
			slowest = max(slowest, d)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	now, most := hfs.blocked()
	t.Logf("%d calls in %v (slowest %v): %v; %d blocked in statfs now, %d at most", calls, elapsed, slowest, byCode, now, most)
	if byCode[codes.Unavailable]+byCode[codes.DeadlineExceeded] != calls {
		t.Errorf("codes %v, want only Unavailable and DeadlineExceeded", byCode)
	}
	if most > bound || now != bound {
		t.Errorf("%d calls blocked in statfs (at most %d), want %d", now, most, bound)
	}
	if slowest > fsTimeout+2*time.Second {
		t.Errorf("a call took %v with --fs-timeout %v", slowest, fsTimeout)
	}
	if got := n.d.limiter.Stuck(hung); got != bound {
		t.Errorf("Stuck(%s) = %d, want %d", hung, got, bound)
	}
	if g := stuckGauge(t, hung); g != bound {
		t.Errorf("paddock_calls_stuck{server=%q} = %v, want %d", hung, g, bound)
	}

	// Now every slot is stuck: a call is refused at once, and says why.
	t0 := time.Now()
	err := stats(deadTarget)
	wantCode(t, err, codes.Unavailable, hung, "8 calls stuck", "check the server")
	if d := time.Since(t0); d > fsTimeout/2 {
		t.Errorf("refusal took %v", d)
	}
	// The publish-time check of an existing mount goes through the same slots.
	_, err = n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "static-1", StagingTargetPath: deadTarget,
		VolumeCapability: rwx, VolumeContext: map[string]string{"server": hung, "share": "/export", "subDir": "pvc-1"}})
	wantCode(t, err, codes.Unavailable, "8 calls stuck")
	// So does the volume's health, which reports the server as not responding.
	vh, err := n.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "vol-1", VolumePublishPath: deadTarget})
	if err != nil || len(vh.GetVolumeHealth().GetHealthStatuses()) != 1 || vh.GetVolumeHealth().GetHealthStatuses()[0].GetReason() != "ServerNotResponding" {
		t.Errorf("volume health on a hung server: %v, %v", vh, err)
	}
	if now, _ := hfs.blocked(); now != bound {
		t.Errorf("%d calls blocked after the refusals, want %d", now, bound)
	}
	// Another server's volumes are not held up.
	if err := stats(okTarget); err != nil {
		t.Errorf("stats of a volume on a healthy server: %v", err)
	}

	// The server answers again: the stuck calls return, their slots free, calls succeed.
	hfs.unhang()
	deadline := time.Now().Add(5 * time.Second)
	for n.d.limiter.Stuck(hung) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d calls stuck after the server came back", n.d.limiter.Stuck(hung))
		}
		time.Sleep(time.Millisecond)
	}
	if err := stats(deadTarget); err != nil {
		t.Fatalf("stats after the server came back: %v", err)
	}
	if g := stuckGauge(t, hung); g != 0 {
		t.Errorf("paddock_calls_stuck{server=%q} = %v after recovery", hung, g)
	}
}

// Without calls stuck, a call that waits for a slot behind slow calls still within their deadline
// ends with its own deadline (DeadlineExceeded), not Unavailable.
func TestNodeGetVolumeStatsWaitsBehindSlowCalls(t *testing.T) {
	n, fake, hfs := testNode(t, 300*time.Millisecond, 1)
	target := mountFake(t, fake, t.TempDir(), "slow.example", "pvc-1")
	hfs.hung = []string{target}
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: target})
		first <- err
	}()
	for now, _ := hfs.blocked(); now == 0; now, _ = hfs.blocked() {
		time.Sleep(time.Millisecond)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := n.NodeGetVolumeStats(short, &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: target})
	wantCode(t, err, codes.DeadlineExceeded)
	wantCode(t, <-first, codes.DeadlineExceeded)
	_, err = n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: target})
	wantCode(t, err, codes.Unavailable, "slow.example", "1 calls stuck")
	hfs.unhang()
}

func TestServerOf(t *testing.T) {
	for src, want := range map[string]string{
		"nfs.example:/export/pvc-1": "nfs.example",
		"10.0.0.1:/":                "10.0.0.1",
		"[fd00::1]:/export":         "[fd00::1]",
		"not-nfs":                   "not-nfs",
	} {
		if got := serverOf(src); got != want {
			t.Errorf("serverOf(%q) = %q, want %q", src, got, want)
		}
	}
}

func TestMaxStuckCallsOption(t *testing.T) {
	opts := Options{Name: DefaultName, Mode: ModeNode, NodeID: "n", FSTimeout: time.Second, MaxStuckCalls: -1}
	if err := opts.Validate(); err == nil || !strings.Contains(err.Error(), "--max-stuck-calls") {
		t.Errorf("negative --max-stuck-calls: %v", err)
	}
	for in, want := range map[int]int{0: 16, 3: 3} {
		opts.MaxStuckCalls = in
		d, err := New(opts, nil, mounttest.New())
		if err != nil {
			t.Fatal(err)
		}
		if got := d.limiter.PerKey(); got != want {
			t.Errorf("MaxStuckCalls %d: %d slots per server, want %d", in, got, want)
		}
	}
}
