//go:build e2e

package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// Waits are generous (the guest is emulated and shares 2 cores with the control plane) but bounded;
// a timeout reports what was last seen.
const (
	bindTimeout  = 3 * time.Minute
	phaseTimeout = 3 * time.Minute
)

func ptr[T any](v T) *T { return &v }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var seq atomic.Int64

// namespace creates a fresh namespace for one test; its claims are deleted at the end (their
// volumes are reclaimed per their class).
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, seq.Add(1))
	ctx := ctxT(t, time.Minute)
	if _, err := env.Cluster.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = env.Cluster.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

type classOpts struct {
	params       map[string]string
	reclaim      v1.PersistentVolumeReclaimPolicy // default Delete
	wffc         bool
	mountOptions []string
}

// storageClass creates a Paddock StorageClass (name made unique), deleted at the end of the test.
func storageClass(t *testing.T, prefix string, o classOpts) *storagev1.StorageClass {
	t.Helper()
	if o.reclaim == "" {
		o.reclaim = v1.PersistentVolumeReclaimDelete
	}
	mode := storagev1.VolumeBindingImmediate
	if o.wffc {
		mode = storagev1.VolumeBindingWaitForFirstConsumer
	}
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, seq.Add(1))},
		Provisioner:       kubeenv.Driver,
		Parameters:        o.params,
		ReclaimPolicy:     &o.reclaim,
		MountOptions:      o.mountOptions,
		VolumeBindingMode: &mode,
	}
	ctx := ctxT(t, time.Minute)
	sc, err := env.Cluster.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("storageclass: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = env.Cluster.Client.StorageV1().StorageClasses().Delete(ctx, sc.Name, metav1.DeleteOptions{})
	})
	return sc
}

type claimOpts struct {
	class       *string // nil: none (""), for static PVs
	labels      map[string]string
	annotations map[string]string
	modes       []v1.PersistentVolumeAccessMode
	size        string
	volumeName  string
}

func newClaim(ns, name string, o claimOpts) *v1.PersistentVolumeClaim {
	if len(o.modes) == 0 {
		o.modes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
	}
	if o.size == "" {
		o.size = "1Gi"
	}
	if o.class == nil {
		o.class = ptr("")
	}
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: o.labels, Annotations: o.annotations},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      o.modes,
			StorageClassName: o.class,
			VolumeName:       o.volumeName,
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(o.size)}},
		},
	}
}

func createClaim(t *testing.T, ns, name string, o claimOpts) *v1.PersistentVolumeClaim {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, newClaim(ns, name, o), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create claim %s/%s: %v", ns, name, err)
	}
	return pvc
}

func deleteClaim(t *testing.T, ns, name string) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	if err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete claim %s/%s: %v", ns, name, err)
	}
	waitT(t, phaseTimeout, "claim "+ns+"/"+name+" gone", func(ctx context.Context) (bool, string, error) {
		pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, fmt.Sprintf("still there: phase %s, finalizers %v", pvc.Status.Phase, pvc.Finalizers), nil
	})
}

// waitT is kubeenv.WaitFor that fails the test.
func waitT(t *testing.T, timeout time.Duration, what string, cond func(context.Context) (bool, string, error)) {
	t.Helper()
	if err := kubeenv.WaitFor(context.Background(), timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitBound waits until the claim is Bound and returns it and its PV.
func waitBound(t *testing.T, ns, name string) (*v1.PersistentVolumeClaim, *v1.PersistentVolume) {
	t.Helper()
	var pvc *v1.PersistentVolumeClaim
	waitT(t, bindTimeout, "claim "+ns+"/"+name+" Bound", func(ctx context.Context) (bool, string, error) {
		var err error
		pvc, err = env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return pvc.Status.Phase == v1.ClaimBound, fmt.Sprintf("phase %s; events: %s", pvc.Status.Phase, claimEvents(ctx, ns, name)), nil
	})
	pv := getPV(t, pvc.Spec.VolumeName)
	if pv == nil {
		t.Fatalf("claim %s/%s is Bound to PV %q, which does not exist", ns, name, pvc.Spec.VolumeName)
	}
	return pvc, pv
}

func getPV(t *testing.T, name string) *v1.PersistentVolume {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	pv, err := env.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get PV %s: %v", name, err)
	}
	return pv
}

func waitPVPhase(t *testing.T, name string, phase v1.PersistentVolumePhase) *v1.PersistentVolume {
	t.Helper()
	var pv *v1.PersistentVolume
	waitT(t, phaseTimeout, "PV "+name+" "+string(phase), func(ctx context.Context) (bool, string, error) {
		var err error
		pv, err = env.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return pv.Status.Phase == phase, fmt.Sprintf("phase %s (%s), claimRef %v, annotations %v; events: %s",
			pv.Status.Phase, pv.Status.Message, pv.Spec.ClaimRef, pv.Annotations, pvEvents(ctx, name)), nil
	})
	return pv
}

func waitPVGone(t *testing.T, name string) {
	t.Helper()
	waitT(t, phaseTimeout, "PV "+name+" deleted", func(ctx context.Context) (bool, string, error) {
		pv, err := env.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, fmt.Sprintf("phase %s, finalizers %v; events: %s", pv.Status.Phase, pv.Finalizers, pvEvents(ctx, name)), nil
	})
}

func events(ctx context.Context, ns, kind, name string) []v1.Event {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name}.AsSelector().String()
	l, err := env.Cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil
	}
	return l.Items
}

func fmtEvents(evs []v1.Event) string {
	var b []string
	for _, e := range evs {
		b = append(b, fmt.Sprintf("[%s %s %s: %s]", e.Type, e.Reason, e.Source.Component, e.Message))
	}
	if len(b) == 0 {
		return "none"
	}
	return strings.Join(b, " ")
}

func claimEvents(ctx context.Context, ns, name string) string {
	return fmtEvents(events(ctx, ns, "PersistentVolumeClaim", name))
}

func pvEvents(ctx context.Context, name string) string {
	return fmtEvents(events(ctx, metav1.NamespaceDefault, "PersistentVolume", name))
}

// ---------- the export, as the NFS server in the guest sees it ----------

func gsh(t *testing.T, script string) string {
	t.Helper()
	out, err := env.Sh(ctxT(t, 2*time.Minute), script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func exists(t *testing.T, p string) bool {
	t.Helper()
	r, err := env.Guest.Exec(ctxT(t, time.Minute), "test", "-e", p)
	if err != nil {
		t.Fatal(err)
	}
	return r.ExitCode == 0
}

// statOf returns "uid:gid:mode(octal)" of a path on the server.
func statOf(t *testing.T, p string) string {
	t.Helper()
	return strings.TrimSpace(gsh(t, "stat -c %u:%g:%a "+q(p)))
}

// ls lists a directory on the server (names, sorted, dotfiles too).
func ls(t *testing.T, p string) []string {
	t.Helper()
	out := gsh(t, "ls -A1 "+q(p))
	names := strings.Fields(out)
	sort.Strings(names)
	return names
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	gsh(t, "mkdir -p "+q(path.Dir(p))+" && printf %s "+q(content)+" > "+q(p))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	return gsh(t, "cat "+q(p))
}

func waitGuest(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	waitT(t, phaseTimeout, what, func(context.Context) (bool, string, error) {
		ok, msg := cond()
		return ok, msg, nil
	})
}

// claimFile reads Paddock's claim record of subDir on export (.paddock/claims/<sha256(subDir)>): a
// symlink whose target is the record, or a regular file written by an earlier release.
func claimFile(t *testing.T, export, subDir string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(subDir))
	f := q(export + "/.paddock/claims/" + hex.EncodeToString(sum[:]))
	return gsh(t, "if [ -L "+f+" ]; then readlink "+f+"; else cat "+f+"; fi")
}
