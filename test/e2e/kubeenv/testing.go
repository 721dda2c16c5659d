package kubeenv

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"
)

// The helpers the tiers' tests (test/e2e/cluster, test/e2e/kubelet) share. Those that take a
// testing.TB fail the test on an error, and remove what they made when the test ends.

// Waits on API objects are generous (the guest is emulated and shares the host's cores with the
// control plane) but bounded; a timeout reports what was last seen.
const (
	BindTimeout  = 3 * time.Minute // a claim Bound
	PhaseTimeout = 3 * time.Minute // a PV's phase; a claim or a PV gone
)

// maxEvents is how many of an object's latest events EventsLine shows.
const maxEvents = 10

// Context returns a context that is done after d or when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitT is WaitFor that fails the test, naming what it waited for and what cond last reported.
func WaitT(t testing.TB, timeout time.Duration, what string, cond func(context.Context) (bool, string, error)) {
	t.Helper()
	if err := WaitFor(context.Background(), timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// WaitGone waits until get fails with NotFound; while the object is there, get describes it.
func WaitGone(t testing.TB, timeout time.Duration, what string, get func(context.Context) (string, error)) {
	t.Helper()
	WaitT(t, timeout, what, func(ctx context.Context) (bool, string, error) {
		desc, err := get(ctx)
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, "still there: " + desc, nil
	})
}

// Quote quotes s as one word for the guest's shell.
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ShT is Sh (2 minutes at most) that fails the test on an error or a non-zero exit.
func (e *Env) ShT(t testing.TB, script string) string {
	t.Helper()
	out, err := e.Sh(Context(t, 2*time.Minute), script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// uniqueName is prefix-<n>, n counting up over the Env's life.
func (e *Env) uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, e.seq.Add(1)) }

// atEnd calls del with a minute to run when the test ends; its error is ignored.
func atEnd(t testing.TB, del func(context.Context) error) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = del(ctx)
	})
}

// NewNamespace creates a fresh namespace (prefix-<n>) for one test and deletes it when the test ends,
// with the claims left in it (their volumes are reclaimed per their class).
func (e *Env) NewNamespace(t testing.TB, prefix string) string {
	t.Helper()
	name := e.uniqueName(prefix)
	nss := e.Cluster.Client.CoreV1().Namespaces()
	if _, err := nss.Create(Context(t, time.Minute), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
	atEnd(t, func(ctx context.Context) error { return nss.Delete(ctx, name, metav1.DeleteOptions{}) })
	return name
}

// NewStorageClass creates a copy of sc named prefix-<n> and deletes it when the test ends. What sc
// leaves empty is Paddock's provisioner (Driver), reclaim policy Delete and binding mode Immediate.
func (e *Env) NewStorageClass(t testing.TB, prefix string, sc *storagev1.StorageClass) *storagev1.StorageClass {
	t.Helper()
	sc = sc.DeepCopy()
	sc.Name = e.uniqueName(prefix)
	if sc.Provisioner == "" {
		sc.Provisioner = Driver
	}
	if sc.ReclaimPolicy == nil {
		sc.ReclaimPolicy = ptr.To(corev1.PersistentVolumeReclaimDelete)
	}
	if sc.VolumeBindingMode == nil {
		sc.VolumeBindingMode = ptr.To(storagev1.VolumeBindingImmediate)
	}
	classes := e.Cluster.Client.StorageV1().StorageClasses()
	made, err := classes.Create(Context(t, time.Minute), sc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("storageclass %s: %v", sc.Name, err)
	}
	atEnd(t, func(ctx context.Context) error { return classes.Delete(ctx, made.Name, metav1.DeleteOptions{}) })
	return made
}

// Claim is a claim of class ("" for none: static PVs only) for size (default 1Gi) with modes (default
// ReadWriteMany).
func Claim(ns, name, class, size string, modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolumeClaim {
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	}
	if size == "" {
		size = "1Gi"
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      modes,
			StorageClassName: &class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

// CreateClaim creates pvc (see Claim) and returns it as created.
func (e *Env) CreateClaim(t testing.TB, pvc *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	t.Helper()
	made, err := e.Cluster.Client.CoreV1().PersistentVolumeClaims(pvc.Namespace).Create(Context(t, time.Minute), pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
	}
	return made
}

// DeleteClaim deletes the claim and waits until it is gone.
func (e *Env) DeleteClaim(t testing.TB, ns, name string) {
	t.Helper()
	claims := e.Cluster.Client.CoreV1().PersistentVolumeClaims(ns)
	if err := claims.Delete(Context(t, time.Minute), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete claim %s/%s: %v", ns, name, err)
	}
	WaitGone(t, PhaseTimeout, "claim "+ns+"/"+name+" gone", func(ctx context.Context) (string, error) {
		pvc, err := claims.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("phase %s, finalizers %v; events: %s", pvc.Status.Phase, pvc.Finalizers, e.ClaimEvents(ctx, ns, name)), nil
	})
}

// WaitBound waits until the claim is Bound and returns it and its PV.
func (e *Env) WaitBound(t testing.TB, ns, name string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	t.Helper()
	var (
		pvc *corev1.PersistentVolumeClaim
		pv  *corev1.PersistentVolume
	)
	WaitT(t, BindTimeout, "claim "+ns+"/"+name+" Bound", func(ctx context.Context) (bool, string, error) {
		var err error
		pvc, err = e.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		if pvc.Status.Phase != corev1.ClaimBound {
			return false, fmt.Sprintf("phase %s; events: %s", pvc.Status.Phase, e.ClaimEvents(ctx, ns, name)), nil
		}
		pv, err = e.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "", fmt.Errorf("claim %s/%s is Bound to PV %q, which does not exist", ns, name, pvc.Spec.VolumeName)
		}
		if err != nil {
			return false, fmt.Sprintf("Bound to PV %s: %v", pvc.Spec.VolumeName, err), nil
		}
		return true, "", nil
	})
	return pvc, pv
}

// WaitPV waits until the PV is in phase, or gone if phase is "", and returns it (nil once gone).
func (e *Env) WaitPV(t testing.TB, name string, phase corev1.PersistentVolumePhase) *corev1.PersistentVolume {
	t.Helper()
	what := "PV " + name + " " + string(phase)
	if phase == "" {
		what = "PV " + name + " deleted"
	}
	var pv *corev1.PersistentVolume
	WaitT(t, PhaseTimeout, what, func(ctx context.Context) (bool, string, error) {
		var err error
		pv, err = e.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return phase == "", "gone", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return pv.Status.Phase == phase, fmt.Sprintf("phase %s (%s), claimRef %v, finalizers %v, annotations %v; events: %s",
			pv.Status.Phase, pv.Status.Message, pv.Spec.ClaimRef, pv.Finalizers, pv.Annotations, e.PVEvents(ctx, name)), nil
	})
	if phase == "" {
		return nil
	}
	return pv
}

// WaitPVGone is WaitPV(t, name, "").
func (e *Env) WaitPVGone(t testing.TB, name string) {
	t.Helper()
	e.WaitPV(t, name, "")
}

// Events returns the events about the object of kind ("" for any kind) ns/name, oldest first, or nil
// if they cannot be listed.
func (e *Env) Events(ctx context.Context, ns, kind, name string) []corev1.Event {
	evs, _ := e.events(ctx, ns, kind, name)
	return evs
}

func (e *Env) events(ctx context.Context, ns, kind, name string) ([]corev1.Event, error) {
	sel := fields.Set{"involvedObject.name": name}
	if kind != "" {
		sel["involvedObject.kind"] = kind
	}
	l, err := e.Cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel.AsSelector().String()})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(l.Items, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	return l.Items, nil
}

func eventTime(ev corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}

// EventsLine is Events on one line, for messages: the latest maxEvents, oldest first, each as
// [type reason source: message (xcount)]; "none" if there are none.
func (e *Env) EventsLine(ctx context.Context, ns, kind, name string) string {
	evs, err := e.events(ctx, ns, kind, name)
	if err != nil {
		return "(listing them: " + err.Error() + ")"
	}
	if len(evs) == 0 {
		return "none"
	}
	var b []string
	if n := len(evs) - maxEvents; n > 0 {
		b = append(b, fmt.Sprintf("(%d earlier)", n))
		evs = evs[n:]
	}
	for _, ev := range evs {
		source := ev.Source.Component
		if source == "" {
			source = ev.ReportingController
		}
		s := fmt.Sprintf("[%s %s %s: %s", ev.Type, ev.Reason, source, ev.Message)
		if ev.Count > 1 {
			s += fmt.Sprintf(" (x%d)", ev.Count)
		}
		b = append(b, s+"]")
	}
	return strings.Join(b, " ")
}

// ClaimEvents is EventsLine of the claim ns/name.
func (e *Env) ClaimEvents(ctx context.Context, ns, name string) string {
	return e.EventsLine(ctx, ns, "PersistentVolumeClaim", name)
}

// PVEvents is EventsLine of the PV name (its events are in the default namespace).
func (e *Env) PVEvents(ctx context.Context, name string) string {
	return e.EventsLine(ctx, metav1.NamespaceDefault, "PersistentVolume", name)
}

// PodEvents is EventsLine of the pod ns/name.
func (e *Env) PodEvents(ctx context.Context, ns, name string) string {
	return e.EventsLine(ctx, ns, "Pod", name)
}
