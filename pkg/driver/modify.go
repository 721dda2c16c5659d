package driver

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// mutableKeys are the parameters a VolumeAttributesClass may set (CreateVolume's mutable_parameters
// and ControllerModifyVolume): the volume directory's mode and owner, which can change at any time.
var mutableKeys = []string{volume.ParamGID, volume.ParamMode, volume.ParamUID}

// mutable is a validated set of mutable parameters; nil/-1 leave an attribute as it is.
type mutable struct {
	mode     *uint32
	uid, gid int
}

// parseMutable validates mutable parameters with the same rules as the StorageClass's mode, uid and
// gid; any other key is refused, naming the known ones.
func parseMutable(m map[string]string) (mutable, error) {
	mu := mutable{uid: -1, gid: -1}
	var unknown []string
	for k := range m {
		if !slices.Contains(mutableKeys, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return mu, &volume.ParamError{Key: unknown[0], Reason: fmt.Sprintf("not a mutable parameter; mutable parameters are %s", strings.Join(mutableKeys, ", "))}
	}
	// The class parser checks the values; server and share only satisfy it.
	probe := map[string]string{volume.ParamServer: "localhost", volume.ParamShare: "/"}
	for k, v := range m {
		probe[k] = v
	}
	p, err := volume.ParseParams(probe)
	if err != nil {
		return mu, err
	}
	if _, ok := m[volume.ParamMode]; ok {
		mu.mode = &p.Mode
	}
	mu.uid, mu.gid = p.UID, p.GID
	return mu, nil
}

// ControllerModifyVolume applies mutable parameters to an existing volume: chmod and chown of its
// directory (never following a symlink). Pods see the change at once; it is not rolled back.
func (c *controller) ControllerModifyVolume(ctx context.Context, req *csi.ControllerModifyVolumeRequest) (*csi.ControllerModifyVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("ControllerModifyVolume: volume_id is required")
	}
	if len(req.GetMutableParameters()) == 0 {
		return nil, invalid("ControllerModifyVolume %s: mutable_parameters are required (%s)", id, strings.Join(mutableKeys, ", "))
	}
	mu, err := parseMutable(req.GetMutableParameters())
	if err != nil {
		return nil, invalid("ControllerModifyVolume %s: %v", id, err)
	}
	v, err := volume.ParseID(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", id, err)
	}
	var mode *os.FileMode
	if mu.mode != nil {
		m := volume.FileMode(*mu.mode)
		mode = &m
	}
	if err := c.d.share.SetAttributes(ctx, v, mode, mu.uid, mu.gid); err != nil {
		return nil, toStatus(id, err)
	}
	klog.FromContext(ctx).V(2).Info("Volume modified", "volumeID", id, "mutableParameters", req.GetMutableParameters())
	return &csi.ControllerModifyVolumeResponse{}, nil
}
