package driver

import (
	"context"
	"math"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// GetCapacity reports the bytes available on the export a class names (statfs of the export). Without
// parameters there is no export to ask: NFS volumes of different classes share nothing, so it
// reports 0, which CSI allows and which sidecars read as "unknown here". A class with enforced
// capacity reports what is not promised to any volume yet: the filesystem's size less the limits its
// quota agent has set (or its free space, if that is less), as its agent reports them.
func (c *controller) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if len(req.GetVolumeCapabilities()) > 0 {
		if err := volume.CheckCapabilities(req.GetVolumeCapabilities()); err != nil {
			// Capabilities Paddock cannot serve (raw block): nothing is available for them.
			return &csi.GetCapacityResponse{AvailableCapacity: 0}, nil
		}
	}
	if len(req.GetParameters()) == 0 {
		return &csi.GetCapacityResponse{AvailableCapacity: 0}, nil
	}
	p, err := volume.ParseParams(req.GetParameters())
	if err != nil {
		return nil, invalid("GetCapacity: %v", err)
	}
	flags, err := volume.CapabilityMountFlags(req.GetVolumeCapabilities())
	var mo volume.MountOptions
	if err == nil {
		mo, err = volume.ParseMountOptions(flags)
	}
	if err != nil {
		return nil, invalid("GetCapacity: %v", err)
	}
	x := share.Export{Server: p.Server, Share: p.Share, NFSVers: p.NFSVers, Options: mo.ControllerString()}
	if x.NFSVers == "" {
		x.NFSVers = mo.Vers
	}
	if p.Quota.Agent != "" {
		return c.d.quotaCapacity(ctx, p)
	}
	avail, err := c.d.share.Available(ctx, x)
	if err != nil {
		return nil, status.Errorf(codeOf(err), "GetCapacity of %s:%s: %v", p.Server, p.Share, err)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: avail}, nil
}

func (d *Driver) quotaCapacity(ctx context.Context, p volume.Params) (*csi.GetCapacityResponse, error) {
	q, err := d.quotaAgent(p.Quota.Agent, "GetCapacity of "+p.Server+":"+p.Share)
	var qc quota.Capacity
	if err == nil {
		qc, err = q.Capacity(ctx, p.Share)
	}
	if err != nil {
		return nil, status.Errorf(codeOf(err), "GetCapacity of %s:%s from quota agent %s: %v", p.Server, p.Share, p.Quota.Agent, err)
	}
	var unallocated uint64
	if qc.TotalBytes > qc.AllocatedBytes {
		unallocated = qc.TotalBytes - qc.AllocatedBytes
	}
	avail := min(unallocated, qc.FreeBytes, math.MaxInt64)
	return &csi.GetCapacityResponse{AvailableCapacity: int64(avail), MaximumVolumeSize: wrapperspb.Int64(int64(avail))}, nil
}
