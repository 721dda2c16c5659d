package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// fakeAgent records what the driver asks of a quota agent; unit tests only (the real agent and XFS
// are exercised in the guest by test/e2e/node).
type fakeAgent struct {
	t      *testing.T
	export string // local directory of the export, to check the directory still exists at Release
	mu     sync.Mutex
	down   bool
	limits map[quota.Target]quota.Limit
	used   map[quota.Target]uint64
	log    []string
}

func (f *fakeAgent) call(what string, t quota.Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, what+" "+t.Path)
	if f.down {
		return fmt.Errorf("dial: %w", quota.ErrUnavailable)
	}
	return nil
}

func (f *fakeAgent) Set(_ context.Context, t quota.Target, l quota.Limit) (quota.Usage, error) {
	if err := f.call("set", t); err != nil {
		return quota.Usage{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits[t] = l
	return quota.Usage{ProjectID: 7, Limit: l}, nil
}

func (f *fakeAgent) Release(_ context.Context, t quota.Target) error {
	if err := f.call("release", t); err != nil {
		return err
	}
	if !exists(filepath.Join(f.export, t.Path)) {
		f.t.Errorf("Release of %s after its directory left its place", t.Path)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.limits, t)
	return nil
}

func (f *fakeAgent) Usage(_ context.Context, t quota.Target) (quota.Usage, error) {
	if err := f.call("usage", t); err != nil {
		return quota.Usage{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.limits[t]
	if !ok {
		return quota.Usage{}, quota.ErrNoProject
	}
	return quota.Usage{ProjectID: 7, Limit: l, Bytes: f.used[t]}, nil
}

func (f *fakeAgent) Capacity(_ context.Context, export string) (quota.Capacity, error) {
	if err := f.call("capacity", quota.Target{Export: export}); err != nil {
		return quota.Capacity{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := quota.Capacity{TotalBytes: 1 << 30, FreeBytes: 1 << 29}
	for _, l := range f.limits {
		c.AllocatedBytes += l.Bytes
	}
	return c, nil
}

const testAgent = "nfs.example:9820"

func quotaHarness(t *testing.T) (*harness, *fakeAgent) {
	f := &fakeAgent{t: t, limits: map[quota.Target]quota.Limit{}, used: map[quota.Target]uint64{}}
	h := start(t, harnessOpts{quotas: func(addr string) (quota.Quotas, error) {
		if addr != testAgent {
			t.Errorf("agent %q dialled, want %q", addr, testAgent)
		}
		return f, nil
	}})
	f.export = h.export
	return h, f
}

func quotaParams(kv ...string) map[string]string {
	return params(append([]string{volume.ParamQuota, volume.QuotaEnforce, volume.ParamQuotaAgent, testAgent}, kv...)...)
}

func (h *harness) createSized(name string, p map[string]string, size int64) (*csi.Volume, error) {
	resp, err := h.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: name, Parameters: p,
		VolumeCapabilities: []*csi.VolumeCapability{rwx}, CapacityRange: &csi.CapacityRange{RequiredBytes: size}})
	return resp.GetVolume(), err
}

func TestQuotaFollowsTheVolumeThroughItsLife(t *testing.T) {
	h, f := quotaHarness(t)
	ctx := context.Background()
	tg := quota.Target{Export: testShare, Path: "pvc-q"}
	// Agent down: no volume is returned, and the error says Unavailable.
	f.down = true
	_, err := h.createSized("pvc-q", quotaParams(volume.ParamQuotaInodes, "500"), 10<<20)
	wantCode(t, err, codes.Unavailable, "quota agent unavailable")
	f.down = false
	v, err := h.createSized("pvc-q", quotaParams(volume.ParamQuotaInodes, "500"), 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.limits[tg]; got != (quota.Limit{Bytes: 10 << 20, Inodes: 500}) {
		t.Fatalf("limit after create = %+v", got)
	}
	// Expansion raises bytes and keeps the class's inode limit.
	if _, err := h.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: v.GetVolumeId(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 30 << 20}}); err != nil {
		t.Fatal(err)
	}
	if got := f.limits[tg]; got != (quota.Limit{Bytes: 30 << 20, Inodes: 500}) {
		t.Fatalf("limit after expand = %+v", got)
	}
	// A repeated CreateVolume (a lost reply) keeps the expanded limit, not the original request.
	if _, err := h.createSized("pvc-q", quotaParams(volume.ParamQuotaInodes, "500"), 10<<20); err != nil {
		t.Fatal(err)
	}
	if got := f.limits[tg]; got.Bytes != 30<<20 {
		t.Fatalf("limit after a repeated create = %+v, want the expanded 30 MiB", got)
	}
	// Near the limit, the volume's health says so.
	f.used[tg] = 29 << 20
	hr, err := h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: v.GetVolumeId()})
	if err != nil || len(hr.GetVolumeHealth().GetHealthStatuses()) != 1 || hr.GetVolumeHealth().GetHealthStatuses()[0].GetReason() != "QuotaNearlyFull" {
		t.Fatalf("health near the limit = %v, %v", hr, err)
	}
	lr, err := h.ctrl.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{})
	if err != nil || len(lr.GetEntries()) != 1 || lr.GetEntries()[0].GetVolumeId() != v.GetVolumeId() {
		t.Fatalf("list health = %v, %v", lr, err)
	}
	// GetCapacity: what no limit promises yet.
	cr, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: quotaParams()})
	if err != nil || cr.GetAvailableCapacity() != 1<<29 || cr.GetMaximumVolumeSize().GetValue() != 1<<29 {
		t.Fatalf("GetCapacity = %v, %v; want the free 512 MiB (less than 1 GiB - 30 MiB)", cr, err)
	}
	// Delete: agent down fails it and the directory stays; then the release comes before the move.
	f.down = true
	_, err = h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.GetVolumeId()})
	wantCode(t, err, codes.Unavailable)
	if !exists(filepath.Join(h.export, "pvc-q")) {
		t.Fatal("a failed release lost the directory")
	}
	f.down = false
	if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.limits[tg]; ok || exists(filepath.Join(h.export, "pvc-q")) {
		t.Fatalf("after delete: limit kept %v, directory present %v", ok, exists(filepath.Join(h.export, "pvc-q")))
	}
}

func TestQuotaRefusals(t *testing.T) {
	h, f := quotaHarness(t)
	_, err := h.createSized("pvc-nosize", quotaParams(), 0)
	wantCode(t, err, codes.InvalidArgument, "capacity_range", "quota=enforce")
	_, err = h.createSized("pvc-noagent", params(volume.ParamQuota, volume.QuotaEnforce), 1<<20)
	wantCode(t, err, codes.InvalidArgument, "quotaAgent")
	// Retain keeps the directory, so it keeps its limit: no release.
	v, err := h.createSized("pvc-kept", quotaParams(volume.ParamOnDelete, "retain"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: v.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	for _, l := range f.log {
		if l == "release pvc-kept" {
			t.Fatal("a retained volume's limit was released")
		}
	}
	if entries, _ := os.ReadDir(h.export); len(entries) != 2 { // .paddock and pvc-kept
		t.Fatalf("export holds %d entries, want .paddock and pvc-kept only", len(entries))
	}
	// A controller without credentials refuses an enforcing class instead of making an unlimited volume.
	plain := start(t, harnessOpts{})
	_, err = plain.createSized("pvc-unlimited", quotaParams(), 1<<20)
	wantCode(t, err, codes.FailedPrecondition, "--quota-credentials")
	if exists(filepath.Join(plain.export, "pvc-unlimited")) {
		t.Fatal("a refused enforcing create left a directory")
	}
}

// agentStatusError is how package quota/rpc returns an agent's error: it carries the agent's gRPC
// status and wraps the quota sentinel.
type agentStatusError struct {
	code     codes.Code
	sentinel error
}

func (e agentStatusError) Error() string {
	return e.sentinel.Error() + " (agent said " + e.code.String() + ")"
}
func (e agentStatusError) Unwrap() error { return e.sentinel }
func (e agentStatusError) GRPCStatus() *status.Status {
	return status.New(e.code, "agent")
}

func TestQuotaErrorsAreMappedNotPassedThrough(t *testing.T) {
	for _, tc := range []struct {
		agent    codes.Code
		sentinel error
		want     codes.Code
	}{
		{codes.PermissionDenied, quota.ErrNotOwned, codes.FailedPrecondition},
		{codes.FailedPrecondition, quota.ErrUnsupported, codes.FailedPrecondition},
		{codes.Unavailable, quota.ErrUnavailable, codes.Unavailable},
		{codes.NotFound, quota.ErrNoProject, codes.NotFound},
		{codes.ResourceExhausted, quota.ErrExhausted, codes.ResourceExhausted},
		{codes.InvalidArgument, quota.ErrInvalid, codes.InvalidArgument},
	} {
		err := toStatus("vol-1", fmt.Errorf("create pvc-1: %w", agentStatusError{tc.agent, tc.sentinel}))
		if status.Code(err) != tc.want || !strings.Contains(err.Error(), tc.sentinel.Error()) {
			t.Errorf("agent %v/%v: got %v, want code %v naming %q", tc.agent, tc.sentinel, err, tc.want, tc.sentinel)
		}
	}
}
