package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The CreateVolume parameters csi-provisioner adds with --extra-create-metadata.
const (
	ParamPVCName      = "csi.storage.k8s.io/pvc/name"
	ParamPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	ParamPVName       = "csi.storage.k8s.io/pv/name"
)

// CSI scenarios.
const (
	ScenarioCreateDelete = "create-delete"
	ScenarioCreate       = "create"
	ScenarioDelete       = "delete"
	ScenarioPublish      = "publish"
	// ScenarioInfo calls GetPluginInfo N times: the cost of one gRPC round
	// trip to the driver with no work behind it, the floor under every RPC.
	ScenarioInfo = "info"
)

// Op kind names: the CSI RPC names, so a report reads like the spec.
const (
	OpCreateVolume        = "CreateVolume"
	OpDeleteVolume        = "DeleteVolume"
	OpNodeStageVolume     = "NodeStageVolume"
	OpNodeUnstageVolume   = "NodeUnstageVolume"
	OpNodePublishVolume   = "NodePublishVolume"
	OpNodeUnpublishVolume = "NodeUnpublishVolume"
	OpGetPluginInfo       = "GetPluginInfo"
)

// CSIOptions configure a CSI scenario run.
type CSIOptions struct {
	Endpoint      string // unix:///path, /path, or tcp://host:port
	Scenario      string
	N             int // volumes (create, create-delete) or publish targets (publish)
	Workers       int
	Prefix        string // volume names are Prefix-i; targets Prefix-i under TargetDir
	Params        map[string]string
	AccessMode    csi.VolumeCapability_AccessMode_Mode
	FsType        string
	MountFlags    []string
	CapacityBytes int64 // 0: no capacity_range
	Readonly      bool  // NodePublishVolume readonly
	TargetDir     string
	VolumeID      string // publish: use this volume instead of creating one
	VolumeContext map[string]string
	IDsFile       string        // create writes, delete reads, create-delete writes if set
	Timeout       time.Duration // per RPC
	RSSPID        int           // if > 0, sample this process's RSS during the run
	RSSInterval   time.Duration
	Log           io.Writer // warnings; nil discards

	// PVCNamespace, when set, adds the per-volume parameters csi-provisioner's
	// --extra-create-metadata adds to every CreateVolume: pvc/name and pv/name
	// (both the volume's name, PREFIX-i) and pvc/namespace (this value), so a
	// driver's directory templates can use them.
	PVCNamespace string
}

func (o *CSIOptions) config() Config {
	return Config{
		Endpoint:      o.Endpoint,
		N:             o.N,
		Workers:       o.Workers,
		Prefix:        o.Prefix,
		Params:        o.Params,
		AccessMode:    o.AccessMode.String(),
		FsType:        o.FsType,
		MountFlags:    o.MountFlags,
		CapacityBytes: o.CapacityBytes,
		Readonly:      o.Readonly,
		TargetDir:     o.TargetDir,
		VolumeID:      o.VolumeID,
		VolumeContext: o.VolumeContext,
		IDsFile:       o.IDsFile,
		PVCNamespace:  o.PVCNamespace,
		TimeoutS:      o.Timeout.Seconds(),
	}
}

func (o *CSIOptions) validate() error {
	switch o.Scenario {
	case ScenarioCreateDelete, ScenarioCreate, ScenarioInfo:
		if o.N < 1 {
			return fmt.Errorf("-n must be >= 1")
		}
		if o.Scenario == ScenarioCreate && o.IDsFile == "" {
			return fmt.Errorf("scenario create needs -ids FILE to record the volume IDs for a later delete")
		}
	case ScenarioDelete:
		if o.IDsFile == "" {
			return fmt.Errorf("scenario delete needs -ids FILE written by a create run")
		}
	case ScenarioPublish:
		if o.N < 1 {
			return fmt.Errorf("-n must be >= 1")
		}
		if o.TargetDir == "" {
			return fmt.Errorf("scenario publish needs -target-dir")
		}
	default:
		return fmt.Errorf("unknown scenario %q (want %s, %s, %s, %s or %s)", o.Scenario,
			ScenarioCreateDelete, ScenarioCreate, ScenarioDelete, ScenarioPublish, ScenarioInfo)
	}
	if o.Prefix == "" {
		return fmt.Errorf("-prefix must not be empty")
	}
	if strings.ContainsAny(o.Prefix, "/\x00") {
		return fmt.Errorf("-prefix %q must not contain '/' or NUL: it names directories", o.Prefix)
	}
	if o.AccessMode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return fmt.Errorf("access mode UNKNOWN is not a valid request")
	}
	if o.PVCNamespace != "" {
		for _, k := range []string{ParamPVCName, ParamPVCNamespace, ParamPVName} {
			if _, ok := o.Params[k]; ok {
				return fmt.Errorf("-pvc-namespace sets %s per volume; do not also give it in -params", k)
			}
		}
	}
	return nil
}

// Dial connects to a CSI endpoint without TLS, as kubelet and the sidecars
// do. It accepts unix:///abs/path, a bare absolute path, and tcp://host:port.
func Dial(endpoint string) (*grpc.ClientConn, error) {
	target, err := grpcTarget(endpoint)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func grpcTarget(endpoint string) (string, error) {
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		p := strings.TrimPrefix(endpoint, "unix://")
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("endpoint %q: want unix:///absolute/path", endpoint)
		}
		return "unix://" + p, nil
	case strings.HasPrefix(endpoint, "tcp://"):
		hp := strings.TrimPrefix(endpoint, "tcp://")
		if hp == "" || !strings.Contains(hp, ":") {
			return "", fmt.Errorf("endpoint %q: want tcp://host:port", endpoint)
		}
		// passthrough: hand host:port to the dialer as is, no DNS resolver.
		return "passthrough:///" + hp, nil
	case filepath.IsAbs(endpoint):
		return "unix://" + endpoint, nil
	}
	return "", fmt.Errorf("endpoint %q: want unix:///path or tcp://host:port", endpoint)
}

// CreatedVolume is one volume a create run made, as recorded in the IDs file.
type CreatedVolume struct {
	Name          string            `json:"name"`
	VolumeID      string            `json:"volume_id"`
	VolumeContext map[string]string `json:"volume_context,omitempty"`
}

// VolumeList is the IDs file written by the create scenario and read by
// delete: {"schema": "paddock.dev/csiload-volumes/v1", "endpoint": ...,
// "volumes": [{"name", "volume_id", "volume_context"}]}. Only volumes whose
// CreateVolume succeeded are listed.
type VolumeList struct {
	Schema   string          `json:"schema"`
	Endpoint string          `json:"endpoint"`
	Volumes  []CreatedVolume `json:"volumes"`
}

// VolumeListSchema names the IDs file format.
const VolumeListSchema = "paddock.dev/csiload-volumes/v1"

// WriteVolumeList writes vl to path.
func WriteVolumeList(path string, vl VolumeList) error {
	vl.Schema = VolumeListSchema
	if vl.Volumes == nil {
		vl.Volumes = []CreatedVolume{}
	}
	b, err := json.MarshalIndent(vl, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadVolumeList reads an IDs file written by WriteVolumeList.
func ReadVolumeList(path string) (VolumeList, error) {
	var vl VolumeList
	b, err := os.ReadFile(path)
	if err != nil {
		return vl, err
	}
	if err := json.Unmarshal(b, &vl); err != nil {
		return vl, fmt.Errorf("%s: %w", path, err)
	}
	if vl.Schema != VolumeListSchema {
		return vl, fmt.Errorf("%s: schema %q, want %q", path, vl.Schema, VolumeListSchema)
	}
	return vl, nil
}

type csiRun struct {
	o     *CSIOptions
	id    csi.IdentityClient
	ctrl  csi.ControllerClient
	node  csi.NodeClient
	cap   *csi.VolumeCapability
	rep   *Report
	log   io.Writer
	start time.Time
}

func (r *csiRun) warnf(format string, args ...any) {
	fmt.Fprintf(r.log, "csiload: warning: "+format+"\n", args...)
}

// call runs one RPC with the per-call timeout.
func (r *csiRun) call(ctx context.Context, f func(ctx context.Context) error) error {
	if r.o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.o.Timeout)
		defer cancel()
	}
	return f(ctx)
}

// RunCSI runs a CSI scenario and returns its report. An error means the run
// could not be carried out as asked (bad options, unreachable endpoint, no
// volume to publish); failed ops are counted in the report, not returned. The
// report is non-nil whenever any phase ran, even with an error.
func RunCSI(ctx context.Context, o CSIOptions) (*Report, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	conn, err := Dial(o.Endpoint)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	r := &csiRun{
		o:    &o,
		id:   csi.NewIdentityClient(conn),
		ctrl: csi.NewControllerClient(conn),
		node: csi.NewNodeClient(conn),
		cap: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{
				FsType:     o.FsType,
				MountFlags: o.MountFlags,
			}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: o.AccessMode},
		},
		rep:   newReport("csi", o.Scenario, o.config()),
		log:   o.Log,
		start: time.Now(),
	}
	if r.log == nil {
		r.log = io.Discard
	}

	// GetPluginInfo doubles as a connectivity check: a report against the
	// wrong or dead socket should fail loudly, not list N errors.
	err = r.call(ctx, func(ctx context.Context) error {
		resp, err := r.id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		if err == nil {
			r.rep.Driver = &DriverInfo{Name: resp.GetName(), VendorVersion: resp.GetVendorVersion()}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("GetPluginInfo on %s: %w", o.Endpoint, err)
	}

	var sampler *RSSSampler
	if o.RSSPID > 0 {
		sampler = StartRSSSampler(ctx, o.RSSPID, o.RSSInterval)
	}

	switch o.Scenario {
	case ScenarioCreateDelete:
		err = r.createDelete(ctx)
	case ScenarioCreate:
		err = r.createOnly(ctx)
	case ScenarioDelete:
		err = r.deleteOnly(ctx)
	case ScenarioPublish:
		err = r.publish(ctx)
	case ScenarioInfo:
		st := RunOps(ctx, OpGetPluginInfo, o.N, o.Workers, func(ctx context.Context, _ int) error {
			return r.call(ctx, func(ctx context.Context) error {
				_, err := r.id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
				return err
			})
		})
		r.rep.Ops = append(r.rep.Ops, st)
	}

	if sampler != nil {
		rss := sampler.Stop()
		r.rep.RSS = &rss
	}
	r.rep.WallS = time.Since(r.start).Seconds()
	return r.rep, err
}

func (r *csiRun) createPhase(ctx context.Context, names []string) []CreatedVolume {
	made := make([]*CreatedVolume, len(names))
	st := RunOps(ctx, OpCreateVolume, len(names), r.o.Workers, func(ctx context.Context, i int) error {
		req := &csi.CreateVolumeRequest{
			Name:               names[i],
			Parameters:         r.params(names[i]),
			VolumeCapabilities: []*csi.VolumeCapability{r.cap},
		}
		if r.o.CapacityBytes > 0 {
			req.CapacityRange = &csi.CapacityRange{RequiredBytes: r.o.CapacityBytes}
		}
		return r.call(ctx, func(ctx context.Context) error {
			resp, err := r.ctrl.CreateVolume(ctx, req)
			if err != nil {
				return err
			}
			if resp.GetVolume().GetVolumeId() == "" {
				return fmt.Errorf("CreateVolume %s: response has no volume_id", names[i])
			}
			made[i] = &CreatedVolume{
				Name:          names[i],
				VolumeID:      resp.GetVolume().GetVolumeId(),
				VolumeContext: resp.GetVolume().GetVolumeContext(),
			}
			return nil
		})
	})
	r.rep.Ops = append(r.rep.Ops, st)
	var out []CreatedVolume
	for _, v := range made {
		if v != nil {
			out = append(out, *v)
		}
	}
	return out
}

// params is the parameter map of the CreateVolume of the volume called name:
// -params, plus the claim metadata with -pvc-namespace.
func (r *csiRun) params(name string) map[string]string {
	if r.o.PVCNamespace == "" {
		return r.o.Params
	}
	m := make(map[string]string, len(r.o.Params)+3)
	for k, v := range r.o.Params {
		m[k] = v
	}
	m[ParamPVCName], m[ParamPVName], m[ParamPVCNamespace] = name, name, r.o.PVCNamespace
	return m
}

func (r *csiRun) deletePhase(ctx context.Context, ids []string) {
	st := RunOps(ctx, OpDeleteVolume, len(ids), r.o.Workers, func(ctx context.Context, i int) error {
		return r.call(ctx, func(ctx context.Context) error {
			_, err := r.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: ids[i]})
			return err
		})
	})
	r.rep.Ops = append(r.rep.Ops, st)
}

func (r *csiRun) names() []string {
	names := make([]string, r.o.N)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", r.o.Prefix, i)
	}
	return names
}

func (r *csiRun) saveIDs(vols []CreatedVolume) error {
	if r.o.IDsFile == "" {
		return nil
	}
	return WriteVolumeList(r.o.IDsFile, VolumeList{Endpoint: r.o.Endpoint, Volumes: vols})
}

func ids(vols []CreatedVolume) []string {
	out := make([]string, len(vols))
	for i, v := range vols {
		out[i] = v.VolumeID
	}
	return out
}

func (r *csiRun) createDelete(ctx context.Context) error {
	vols := r.createPhase(ctx, r.names())
	// Written before deleting so a crash in the delete phase leaves a list
	// an operator can feed to "-scenario delete".
	saveErr := r.saveIDs(vols)
	r.deletePhase(ctx, ids(vols))
	return saveErr
}

func (r *csiRun) createOnly(ctx context.Context) error {
	return r.saveIDs(r.createPhase(ctx, r.names()))
}

func (r *csiRun) deleteOnly(ctx context.Context) error {
	vl, err := ReadVolumeList(r.o.IDsFile)
	if err != nil {
		return err
	}
	if vl.Endpoint != "" && vl.Endpoint != r.o.Endpoint {
		r.warnf("%s was written for endpoint %s, deleting through %s", r.o.IDsFile, vl.Endpoint, r.o.Endpoint)
	}
	r.rep.Config.N = len(vl.Volumes)
	r.deletePhase(ctx, ids(vl.Volumes))
	return nil
}

// publish measures NodePublishVolume/NodeUnpublishVolume of one volume to N
// targets, the way kubelet publishes one RWX volume into N pods on a node.
func (r *csiRun) publish(ctx context.Context) error {
	volID, volCtx := r.o.VolumeID, r.o.VolumeContext
	created := false
	if volID == "" {
		vols := r.createPhase(ctx, []string{r.o.Prefix + "-0"})
		if len(vols) == 0 {
			return fmt.Errorf("publish: CreateVolume failed: %s", r.rep.Ops[len(r.rep.Ops)-1].FirstError)
		}
		volID, volCtx, created = vols[0].VolumeID, vols[0].VolumeContext, true
	}

	// Targets (and the staging dir) are made before timing: kubelet makes
	// them too, and they are not the driver's cost.
	targets := make([]string, r.o.N)
	for i := range targets {
		targets[i] = filepath.Join(r.o.TargetDir, fmt.Sprintf("%s-%d", r.o.Prefix, i))
		if err := os.MkdirAll(targets[i], 0o750); err != nil {
			return r.publishAbort(ctx, created, volID, fmt.Errorf("publish: %w", err))
		}
	}

	staging := ""
	stage, err := r.needsStage(ctx)
	if err != nil {
		r.warnf("NodeGetCapabilities: %v; assuming no STAGE_UNSTAGE_VOLUME", err)
	}
	if stage {
		staging = filepath.Join(r.o.TargetDir, r.o.Prefix+"-staging")
		if err := os.MkdirAll(staging, 0o750); err != nil {
			return r.publishAbort(ctx, created, volID, fmt.Errorf("publish: %w", err))
		}
		st := RunOps(ctx, OpNodeStageVolume, 1, 1, func(ctx context.Context, _ int) error {
			return r.call(ctx, func(ctx context.Context) error {
				_, err := r.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
					VolumeId:          volID,
					StagingTargetPath: staging,
					VolumeCapability:  r.cap,
					VolumeContext:     volCtx,
				})
				return err
			})
		})
		r.rep.Ops = append(r.rep.Ops, st)
	}

	published := make([]bool, len(targets))
	st := RunOps(ctx, OpNodePublishVolume, len(targets), r.o.Workers, func(ctx context.Context, i int) error {
		return r.call(ctx, func(ctx context.Context) error {
			_, err := r.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
				VolumeId:          volID,
				StagingTargetPath: staging,
				TargetPath:        targets[i],
				VolumeCapability:  r.cap,
				Readonly:          r.o.Readonly,
				VolumeContext:     volCtx,
			})
			if err == nil {
				published[i] = true
			}
			return err
		})
	})
	r.rep.Ops = append(r.rep.Ops, st)

	// Only successful publishes are timed on the way back, so the unpublish
	// numbers are not diluted by no-op calls; the failed ones still get an
	// untimed unpublish in case they left something mounted.
	var ok, failed []string
	for i, t := range targets {
		if published[i] {
			ok = append(ok, t)
		} else {
			failed = append(failed, t)
		}
	}
	unpublish := func(ctx context.Context, target string) error {
		return r.call(ctx, func(ctx context.Context) error {
			_, err := r.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target})
			return err
		})
	}
	st = RunOps(ctx, OpNodeUnpublishVolume, len(ok), r.o.Workers, func(ctx context.Context, i int) error {
		return unpublish(ctx, ok[i])
	})
	if len(ok) > 0 {
		r.rep.Ops = append(r.rep.Ops, st)
	}
	for _, t := range failed {
		_ = unpublish(ctx, t)
	}

	if stage {
		st := RunOps(ctx, OpNodeUnstageVolume, 1, 1, func(ctx context.Context, _ int) error {
			return r.call(ctx, func(ctx context.Context) error {
				_, err := r.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: staging})
				return err
			})
		})
		r.rep.Ops = append(r.rep.Ops, st)
	}

	// os.Remove, never RemoveAll: a target that is somehow still mounted
	// must fail to go away rather than have the volume's data deleted. The
	// spec lets the driver remove targets itself, so ENOENT is fine.
	for _, t := range append(targets, staging) {
		if t == "" {
			continue
		}
		if err := os.Remove(t); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.warnf("leaving %s: %v", t, err)
		}
	}

	if created {
		r.deletePhase(ctx, []string{volID})
	}
	return nil
}

// publishAbort deletes the volume this run created (untimed) before giving
// up, so an aborted run does not leak it.
func (r *csiRun) publishAbort(ctx context.Context, created bool, volID string, err error) error {
	if created {
		if derr := r.call(ctx, func(ctx context.Context) error {
			_, err := r.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: volID})
			return err
		}); derr != nil {
			r.warnf("DeleteVolume %s after abort: %v", volID, derr)
		}
	}
	return err
}

func (r *csiRun) needsStage(ctx context.Context) (bool, error) {
	var stage bool
	err := r.call(ctx, func(ctx context.Context) error {
		resp, err := r.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
		if err != nil {
			return err
		}
		for _, c := range resp.GetCapabilities() {
			if c.GetRpc().GetType() == csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME {
				stage = true
			}
		}
		return nil
	})
	return stage, err
}
