package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeCSI is an in-process CSI plugin that records what the generator sent
// and how many calls were in flight at once. It is the unit-test double of
// "any CSI endpoint"; real drivers are exercised by the VM testbed.
type fakeCSI struct {
	delay       time.Duration
	failCreate  func(name string) bool
	failPublish func(target string) bool
	stage       bool

	mu          sync.Mutex
	inFlight    map[string]int
	maxInFlight map[string]int
	calls       map[string]int
	volumes     map[string]string // id -> name
	published   map[string]bool   // target -> mounted
	staged      string
	creates     []*csi.CreateVolumeRequest
	publishes   []*csi.NodePublishVolumeRequest
}

func newFake() *fakeCSI {
	return &fakeCSI{
		inFlight: map[string]int{}, maxInFlight: map[string]int{}, calls: map[string]int{},
		volumes: map[string]string{}, published: map[string]bool{},
	}
}

// enter marks an RPC in flight for the fake's delay; the returned func ends it.
func (f *fakeCSI) enter(op string) func() {
	f.mu.Lock()
	f.calls[op]++
	f.inFlight[op]++
	if f.inFlight[op] > f.maxInFlight[op] {
		f.maxInFlight[op] = f.inFlight[op]
	}
	f.mu.Unlock()
	time.Sleep(f.delay)
	return func() {
		f.mu.Lock()
		f.inFlight[op]--
		f.mu.Unlock()
	}
}

func (f *fakeCSI) get(m map[string]int, op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[op]
}

type fakeIdentity struct {
	csi.UnimplementedIdentityServer
	*fakeCSI
}

func (fakeIdentity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "fake.csi.test", VendorVersion: "v0.0.1"}, nil
}

type fakeController struct {
	csi.UnimplementedControllerServer
	*fakeCSI
}

func (f fakeController) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	defer f.enter(OpCreateVolume)()
	if f.failCreate != nil && f.failCreate(req.GetName()) {
		return nil, status.Errorf(codes.ResourceExhausted, "no room for %s", req.GetName())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, req)
	id := "id/" + req.GetName()
	f.volumes[id] = req.GetName()
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      id,
		VolumeContext: map[string]string{"name": req.GetName()},
	}}, nil
}

func (f fakeController) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	defer f.enter(OpDeleteVolume)()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.volumes[req.GetVolumeId()]; !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s", req.GetVolumeId())
	}
	delete(f.volumes, req.GetVolumeId())
	return &csi.DeleteVolumeResponse{}, nil
}

type fakeNode struct {
	csi.UnimplementedNodeServer
	*fakeCSI
}

func (f fakeNode) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	resp := &csi.NodeGetCapabilitiesResponse{}
	if f.stage {
		resp.Capabilities = append(resp.Capabilities, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME},
		}})
	}
	return resp, nil
}

func (f fakeNode) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	defer f.enter(OpNodeStageVolume)()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staged = req.GetStagingTargetPath()
	return &csi.NodeStageVolumeResponse{}, nil
}

func (f fakeNode) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	defer f.enter(OpNodeUnstageVolume)()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.staged != req.GetStagingTargetPath() {
		return nil, status.Errorf(codes.FailedPrecondition, "not staged at %s", req.GetStagingTargetPath())
	}
	f.staged = ""
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (f fakeNode) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	defer f.enter(OpNodePublishVolume)()
	// A CO creates the target before publishing; the generator must too.
	if fi, err := os.Stat(req.GetTargetPath()); err != nil || !fi.IsDir() {
		return nil, status.Errorf(codes.FailedPrecondition, "target %s missing", req.GetTargetPath())
	}
	if f.failPublish != nil && f.failPublish(req.GetTargetPath()) {
		return nil, status.Errorf(codes.Internal, "mount failed at %s", req.GetTargetPath())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stage && req.GetStagingTargetPath() != f.staged {
		return nil, status.Errorf(codes.FailedPrecondition, "staging path %q, staged at %q", req.GetStagingTargetPath(), f.staged)
	}
	f.publishes = append(f.publishes, req)
	f.published[req.GetTargetPath()] = true
	return &csi.NodePublishVolumeResponse{}, nil
}

func (f fakeNode) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	defer f.enter(OpNodeUnpublishVolume)()
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.published, req.GetTargetPath())
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// serveFake starts f on a fresh unix socket and returns its endpoint.
func serveFake(t *testing.T, f *fakeCSI) string {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes and
	// t.TempDir() can exceed that with long test names.
	dir, err := os.MkdirTemp("", "csiload")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "csi.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, fakeIdentity{fakeCSI: f})
	csi.RegisterControllerServer(srv, fakeController{fakeCSI: f})
	csi.RegisterNodeServer(srv, fakeNode{fakeCSI: f})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return "unix://" + sock
}

func opByName(t *testing.T, rep *Report, op string) OpStats {
	t.Helper()
	for _, o := range rep.Ops {
		if o.Op == op {
			return o
		}
	}
	t.Fatalf("report has no op %s: %+v", op, rep.Ops)
	return OpStats{}
}

func opNames(rep *Report) []string {
	var out []string
	for _, o := range rep.Ops {
		out = append(out, o.Op)
	}
	return out
}

func TestCreateDelete(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n, workers int
		failEvery  int // CreateVolume of every failEvery-th name fails; 0: none
		wantErrs   int
	}{
		{"serial", 6, 1, 0, 0},
		{"parallel", 16, 4, 0, 0},
		{"parallel with errors", 20, 5, 4, 5},
		{"more workers than ops", 3, 8, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.delay = 30 * time.Millisecond
			if tc.failEvery > 0 {
				f.failCreate = func(name string) bool {
					var i int
					fmt.Sscanf(name[strings.LastIndexByte(name, '-')+1:], "%d", &i)
					return i%tc.failEvery == 0
				}
			}
			ep := serveFake(t, f)
			idsFile := filepath.Join(t.TempDir(), "ids.json")
			rep, err := RunCSI(context.Background(), CSIOptions{
				Endpoint: ep, Scenario: ScenarioCreateDelete, N: tc.n, Workers: tc.workers, Prefix: "pfx",
				Params:     map[string]string{"server": "s", "share": "/e"},
				AccessMode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
				FsType:     "nfs", MountFlags: []string{"nfsvers=4.1"}, CapacityBytes: 1 << 20,
				IDsFile: idsFile, Timeout: 10 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := opNames(rep); !reflect.DeepEqual(got, []string{OpCreateVolume, OpDeleteVolume}) {
				t.Fatalf("ops %v", got)
			}
			cr, del := opByName(t, rep, OpCreateVolume), opByName(t, rep, OpDeleteVolume)
			if cr.Count != tc.n || cr.Errors != tc.wantErrs {
				t.Errorf("CreateVolume count %d errors %d, want %d %d", cr.Count, cr.Errors, tc.n, tc.wantErrs)
			}
			if tc.wantErrs > 0 && !strings.Contains(cr.FirstError, "ResourceExhausted") {
				t.Errorf("first error %q does not carry the gRPC status", cr.FirstError)
			}
			if tc.wantErrs == 0 && cr.FirstError != "" {
				t.Errorf("first error %q with no errors", cr.FirstError)
			}
			// Only what was created is deleted, and all of it.
			if del.Count != tc.n-tc.wantErrs || del.Errors != 0 {
				t.Errorf("DeleteVolume count %d errors %d, want %d 0", del.Count, del.Errors, tc.n-tc.wantErrs)
			}
			if len(f.volumes) != 0 {
				t.Errorf("volumes left on the fake: %v", f.volumes)
			}
			// Concurrency never exceeds -workers, and really overlaps (how much depends on how
			// the scheduler starts the workers on a loaded machine: at least two at once).
			for op, ops := range map[string]int{OpCreateVolume: tc.n, OpDeleteVolume: del.Count} {
				got, limit := f.get(f.maxInFlight, op), min(tc.workers, ops)
				if got > limit || got < min(limit, 2) {
					t.Errorf("%s max in flight %d, want between %d and %d", op, got, min(limit, 2), limit)
				}
			}
			if cr.P50Ms < 30 || cr.MaxMs < cr.P99Ms || cr.P99Ms < cr.P90Ms || cr.P90Ms < cr.P50Ms || cr.MinMs > cr.P50Ms {
				t.Errorf("latencies out of order or below the fake's delay: %+v", cr)
			}
			if cr.OpsPerS <= 0 || cr.WallS <= 0 {
				t.Errorf("no throughput: %+v", cr)
			}

			// The request carried the flags' parameters and capability.
			req := f.creates[0]
			if !reflect.DeepEqual(req.GetParameters(), map[string]string{"server": "s", "share": "/e"}) ||
				req.GetCapacityRange().GetRequiredBytes() != 1<<20 ||
				len(req.GetVolumeCapabilities()) != 1 ||
				req.GetVolumeCapabilities()[0].GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER ||
				req.GetVolumeCapabilities()[0].GetMount().GetFsType() != "nfs" ||
				!reflect.DeepEqual(req.GetVolumeCapabilities()[0].GetMount().GetMountFlags(), []string{"nfsvers=4.1"}) {
				t.Errorf("CreateVolume request %v", req)
			}
			var names []string
			for _, c := range f.creates {
				names = append(names, c.GetName())
			}
			sort.Strings(names)
			if len(names) != tc.n-tc.wantErrs || !strings.HasPrefix(names[0], "pfx-") {
				t.Errorf("created names %v", names)
			}

			vl, err := ReadVolumeList(idsFile)
			if err != nil || len(vl.Volumes) != tc.n-tc.wantErrs || vl.Endpoint != ep {
				t.Errorf("ids file: %+v, %v", vl, err)
			}
			if rep.Driver == nil || rep.Driver.Name != "fake.csi.test" {
				t.Errorf("driver info %+v", rep.Driver)
			}
		})
	}
}

// TestPVCNamespace: with -pvc-namespace every CreateVolume carries the claim
// metadata csi-provisioner's --extra-create-metadata adds, for its own name,
// on top of -params (which stay unchanged for the next volume).
func TestPVCNamespace(t *testing.T) {
	f := newFake()
	ep := serveFake(t, f)
	params := map[string]string{"server": "s", "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}"}
	rep, err := RunCSI(context.Background(), CSIOptions{Endpoint: ep, Scenario: ScenarioCreateDelete, N: 4, Workers: 2,
		Prefix: "claim", Params: params, PVCNamespace: "team-a",
		AccessMode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors() != 0 || rep.Config.PVCNamespace != "team-a" {
		t.Fatalf("report %+v", rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.creates) != 4 {
		t.Fatalf("%d creates", len(f.creates))
	}
	for _, c := range f.creates {
		want := map[string]string{"server": "s", "subDir": params["subDir"],
			ParamPVCName: c.GetName(), ParamPVName: c.GetName(), ParamPVCNamespace: "team-a"}
		if !reflect.DeepEqual(c.GetParameters(), want) {
			t.Errorf("CreateVolume %s parameters %v, want %v", c.GetName(), c.GetParameters(), want)
		}
	}
	if len(params) != 2 {
		t.Errorf("-params map changed: %v", params)
	}
}

func TestCreateThenDeleteViaIDsFile(t *testing.T) {
	f := newFake()
	ep := serveFake(t, f)
	idsFile := filepath.Join(t.TempDir(), "ids.json")
	base := CSIOptions{Endpoint: ep, N: 5, Workers: 2, Prefix: "hold",
		AccessMode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, IDsFile: idsFile, Timeout: 5 * time.Second}

	c := base
	c.Scenario = ScenarioCreate
	rep, err := RunCSI(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if got := opNames(rep); !reflect.DeepEqual(got, []string{OpCreateVolume}) || rep.Ops[0].Count != 5 {
		t.Fatalf("create ops %+v", rep.Ops)
	}
	if len(f.volumes) != 5 {
		t.Fatalf("create left %d volumes, want 5 held", len(f.volumes))
	}
	vl, err := ReadVolumeList(idsFile)
	if err != nil || len(vl.Volumes) != 5 || vl.Volumes[0].VolumeContext["name"] == "" {
		t.Fatalf("ids file %+v %v", vl, err)
	}

	d := base
	d.Scenario = ScenarioDelete
	d.N = 0 // delete takes its count from the file
	rep, err = RunCSI(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if got := opNames(rep); !reflect.DeepEqual(got, []string{OpDeleteVolume}) || rep.Ops[0].Count != 5 || rep.Ops[0].Errors != 0 || rep.Config.N != 5 {
		t.Fatalf("delete ops %+v config %+v", rep.Ops, rep.Config)
	}
	if len(f.volumes) != 0 {
		t.Errorf("volumes left: %v", f.volumes)
	}

	// Deleting again: the fake answers NotFound, which must be counted.
	rep, err = RunCSI(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops[0].Errors != 5 || !strings.Contains(rep.Ops[0].FirstError, "NotFound") {
		t.Errorf("second delete %+v", rep.Ops[0])
	}
}

func TestPublish(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stage     bool
		volumeID  string
		failEvery int
		wantOps   []string
	}{
		{"no stage", false, "", 0, []string{OpCreateVolume, OpNodePublishVolume, OpNodeUnpublishVolume, OpDeleteVolume}},
		{"stage", true, "", 0, []string{OpCreateVolume, OpNodeStageVolume, OpNodePublishVolume, OpNodeUnpublishVolume, OpNodeUnstageVolume, OpDeleteVolume}},
		{"existing volume", false, "given", 0, []string{OpNodePublishVolume, OpNodeUnpublishVolume}},
		{"publish errors", false, "", 3, []string{OpCreateVolume, OpNodePublishVolume, OpNodeUnpublishVolume, OpDeleteVolume}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.delay = 20 * time.Millisecond
			f.stage = tc.stage
			const n, workers = 9, 3
			wantPubErrs := 0
			if tc.failEvery > 0 {
				f.failPublish = func(target string) bool {
					var i int
					fmt.Sscanf(target[strings.LastIndexByte(target, '-')+1:], "%d", &i)
					return i%tc.failEvery == 0
				}
				wantPubErrs = (n + tc.failEvery - 1) / tc.failEvery
			}
			ep := serveFake(t, f)
			if tc.volumeID != "" {
				f.volumes[tc.volumeID] = "preexisting"
			}
			targetDir := t.TempDir()
			rep, err := RunCSI(context.Background(), CSIOptions{
				Endpoint: ep, Scenario: ScenarioPublish, N: n, Workers: workers, Prefix: "pub",
				AccessMode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, Readonly: true,
				MountFlags: []string{"hard"}, TargetDir: targetDir, Timeout: 5 * time.Second,
				VolumeID: tc.volumeID, VolumeContext: map[string]string{"from": "flag"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := opNames(rep); !reflect.DeepEqual(got, tc.wantOps) {
				t.Fatalf("ops %v, want %v", got, tc.wantOps)
			}
			pub, unpub := opByName(t, rep, OpNodePublishVolume), opByName(t, rep, OpNodeUnpublishVolume)
			if pub.Count != n || pub.Errors != wantPubErrs || unpub.Count != n-wantPubErrs || unpub.Errors != 0 {
				t.Errorf("publish %+v\nunpublish %+v", pub, unpub)
			}
			if wantPubErrs > 0 && !strings.Contains(pub.FirstError, "mount failed") {
				t.Errorf("first error %q", pub.FirstError)
			}
			if got := f.get(f.maxInFlight, OpNodePublishVolume); got != workers {
				t.Errorf("publish max in flight %d, want %d", got, workers)
			}
			// Distinct targets, all under -target-dir, all one volume.
			seen := map[string]bool{}
			for _, p := range f.publishes {
				if seen[p.GetTargetPath()] || filepath.Dir(p.GetTargetPath()) != targetDir {
					t.Errorf("target %s repeated or outside %s", p.GetTargetPath(), targetDir)
				}
				seen[p.GetTargetPath()] = true
				if !p.GetReadonly() || p.GetVolumeCapability().GetMount().GetMountFlags()[0] != "hard" {
					t.Errorf("publish request %v", p)
				}
				wantVol := "id/pub-0"
				if tc.volumeID != "" {
					wantVol = tc.volumeID
					if p.GetVolumeContext()["from"] != "flag" {
						t.Errorf("volume context %v, want the -volume-context one", p.GetVolumeContext())
					}
				} else if p.GetVolumeContext()["name"] != "pub-0" {
					t.Errorf("volume context %v, want CreateVolume's", p.GetVolumeContext())
				}
				if p.GetVolumeId() != wantVol {
					t.Errorf("published %s, want %s", p.GetVolumeId(), wantVol)
				}
			}
			if len(f.published) != 0 || f.staged != "" {
				t.Errorf("left published %v staged %q", f.published, f.staged)
			}
			// The volume this run created is gone; a given one is kept.
			if tc.volumeID == "" && len(f.volumes) != 0 || tc.volumeID != "" && len(f.volumes) != 1 {
				t.Errorf("volumes left %v", f.volumes)
			}
			// Targets were cleaned up.
			if ents, _ := os.ReadDir(targetDir); len(ents) != 0 {
				t.Errorf("target dir not empty: %v", ents)
			}
		})
	}
}

func TestRunCSIErrors(t *testing.T) {
	ep := serveFake(t, newFake())
	ok := CSIOptions{Endpoint: ep, Scenario: ScenarioCreateDelete, N: 1, Workers: 1, Prefix: "p",
		AccessMode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, Timeout: 2 * time.Second}
	for _, tc := range []struct {
		name string
		mod  func(o *CSIOptions)
		want string
	}{
		{"dead endpoint", func(o *CSIOptions) { o.Endpoint = "unix:///nonexistent/csi.sock" }, "GetPluginInfo"},
		{"bad endpoint", func(o *CSIOptions) { o.Endpoint = "nope" }, "endpoint"},
		{"unknown scenario", func(o *CSIOptions) { o.Scenario = "x" }, "unknown scenario"},
		{"zero n", func(o *CSIOptions) { o.N = 0 }, "-n"},
		{"create without ids", func(o *CSIOptions) { o.Scenario = ScenarioCreate }, "-ids"},
		{"delete without ids", func(o *CSIOptions) { o.Scenario = ScenarioDelete }, "-ids"},
		{"publish without target dir", func(o *CSIOptions) { o.Scenario = ScenarioPublish }, "-target-dir"},
		{"slash in prefix", func(o *CSIOptions) { o.Prefix = "a/b" }, "prefix"},
		{"unknown access mode", func(o *CSIOptions) { o.AccessMode = 0 }, "UNKNOWN"},
		{"pvc metadata twice", func(o *CSIOptions) {
			o.PVCNamespace, o.Params = "ns", map[string]string{ParamPVCName: "x"}
		}, ParamPVCName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.mod(&o)
			_, err := RunCSI(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestMainJSON runs the CLI end to end and checks the JSON document: it
// round-trips through Report, and its op objects carry exactly the
// documented keys (a schema change must be deliberate).
func TestMainJSON(t *testing.T) {
	f := newFake()
	f.failCreate = func(name string) bool { return strings.HasSuffix(name, "-2") }
	ep := serveFake(t, f)
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"-endpoint", ep, "-scenario", "create-delete", "-n", "4",
		"-workers", "2", "-params", "a=1", "-access-mode", "RWX", "-json", jsonPath,
		"-rss-pid", fmt.Sprint(os.Getpid()), "-rss-interval", "10ms"}, &stdout, &stderr)
	if code != ExitOpErrs {
		t.Fatalf("exit %d, want %d (one CreateVolume fails); stderr: %s", code, ExitOpErrs, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"csi create-delete", "fake.csi.test", "CreateVolume", "DeleteVolume", "p99 ms", "first error CreateVolume:", "rss pid"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}

	rep, err := ReadReport(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "csi" || rep.Scenario != ScenarioCreateDelete || rep.Config.N != 4 || rep.Config.Workers != 2 ||
		rep.Config.AccessMode != "MULTI_NODE_MULTI_WRITER" || rep.Config.Params["a"] != "1" ||
		rep.Errors() != 1 || rep.RSS == nil || rep.RSS.Samples == 0 || rep.Host.NumCPU == 0 {
		t.Errorf("report %+v", rep)
	}
	// Round trip: write what was read, read again, compare.
	again := filepath.Join(t.TempDir(), "again.json")
	if err := rep.WriteJSON(again); err != nil {
		t.Fatal(err)
	}
	rep2, err := ReadReport(again)
	if err != nil || !reflect.DeepEqual(rep, rep2) {
		t.Errorf("round trip differs:\n%+v\n%+v (%v)", rep, rep2, err)
	}

	raw, _ := os.ReadFile(jsonPath)
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	wantTop := []string{"config", "driver", "host", "mode", "ops", "rss", "scenario", "schema", "started", "wall_s"}
	if got := sortedKeys(doc); !reflect.DeepEqual(got, wantTop) {
		t.Errorf("top-level keys %v, want %v", got, wantTop)
	}
	if doc["schema"] != SchemaVersion {
		t.Errorf("schema %v", doc["schema"])
	}
	ops := doc["ops"].([]any)
	withErr := ops[0].(map[string]any)
	wantOp := []string{"count", "errors", "first_error", "max_ms", "mean_ms", "min_ms", "op", "ops_per_s", "p50_ms", "p90_ms", "p99_ms", "wall_s"}
	if got := sortedKeys(withErr); !reflect.DeepEqual(got, wantOp) {
		t.Errorf("op keys %v, want %v", got, wantOp)
	}
}

func sortedKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestMainExitCodes(t *testing.T) {
	ep := serveFake(t, newFake())
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"-endpoint", ep, "-n", "2"}, ExitOK},
		{[]string{"-endpoint", ep, "-access-mode", "nope"}, ExitUsage},
		{[]string{"-endpoint", "unix:///nonexistent.sock", "-timeout", "1s"}, ExitUsage},
		{[]string{"-h"}, ExitOK},
		{[]string{"help"}, ExitOK},
		{[]string{"floor", "-kind", "nope"}, ExitUsage},
		{[]string{"floor", "-kind", "mkdir-chmod"}, ExitUsage},
		{[]string{"rss"}, ExitUsage},
		{[]string{"rss", "-pid", fmt.Sprint(os.Getpid())}, ExitOK},
		{[]string{"rss", "-pid", fmt.Sprint(os.Getpid()), "-duration", "30ms", "-interval", "10ms"}, ExitOK},
		{[]string{"rss", "-pid", "1073741824"}, ExitUsage},
	} {
		var stdout, stderr bytes.Buffer
		if got := Main(context.Background(), tc.args, &stdout, &stderr); got != tc.want {
			t.Errorf("Main(%q) = %d, want %d; stderr: %s", tc.args, got, tc.want, stderr.String())
		}
	}
}

func TestTCPEndpoint(t *testing.T) {
	f := newFake()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, fakeIdentity{fakeCSI: f})
	csi.RegisterControllerServer(srv, fakeController{fakeCSI: f})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	rep, err := RunCSI(context.Background(), CSIOptions{Endpoint: "tcp://" + lis.Addr().String(), Scenario: ScenarioCreateDelete,
		N: 3, Workers: 2, Prefix: "tcp", AccessMode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors() != 0 || rep.Ops[0].Count != 3 || rep.Ops[1].Count != 3 {
		t.Errorf("ops over tcp %+v", rep.Ops)
	}
}
