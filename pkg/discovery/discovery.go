// Package discovery learns from the cluster which NFS exports the controller looks after: the export
// of every StorageClass that names the driver and of every PV of the driver, each with the mount
// options its class or PV gives. A controller that starts (or takes over the Lease) with an empty work
// dir therefore resumes reaping trash, expiring archives and listing volumes at once, without waiting
// for a call to touch each export. Nothing is written anywhere: the cluster is the record.
package discovery

import (
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// Adder is what discovery feeds; *share.Workspace implements it.
type Adder interface {
	AddExports(xs ...share.Export)
}

// ExportOfClass is the export a StorageClass provisions on, mounted with the class's mountOptions.
func ExportOfClass(sc *storagev1.StorageClass) (share.Export, error) {
	p, err := volume.ParseParams(sc.Parameters)
	if err != nil {
		return share.Export{}, fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}
	v, err := volume.Volume{Server: p.Server, Share: p.Share, NFSVers: p.NFSVers}.WithMountOptions(sc.MountOptions)
	if err != nil {
		return share.Export{}, fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}
	return share.Export{Server: v.Server, Share: v.Share, NFSVers: v.NFSVers, Options: v.MountOptions}, nil
}

// ExportOfPV is the export a provisioned PV's volume lives on (from its Paddock volume ID), mounted
// with the PV's mountOptions. A static PV (a handle that is no Paddock ID, volume.ErrNotPaddockID) is
// not learned: its export need not be Paddock's at all, and the recycler learns it if it empties one.
func ExportOfPV(pv *v1.PersistentVolume) (share.Export, error) {
	v, err := volume.ParseID(pv.Spec.CSI.VolumeHandle)
	if err == nil {
		v, err = v.WithMountOptions(pv.Spec.MountOptions)
	}
	if err != nil {
		return share.Export{}, fmt.Errorf("PV %s: %w", pv.Name, err)
	}
	return share.ExportOf(v), nil
}

// Register makes every StorageClass of driverName that classes holds, and every PV of driverName that
// volumes holds, known to ws, now and as they are added or changed. Objects that name no valid export
// are skipped with a log line: the provisioner and the recycler report them on the objects themselves.
// Exports are never forgotten when their class or PV goes: volumes, trash and archives may outlive both.
func Register(driverName string, classes, volumes cache.SharedInformer, ws Adder) error {
	if classes == nil || volumes == nil || ws == nil || driverName == "" {
		return errors.New("discovery: driver name, informers and workspace are required")
	}
	add := func(obj any) {
		var (
			x   share.Export
			err error
		)
		switch o := obj.(type) {
		case *storagev1.StorageClass:
			if o.Provisioner != driverName {
				return
			}
			x, err = ExportOfClass(o)
		case *v1.PersistentVolume:
			if o.Spec.CSI == nil || o.Spec.CSI.Driver != driverName {
				return
			}
			x, err = ExportOfPV(o)
		default:
			return
		}
		if errors.Is(err, volume.ErrNotPaddockID) {
			return
		}
		if err != nil {
			klog.V(2).InfoS("Export not learned", "err", err)
			return
		}
		ws.AddExports(x)
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }}
	if _, err := classes.AddEventHandler(h); err != nil {
		return fmt.Errorf("discovery: watching StorageClasses: %w", err)
	}
	if _, err := volumes.AddEventHandler(h); err != nil {
		return fmt.Errorf("discovery: watching PVs: %w", err)
	}
	return nil
}
