package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// QuotaAgents gives a client of the quota agent at addr (host:port); package quota/rpc's pool in
// production. Clients are shared and must not be closed by the caller.
type QuotaAgents func(addr string) (quota.Quotas, error)

// quotaOf is the agent that enforces v's capacity.
func (d *Driver) quotaOf(v volume.Volume) (quota.Quotas, error) {
	return d.quotaAgent(v.QuotaAgent, "volume "+v.Name)
}

// quotaAgent is the agent at addr, for what (a volume, a GetCapacity). A class asks for
// enforcement; a controller without credentials for agents refuses it rather than make a volume
// without its limit.
func (d *Driver) quotaAgent(addr, what string) (quota.Quotas, error) {
	if d.opts.QuotaAgents == nil {
		return nil, status.Errorf(codes.FailedPrecondition,
			"%s: its class enforces capacity (%s=%s) but this controller has no quota agent credentials: start it with --quota-credentials",
			what, volume.ParamQuota, volume.QuotaEnforce)
	}
	q, err := d.opts.QuotaAgents(addr)
	if err != nil {
		return nil, fmt.Errorf("quota agent %s: %w", addr, err)
	}
	return q, nil
}

func quotaTarget(v volume.Volume) quota.Target {
	return quota.Target{Export: v.Share, Path: v.SubDir}
}

// setQuota is share's Enforce hook for CreateVolume: the limit is the volume's recorded capacity
// (which an expansion may have raised since the first call).
func setQuota(q quota.Quotas, v volume.Volume, inodes uint64) func(context.Context, int64) error {
	return func(ctx context.Context, capacity int64) error {
		_, err := q.Set(ctx, quotaTarget(v), quota.Limit{Bytes: uint64(capacity), Inodes: inodes})
		return err
	}
}

// raiseQuota is share's enforce hook for ControllerExpandVolume: bytes change, the class's inode
// limit (not in the ID) is kept as the agent has it.
func raiseQuota(q quota.Quotas, v volume.Volume) func(context.Context, int64) error {
	return func(ctx context.Context, capacity int64) error {
		var inodes uint64
		u, err := q.Usage(ctx, quotaTarget(v))
		switch {
		case err == nil:
			inodes = u.Limit.Inodes
		case !errors.Is(err, quota.ErrNoProject):
			return err
		}
		_, err = q.Set(ctx, quotaTarget(v), quota.Limit{Bytes: uint64(capacity), Inodes: inodes})
		return err
	}
}

// releaseQuota is share's release hook for DeleteVolume.
func releaseQuota(q quota.Quotas, v volume.Volume) func(context.Context) error {
	return func(ctx context.Context) error { return q.Release(ctx, quotaTarget(v)) }
}

// nearFull is the share of its limit past which a volume is reported DEGRADED.
const nearFull = 0.95

// quotaHealth is the health entry of a volume with enforced capacity: DEGRADED at or near its limit,
// or when its usage cannot be read; nil when it is well within it.
func (d *Driver) quotaHealth(ctx context.Context, v volume.Volume) *csi.VolumeHealth_VolumeHealthEntry {
	q, err := d.quotaOf(v)
	var u quota.Usage
	if err == nil {
		u, err = q.Usage(ctx, quotaTarget(v))
	}
	degraded := func(reason, format string, a ...any) *csi.VolumeHealth_VolumeHealthEntry {
		return healthEntry(csi.VolumeHealthErrorType_DEGRADED, reason, fmt.Sprintf(format, a...))
	}
	switch {
	case err != nil:
		return degraded("QuotaUnknown", "the volume's capacity limit and usage cannot be read: %v", err)
	case u.Limit.Bytes == 0:
		return degraded("QuotaMissing", "the volume's project %d has no capacity limit on the server", u.ProjectID)
	case u.Bytes >= u.Limit.Bytes:
		return degraded("QuotaFull", "the volume is full: it uses %d of its %d bytes; writes fail until files are removed or the claim is expanded", u.Bytes, u.Limit.Bytes)
	case float64(u.Bytes) >= nearFull*float64(u.Limit.Bytes):
		return degraded("QuotaNearlyFull", "the volume uses %d of its %d bytes", u.Bytes, u.Limit.Bytes)
	case u.Limit.Inodes > 0 && float64(u.Inodes) >= nearFull*float64(u.Limit.Inodes):
		return degraded("QuotaInodesNearlyFull", "the volume uses %d of its %d files and directories", u.Inodes, u.Limit.Inodes)
	}
	return nil
}

// sickVolume is a volume ControllerListVolumeHealth reports: the share's problem, or its quota's.
type sickVolume struct {
	share.ListedVolume
	quota *csi.VolumeHealth_VolumeHealthEntry
}

// sickVolumes picks from the checked volumes (sorted by ID, as paging needs) those with a problem
// on the export, and those with enforced capacity at or near their limit or whose usage cannot be
// read: one agent call per volume with a quota and no other problem.
func (d *Driver) sickVolumes(ctx context.Context, checked []share.ListedVolume) []sickVolume {
	var out []sickVolume
	for _, lv := range checked {
		switch {
		case lv.Problem != "":
			out = append(out, sickVolume{ListedVolume: lv})
		case lv.Volume.QuotaAgent != "":
			if e := d.quotaHealth(ctx, lv.Volume); e != nil {
				out = append(out, sickVolume{ListedVolume: lv, quota: e})
			}
		}
	}
	return out
}
