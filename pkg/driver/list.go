package driver

import (
	"context"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/volume"
)

func (c *controller) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalid("ListVolumes: max_entries %d is negative", req.GetMaxEntries())
	}
	if t := req.GetStartingToken(); t != "" {
		if _, err := volume.ParseID(t); err != nil {
			return nil, status.Errorf(codes.Aborted, "ListVolumes: starting_token %q is not one this plugin issued; start again without it", t)
		}
	}
	list, err := c.d.share.ListVolumes(ctx)
	if err != nil {
		return nil, status.Errorf(codeOf(err), "ListVolumes: %v", err)
	}
	ids := make([]string, len(list))
	for i, lv := range list {
		ids[i] = lv.ID
	}
	from, to, next := page(ids, req.GetMaxEntries(), req.GetStartingToken())
	published, err := c.d.share.PublishedNodes(ctx)
	if err != nil {
		return nil, status.Errorf(codeOf(err), "ListVolumes: %v", err)
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, lv := range list[from:to] {
		st := &csi.ListVolumesResponse_VolumeStatus{}
		for _, p := range published[lv.ID] {
			st.PublishedNodeIds = append(st.PublishedNodeIds, p.Node)
		}
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: &csi.Volume{
			VolumeId: lv.ID, CapacityBytes: lv.Capacity, VolumeContext: lv.Volume.Context(), ContentSource: sourceOf(lv.Source),
		}, Status: st})
	}
	return resp, nil
}

// sourceOf turns a claim's recorded content source back into CSI's form.
func sourceOf(s string) *csi.VolumeContentSource {
	kind, id, _ := strings.Cut(s, ":")
	switch kind {
	case "snapshot":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
	case "volume":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
	}
	return nil
}
