//go:build e2e

package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/pkg/volume"
	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// docs/migration.md, followed step by step, on volumes made the way csi-driver-nfs and
// nfs-subdir-external-provisioner make them. Neither runs here: their PVs, claims and directories are
// written as they would have written them (see the doc's "What the old drivers made"), which is all
// a migration sees of them.

const (
	csiNFSDriver       = "nfs.csi.k8s.io"
	subdirProvisioner  = "k8s-sigs.io/nfs-subdir-external-provisioner"
	migratePV          = "migrate.paddock.dev/pv" // the annotation the migration classes' templates read
	provisionerFinal   = "external-provisioner.volume.kubernetes.io/finalizer"
	csiProvisionerID   = "1764460800000-8081-nfs.csi.k8s.io" // csi-provisioner's identity attribute
	oldVolumeSize      = "5Gi"
	migrationTestLimit = 15 * time.Minute
)

// oldVolume is a volume an old driver made: its claim, its PV and its directory on the server.
type oldVolume struct {
	ns, claim, class string
	pv               string
	export, subDir   string
}

func (o oldVolume) dir() string { return o.export + "/" + o.subDir }

// foreignClass is a StorageClass of another provisioner, deleted at the end of the test.
func foreignClass(t *testing.T, prefix, provisioner string, params map[string]string) string {
	t.Helper()
	return env.NewStorageClass(t, prefix, &storagev1.StorageClass{Provisioner: provisioner, Parameters: params,
		MountOptions: []string{"nfsvers=4.1"}}).Name
}

// oldClaim creates a claim of class as a user did, and returns its UID: the provisioner names the PV
// pvc-<UID>.
func oldClaim(t *testing.T, ns, name, class string) types.UID {
	t.Helper()
	return createClaim(t, ns, name, claimOpts{class: &class, size: oldVolumeSize}).UID
}

// bindOld creates pv for the claim, as a provisioner does (claimRef with the claim's UID), and waits
// until kube-controller-manager has bound the two.
func bindOld(t *testing.T, pv *v1.PersistentVolume) {
	t.Helper()
	pvs := env.Cluster.Client.CoreV1().PersistentVolumes()
	if _, err := pvs.Create(kubeenv.Context(t, time.Minute), pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // what the migration leaves undone if it fails half way
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if p, err := pvs.Get(ctx, pv.Name, metav1.GetOptions{}); err == nil && p.Annotations["pv.kubernetes.io/provisioned-by"] == pv.Annotations["pv.kubernetes.io/provisioned-by"] {
			_, _ = pvs.Patch(ctx, pv.Name, types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{})
			_ = pvs.Delete(ctx, pv.Name, metav1.DeleteOptions{})
		}
	})
	env.WaitBound(t, pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name)
}

// oldPV is the part of a provisioned PV both drivers' PVs share.
func oldPV(name, provisioner, class string, claim oldVolume, uid types.UID) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisioner}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse(oldVolumeSize)},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			StorageClassName:              class,
			MountOptions:                  []string{"nfsvers=4.1"},
			ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: claim.ns, Name: claim.claim, UID: uid},
		},
	}
}

// csiDriverNFSVolume makes a volume as csi-driver-nfs (through csi-provisioner) makes it for claim
// ns/name of class, whose parameters are params: the directory <share>/<subDir> (the PV name
// unless the class has a subDir template, here already expanded as subDir), and a PV of driver
// nfs.csi.k8s.io with its handle, attributes, annotation and finalizer.
func csiDriverNFSVolume(t *testing.T, ns, name, class string, params map[string]string, subDir string) oldVolume {
	t.Helper()
	uid := oldClaim(t, ns, name, class)
	pvName := "pvc-" + string(uid)
	v := oldVolume{ns: ns, claim: name, class: class, pv: pvName, export: params["share"], subDir: subDir}
	uuid := pvName
	if subDir == "" {
		v.subDir, uuid = pvName, "" // no template: the PV name, and no uuid field
	}
	// CreateVolume: MkdirAll 0777 under the controller's umask.
	env.ShT(t, "mkdir -p -m 0755 "+kubeenv.Quote(v.dir()))
	attrs := map[string]string{"csi.storage.k8s.io/pv/name": pvName, "csi.storage.k8s.io/pvc/name": name,
		"csi.storage.k8s.io/pvc/namespace": ns, "storage.kubernetes.io/csiProvisionerIdentity": csiProvisionerID}
	for k, val := range params {
		attrs[k] = val
	}
	key := "subdir" // the class's spelling of the key if it has one (csi-driver-nfs keys are case-insensitive)
	if _, ok := params["subDir"]; ok {
		key = "subDir"
	}
	attrs[key] = v.subDir
	onDelete := params["onDelete"]
	if onDelete == "delete" {
		onDelete = ""
	}
	pv := oldPV(pvName, csiNFSDriver, class, v, uid)
	pv.Finalizers = []string{provisionerFinal}
	pv.Spec.CSI = &v1.CSIPersistentVolumeSource{Driver: csiNFSDriver,
		VolumeHandle:     strings.Join([]string{kubeenv.Server, strings.Trim(v.export, "/"), v.subDir, uuid, onDelete}, "#"),
		VolumeAttributes: attrs}
	bindOld(t, pv)
	return v
}

// subdirVolume makes a volume as nfs-subdir-external-provisioner makes it (NFS_PATH export, no
// pathPattern): the directory <namespace>-<claim>-<PV name>, chmod 0777, and an in-tree NFS PV.
func subdirVolume(t *testing.T, ns, name, class, export string) oldVolume {
	t.Helper()
	uid := oldClaim(t, ns, name, class)
	pvName := "pvc-" + string(uid)
	v := oldVolume{ns: ns, claim: name, class: class, pv: pvName, export: export, subDir: ns + "-" + name + "-" + pvName}
	env.ShT(t, "mkdir -p "+kubeenv.Quote(v.dir())+" && chmod 0777 "+kubeenv.Quote(v.dir()))
	pv := oldPV(pvName, subdirProvisioner, class, v, uid)
	pv.Spec.NFS = &v1.NFSVolumeSource{Server: kubeenv.Server, Path: v.dir()}
	bindOld(t, pv)
	return v
}

// fill writes what a workload left in dir: files at two depths, one with an owner and a mode.
func fill(t *testing.T, dir, tag string) {
	t.Helper()
	d := kubeenv.Quote(dir)
	env.ShT(t, "mkdir -p "+d+" && cd "+d+" && printf %s "+kubeenv.Quote(tag)+" > data.txt && mkdir -p sub/deep && printf deep > sub/deep/x && chown -R 1000:1000 sub && chmod 0640 sub/deep/x")
}

// tree lists dir on the server as it is: every entry's name, inode, owner, mode, size and
// modification time, and every file's checksum. The same tree is the same data, not moved or copied.
func tree(t *testing.T, dir string) string {
	t.Helper()
	return env.ShT(t, "cd "+kubeenv.Quote(dir)+" && find . -exec stat -c '%n %i %u:%g %a %s %Y' {} \\; | sort && find . -type f -exec md5sum {} \\; | sort")
}

// oldDir reads an old PV's directory as docs/migration.md does: csi-driver-nfs's volumeAttributes
// (server, share, subdir or subDir), or subdir-provisioner's nfs path below NFS_PATH (nfsPath).
func oldDir(t *testing.T, pv *v1.PersistentVolume, nfsPath string) (server, share, subDir string) {
	t.Helper()
	switch {
	case pv.Spec.CSI != nil && pv.Spec.CSI.Driver == csiNFSDriver:
		a := pv.Spec.CSI.VolumeAttributes
		return a["server"], a["share"], a["subdir"] + a["subDir"]
	case pv.Spec.NFS != nil:
		rest, ok := strings.CutPrefix(pv.Spec.NFS.Path, nfsPath+"/")
		if !ok {
			t.Fatalf("PV %s: path %s is not below NFS_PATH %s", pv.Name, pv.Spec.NFS.Path, nfsPath)
		}
		return pv.Spec.NFS.Server, nfsPath, rest
	}
	t.Fatalf("PV %s is neither csi-driver-nfs's nor subdir-provisioner's", pv.Name)
	return "", "", ""
}

// retireOld is steps 4 and 5 of docs/migration.md: the old PV set to Retain, the claim deleted, the
// PV deleted (csi-driver-nfs's finalizer removed by hand: its controller does not run here).
func retireOld(t *testing.T, o oldVolume) {
	t.Helper()
	ctx := kubeenv.Context(t, 5*time.Minute)
	pvs := env.Cluster.Client.CoreV1().PersistentVolumes()
	if _, err := pvs.Patch(ctx, o.pv, types.StrategicMergePatchType,
		[]byte(`{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	env.DeleteClaim(t, o.ns, o.claim)
	env.WaitPV(t, o.pv, v1.VolumeReleased)
	if err := pvs.Delete(ctx, o.pv, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// csi-provisioner's finalizer stays without csi-driver-nfs's controller; the PV is Retain, so
	// removing it by hand is safe (the doc's step 5). (kube-controller-manager removes its own
	// pv-protection finalizer meanwhile, and the PV may be gone before the patch.)
	if pv, err := pvs.Get(ctx, o.pv, metav1.GetOptions{}); err == nil && slices.Contains(pv.Finalizers, provisionerFinal) {
		if _, err := pvs.Patch(ctx, o.pv, types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	env.WaitPVGone(t, o.pv)
}

// adopt is step 6: the claim again, same namespace and name, in the migration class, with the old
// PV's name in the annotation the template reads. It returns the new PV once Bound.
func adopt(t *testing.T, o oldVolume, class string) *v1.PersistentVolume {
	t.Helper()
	createClaim(t, o.ns, o.claim, claimOpts{class: &class, size: oldVolumeSize, annotations: map[string]string{migratePV: o.pv}})
	_, pv := env.WaitBound(t, o.ns, o.claim)
	v, err := volume.ParseID(pv.Spec.CSI.VolumeHandle)
	if err != nil || v.Share != o.export || v.SubDir != o.subDir {
		t.Errorf("claim %s/%s: new PV %s handle %q (%+v, %v), want a Paddock volume of %s", o.ns, o.claim, pv.Name,
			pv.Spec.CSI.VolumeHandle, v, err, o.dir())
	}
	if rec := claimFile(t, o.export, o.subDir); !strings.Contains(rec, "adopted=true") || !strings.Contains(rec, "name="+pv.Name+"\n") {
		t.Errorf("Paddock's claim record of %s does not say %s adopted it:\n%s", o.subDir, pv.Name, rec)
	}
	return pv
}

// TestMigrationFromCSIDriverNFSAndSubdirProvisioner: docs/migration.md, both ways, for both drivers.
//
//   - web: csi-driver-nfs, default layout (<share>/pvc-<uid>), adopted by a Delete class (with a mode
//     the adopted directory must not get); deleting the claim later trashes that directory and the
//     reaper removes it;
//   - db: csi-driver-nfs, class subDir ${pvc.metadata.namespace}/${pvc.metadata.name} with onDelete
//     archive (handle with uuid and onDelete), adopted by a Recycle class with the same template;
//     deleting the claim later empties the directory in place and makes the PV Available;
//   - logs: subdir-provisioner (<NFS_PATH>/<ns>-<claim>-<pv>), adopted by an archive class; deleting
//     the claim later archives the directory into .paddock/archive, data intact;
//   - cache: subdir-provisioner, its claim object kept (a static Paddock PV of the old PV's name,
//     rebound from Lost), reclaim Recycle;
//
// with every directory's tree (inodes, owners, modes, times, checksums) unchanged by the migration, a
// second claim naming an adopted directory refused, and an old archived-* directory and an unrelated
// neighbour untouched throughout.
func TestMigrationFromCSIDriverNFSAndSubdirProvisioner(t *testing.T) {
	ctx := kubeenv.Context(t, migrationTestLimit)
	ns := env.NewNamespace(t, "migrate")
	csiParams := map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA}
	csiNestedParams := map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA,
		"subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}", "onDelete": "archive"}
	nfsCSI := foreignClass(t, "nfs-csi", csiNFSDriver, csiParams)
	nfsCSINested := foreignClass(t, "nfs-csi-nested", csiNFSDriver, csiNestedParams)
	nfsClient := foreignClass(t, "nfs-client", subdirProvisioner, map[string]string{"archiveOnDelete": "false"})

	web := csiDriverNFSVolume(t, ns, "web", nfsCSI, csiParams, "")
	db := csiDriverNFSVolume(t, ns, "db", nfsCSINested, csiNestedParams, ns+"/db")
	logs := subdirVolume(t, ns, "logs", nfsClient, kubeenv.ExportB)
	// On ExportB, where TestStaticRecyclePV and TestStaticRecyclePVsOnOneExport recycle static PVs too.
	cache := subdirVolume(t, ns, "cache", nfsClient, kubeenv.ExportB)
	all := []oldVolume{web, db, logs, cache}
	for _, o := range all {
		fill(t, o.dir(), o.claim)
	}
	// What else the exports hold: an old volume subdir-provisioner archived, and a directory that is
	// no volume at all.
	archived := kubeenv.ExportB + "/archived-" + ns + "-gone-pvc-0f0e0d0c-0000-4000-8000-000000000000"
	neighbour := kubeenv.ExportA + "/" + ns + "-neighbour"
	fill(t, archived, "archived")
	fill(t, neighbour, "neighbour")
	others := map[string]string{archived: tree(t, archived), neighbour: tree(t, neighbour)}
	before := map[string]string{}
	for _, o := range all {
		before[o.claim] = tree(t, o.dir())
	}
	unchanged := func(when string, dirs ...oldVolume) {
		t.Helper()
		for _, o := range dirs {
			if got := tree(t, o.dir()); got != before[o.claim] {
				t.Errorf("%s: %s changed:\nbefore:\n%s\nnow:\n%s", when, o.dir(), before[o.claim], got)
			}
		}
		for dir, want := range others {
			if got := tree(t, dir); got != want {
				t.Errorf("%s: %s (no volume of Paddock's) changed:\nbefore:\n%s\nnow:\n%s", when, dir, want, got)
			}
		}
	}

	// Where each old PV's directory is, read as the doc reads it.
	for _, o := range all {
		server, share, subDir := oldDir(t, getPV(t, o.pv), o.export) // the export is NFS_PATH for subdir-provisioner
		if server != kubeenv.Server || share != o.export || subDir != o.subDir {
			t.Fatalf("PV %s: the doc's reading gives %s:%s/%s, the volume is %s", o.pv, server, share, subDir, o.dir())
		}
	}

	// Step 1: the migration classes.
	migWeb := env.NewStorageClass(t, "migrate-nfs-csi", &storagev1.StorageClass{
		MountOptions: []string{"nfsvers=4.1"}, Parameters: map[string]string{
			"server": kubeenv.Server, "share": kubeenv.ExportA, "reuseExisting": "true", "onDelete": "delete",
			"subDir": "${pvc.metadata.annotations['" + migratePV + "']}",
			"mode":   "0700"}}).Name // applies to new directories only
	migDB := env.NewStorageClass(t, "migrate-nfs-csi-nested", &storagev1.StorageClass{
		ReclaimPolicy: ptr.To(v1.PersistentVolumeReclaimRetain), MountOptions: []string{"nfsvers=4.1"},
		Parameters: map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA, "reuseExisting": "true",
			"subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}", "reclaimPolicy": "Recycle"}}).Name
	migLogs := env.NewStorageClass(t, "migrate-nfs-client", &storagev1.StorageClass{
		MountOptions: []string{"nfsvers=4.1"}, Parameters: map[string]string{
			"server": kubeenv.Server, "share": kubeenv.ExportB, "reuseExisting": "true", "onDelete": "archive",
			"subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}-${pvc.metadata.annotations['" + migratePV + "']}"}}).Name

	// Steps 4 to 6 (no workload runs here: step 2 is moot).
	newPV := map[string]*v1.PersistentVolume{}
	for _, m := range []struct {
		o     oldVolume
		class string
	}{{web, migWeb}, {db, migDB}, {logs, migLogs}} {
		retireOld(t, m.o)
		unchanged("old claim and PV of "+m.o.claim+" deleted", all...)
		newPV[m.o.claim] = adopt(t, m.o, m.class)
	}
	unchanged("adopted", all...)
	if pv := newPV["db"]; pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRecycle {
		t.Errorf("db's new PV has reclaim policy %s, want Recycle (the class parameter)", pv.Spec.PersistentVolumeReclaimPolicy)
	}

	// A second claim naming web's directory is refused: it is a Paddock volume now.
	createClaim(t, ns, "web-again", claimOpts{class: &migWeb, size: oldVolumeSize, annotations: map[string]string{migratePV: web.pv}})
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "a ProvisioningFailed event naming "+web.subDir, func(ctx context.Context) (bool, string, error) {
		for _, e := range env.Events(ctx, ns, "PersistentVolumeClaim", "web-again") {
			if e.Reason == "ProvisioningFailed" && strings.Contains(e.Message, web.subDir) {
				return true, "", nil
			}
		}
		return false, "events: " + env.ClaimEvents(ctx, ns, "web-again"), nil
	})
	if pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "web-again", metav1.GetOptions{}); err != nil || pvc.Status.Phase != v1.ClaimPending {
		t.Errorf("the second claim of web's directory: %v, %v; want Pending", pvc.Status.Phase, err)
	}
	env.DeleteClaim(t, ns, "web-again")

	// The static way, keeping cache's claim object: the old PV goes while the claim is bound (its
	// protection finalizer removed), the claim is Lost, and a Paddock PV of the same name, naming the
	// claim by UID, binds it again.
	claims := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns)
	keep, err := claims.Get(ctx, cache.claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pvs := env.Cluster.Client.CoreV1().PersistentVolumes()
	if _, err := pvs.Patch(ctx, cache.pv, types.StrategicMergePatchType,
		[]byte(`{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pvs.Delete(ctx, cache.pv, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pvs.Patch(ctx, cache.pv, types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	env.WaitPVGone(t, cache.pv)
	waitClaimPhase(t, ns, cache.claim, v1.ClaimLost)
	static := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: cache.pv},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse(oldVolumeSize)},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRecycle,
			StorageClassName:              cache.class,
			MountOptions:                  []string{"nfsvers=4.1"},
			ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: ns, Name: cache.claim, UID: keep.UID},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: kubeenv.Driver, VolumeHandle: "migrated-" + ns + "-" + cache.claim,
				VolumeAttributes: map[string]string{"server": kubeenv.Server, "share": cache.export, "subDir": cache.subDir}}},
		},
	}
	if _, err := pvs.Create(ctx, static, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pvs.Delete(ctx, cache.pv, metav1.DeleteOptions{})
	})
	if pvc, _ := env.WaitBound(t, ns, cache.claim); pvc.UID != keep.UID {
		t.Errorf("claim %s is a new object (UID %s, was %s)", cache.claim, pvc.UID, keep.UID)
	}
	unchanged("all migrated", all...)

	// Reclaim afterwards, one volume at a time, each acting on its own directory alone.
	t.Run("delete", func(t *testing.T) {
		pv := newPV["web"]
		env.DeleteClaim(t, ns, web.claim)
		env.WaitPVGone(t, pv.Name)
		waitGuest(t, web.dir()+" gone from the export", func() (bool, string) { return !exists(t, web.dir()), "still there" })
		waitGuest(t, "the trash emptied of "+pv.Name, func() (bool, string) {
			for _, e := range ls(t, kubeenv.ExportA+"/.paddock/trash") {
				if strings.Contains(e, pv.Name) {
					return false, "trash holds " + e
				}
			}
			return true, ""
		})
		unchanged("web deleted", db, logs, cache)
	})
	t.Run("recycle", func(t *testing.T) {
		env.DeleteClaim(t, ns, db.claim)
		waitAvailable(t, newPV["db"].Name)
		if got := ls(t, db.dir()); len(got) != 0 {
			t.Errorf("recycled %s holds %v", db.dir(), got)
		}
		// The directory itself stays: the same inode, owner and mode (its line in its tree).
		var want string
		for _, l := range strings.Split(before["db"], "\n") {
			if f := strings.Fields(l); len(f) >= 4 && f[0] == "." {
				want = strings.Join(f[:4], " ")
			}
		}
		if got := strings.TrimSpace(env.ShT(t, "stat -c '. %i %u:%g %a' "+kubeenv.Quote(db.dir()))); got != want {
			t.Errorf("recycled %s is %q, want the same directory as before, %q", db.dir(), got, want)
		}
		unchanged("db recycled", logs, cache)
	})
	t.Run("archive", func(t *testing.T) {
		pv := newPV["logs"]
		env.DeleteClaim(t, ns, logs.claim)
		env.WaitPVGone(t, pv.Name)
		if exists(t, logs.dir()) {
			t.Errorf("%s is still in its place after its claim (onDelete archive) was deleted", logs.dir())
		}
		var entry string
		for _, e := range ls(t, kubeenv.ExportB+"/.paddock/archive") {
			if strings.HasPrefix(e, logs.subDir+"@") {
				entry = e
			}
		}
		if entry == "" {
			t.Fatalf("no archive of %s in %s/.paddock/archive: %v", logs.subDir, kubeenv.ExportB, ls(t, kubeenv.ExportB+"/.paddock/archive"))
		}
		if got := tree(t, kubeenv.ExportB+"/.paddock/archive/"+entry); got != before["logs"] {
			t.Errorf("the archive of %s is not the directory as it was:\nbefore:\n%s\narchive:\n%s", logs.subDir, before["logs"], got)
		}
		unchanged("logs archived", cache)
	})
	t.Run("static recycle", func(t *testing.T) {
		env.DeleteClaim(t, ns, cache.claim)
		waitAvailable(t, cache.pv)
		if got := ls(t, cache.dir()); len(got) != 0 {
			t.Errorf("recycled %s holds %v", cache.dir(), got)
		}
	})
	unchanged("every volume reclaimed")
}

// waitClaimPhase waits until the claim ns/name is in phase.
func waitClaimPhase(t *testing.T, ns, name string, phase v1.PersistentVolumeClaimPhase) {
	t.Helper()
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, fmt.Sprintf("claim %s/%s %s", ns, name, phase), func(ctx context.Context) (bool, string, error) {
		pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return pvc.Status.Phase == phase, "phase " + string(pvc.Status.Phase), nil
	})
}
