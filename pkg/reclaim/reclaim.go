// Package reclaim recycles Paddock volumes whose PV has reclaim policy Recycle. Kubernetes never
// recycles CSI volumes (its PV controller marks them Failed: "No recycler plugin found for the
// volume!"), so this reconciler does what Kubernetes' own recycler did for NFS: once the claim is gone
// it empties the volume's directory (contents removed, directory kept) and unbinds the PV so the PV
// controller makes it Available for the next claim. It handles dynamically provisioned PVs (Paddock
// volume IDs) and hand-made static ones (server, share and subDir in volumeAttributes).
package reclaim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/volume"
)

const (
	// AnnRecycling marks a PV being recycled: "<holder>@<RFC3339 time>". It is written with an
	// optimistic-concurrency Update before the directory is touched, so of two reconcilers (two
	// installs, or a leader hand-over) exactly one scrubs; it is removed in the Update that unbinds.
	AnnRecycling = "paddock.dev/recycling"
	// annBoundByController is set by the PV controller when it, not the user, bound the PV.
	annBoundByController = "pv.kubernetes.io/bound-by-controller"
	// annProvisionedBy names the provisioner that made a PV. A provisioner creates the PV already
	// bound to its claim, so such a PV has no annBoundByController although no user pre-bound it.
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"
)

// Event reasons on the PV.
const (
	ReasonRecycled       = "Recycled"
	ReasonRecycleFailed  = "RecycleFailed"
	ReasonRecyclePending = "RecyclePending"
)

// Scrubber empties a volume's directory, keeping the directory; *share.Workspace implements it.
type Scrubber interface {
	Scrub(ctx context.Context, v volume.Volume) error
}

// Config configures a Reconciler.
type Config struct {
	Client     kubernetes.Interface
	DriverName string
	Scrubber   Scrubber
	// Informer, if set, is a shared PV informer the caller runs; otherwise the reconciler runs its own.
	Informer cache.SharedIndexInformer
	// Recorder, if set, records events; otherwise events go to the API server.
	Recorder record.EventRecorder
	// Identity names this reconciler in AnnRecycling (default: hostname and a random suffix).
	Identity string
	Workers  int // PVs recycled at once (default 2)
	// HoldTimeout is how long another holder's AnnRecycling is respected before it is taken over
	// (it crashed, or lost its Lease, mid-recycle). It must exceed the longest scrub (default 30m).
	HoldTimeout time.Duration
	// RetryStart and RetryMax bound the per-PV exponential backoff (defaults 1s and 5m).
	RetryStart, RetryMax time.Duration
	Resync               time.Duration // own informer's resync period (default 10m)
	Now                  func() time.Time
}

// Reconciler recycles Released (or recycle-Failed) Recycle PVs of one CSI driver.
type Reconciler struct {
	cfg      Config
	informer cache.SharedIndexInformer
	ownInf   bool
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	// get reads a PV from the informer's cache; tests replace it to race two reconcilers on one version.
	get func(name string) (*v1.PersistentVolume, bool, error)
}

// New builds a reconciler; Run starts it.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Client == nil || cfg.Scrubber == nil || cfg.DriverName == "" {
		return nil, errors.New("reclaim: client, scrubber and driver name are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = 30 * time.Minute
	}
	if cfg.RetryStart <= 0 {
		cfg.RetryStart = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Minute
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Identity == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.Identity = host + "_" + hex.EncodeToString(b)
	}
	if strings.Contains(cfg.Identity, "@") {
		return nil, fmt.Errorf("reclaim: identity %q must not contain '@'", cfg.Identity)
	}
	r := &Reconciler{cfg: cfg, informer: cfg.Informer, recorder: cfg.Recorder}
	if r.informer == nil {
		r.informer = informers.NewSharedInformerFactory(cfg.Client, cfg.Resync).Core().V1().PersistentVolumes().Informer()
		r.ownInf = true
	}
	r.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedMaxOfRateLimiter(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.RetryStart, cfg.RetryMax),
			&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
		),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "paddock-recycle"})
	store := r.informer.GetStore()
	r.get = func(name string) (*v1.PersistentVolume, bool, error) {
		obj, ok, err := store.GetByKey(name)
		if err != nil || !ok {
			return nil, ok, err
		}
		pv, isPV := obj.(*v1.PersistentVolume)
		if !isPV {
			return nil, false, fmt.Errorf("informer returned %T for PV %s", obj, name)
		}
		return pv, true, nil
	}
	enqueue := func(obj any) {
		if pv, ok := obj.(*v1.PersistentVolume); ok && r.wants(pv) {
			r.queue.Add(pv.Name)
		}
	}
	if _, err := r.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return nil, fmt.Errorf("reclaim: watching PVs: %w", err)
	}
	return r, nil
}

// Run recycles until ctx ends, then waits for the recycles in flight.
func (r *Reconciler) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("recycler")
	ctx = klog.NewContext(ctx, logger)
	defer r.queue.ShutDown()
	if r.recorder == nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartStructuredLogging(4)
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.cfg.Client.CoreV1().Events("")})
		defer b.Shutdown()
		r.recorder = b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "paddock-recycler"})
	}
	if r.ownInf {
		go r.informer.Run(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), r.informer.HasSynced) {
		return ctx.Err()
	}
	logger.Info("Recycling PVs with reclaim policy Recycle", "driver", r.cfg.DriverName, "identity", r.cfg.Identity)
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, r.worker, time.Second)
		}()
	}
	<-ctx.Done()
	r.queue.ShutDown()
	wg.Wait()
	return nil
}

func (r *Reconciler) worker(ctx context.Context) {
	for {
		name, quit := r.queue.Get()
		if quit {
			return
		}
		after, err := r.sync(ctx, name)
		switch {
		case errors.Is(err, errRetry):
			klog.FromContext(ctx).V(2).Info("Recycle must wait, will retry", "PV", name, "reason", err)
			r.queue.AddRateLimited(name)
		case err != nil:
			klog.FromContext(ctx).Error(err, "Recycle failed, will retry", "PV", name)
			r.queue.AddRateLimited(name)
		case after > 0:
			r.queue.Forget(name)
			r.queue.AddAfter(name, after)
		default:
			r.queue.Forget(name)
		}
		r.queue.Done(name)
	}
}

// wants tells whether a PV is one this reconciler must recycle now: a PV of our driver, policy
// Recycle, still bound to a claim (by UID) and Released, or Failed because the PV controller found no
// recycler. Any Failed is accepted rather than matching the PV controller's message text: with policy
// Recycle a PV only becomes Failed after its claim is released, and sync checks the claim is gone.
func (r *Reconciler) wants(pv *v1.PersistentVolume) bool {
	return pv.Spec.CSI != nil && pv.Spec.CSI.Driver == r.cfg.DriverName &&
		pv.Spec.PersistentVolumeReclaimPolicy == v1.PersistentVolumeReclaimRecycle &&
		pv.DeletionTimestamp == nil &&
		pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.UID != "" &&
		(pv.Status.Phase == v1.VolumeReleased || pv.Status.Phase == v1.VolumeFailed)
}

// errRetry marks an expected wait (a pod still uses the claim, another writer changed the PV): retried
// with backoff, logged quietly.
var errRetry = errors.New("retry")

// pendingError says which pods still use the claim; it is also a PV event, so it reads plainly.
type pendingError struct{ msg string }

func (e *pendingError) Error() string        { return e.msg }
func (e *pendingError) Is(target error) bool { return target == errRetry }

// sync recycles one PV. It returns a delay to look again after, or an error to retry with backoff.
func (r *Reconciler) sync(ctx context.Context, name string) (time.Duration, error) {
	pv, ok, err := r.get(name)
	if err != nil || !ok || !r.wants(pv) {
		return 0, err
	}
	logger := klog.FromContext(ctx).WithValues("PV", name)
	ctx = klog.NewContext(ctx, logger)

	// Another reconciler holds it: wait for it to finish, or to be presumed dead.
	holder, since, held := parseHold(pv.Annotations[AnnRecycling])
	if held && holder != r.cfg.Identity {
		if age := r.cfg.Now().Sub(since); age < r.cfg.HoldTimeout {
			logger.V(2).Info("PV is being recycled by another reconciler", "holder", holder, "since", since)
			return r.cfg.HoldTimeout - age, nil
		}
		logger.Info("Taking over a stale recycle", "holder", holder, "since", since)
	}

	v, err := decode(pv)
	if err != nil {
		// A forged or mistyped PV: never retried on a timer (a fix to the PV triggers a new sync).
		msg := fmt.Sprintf("Refusing to recycle: %v", err)
		r.recorder.Event(pv, v1.EventTypeWarning, ReasonRecycleFailed, msg)
		metrics.Recycled.WithLabelValues("invalid").Inc()
		logger.Error(err, "Refusing to recycle PV")
		return 0, nil
	}

	if err := r.checkReleased(ctx, pv); err != nil {
		var pending *pendingError
		if errors.As(err, &pending) {
			r.recorder.Event(pv, v1.EventTypeNormal, ReasonRecyclePending, pending.msg)
			return 0, err
		}
		if errors.Is(err, errNotReleased) {
			logger.V(2).Info("Not recycling: the claim still exists", "PVC", pvcKey(pv))
			return 0, nil
		}
		return 0, err
	}

	// Take (or renew) the hold with the version everything above was decided on, even when the hold
	// is already ours: the Update fails if that version is stale, so the directory is never scrubbed
	// on the word of an outdated cache (the PV may since have been unbound and bound to a new claim).
	own := pv.DeepCopy()
	if own.Annotations == nil {
		own.Annotations = map[string]string{}
	}
	own.Annotations[AnnRecycling] = r.cfg.Identity + "@" + r.cfg.Now().UTC().Format(time.RFC3339)
	pv, err = r.cfg.Client.CoreV1().PersistentVolumes().Update(ctx, own, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// Someone else changed it first (maybe another reconciler took it): look again.
		return 0, fmt.Errorf("%w: PV %s changed while taking it for recycling: %v", errRetry, name, err)
	}
	if err != nil {
		return 0, fmt.Errorf("taking PV %s for recycling: %w", name, err)
	}

	logger.Info("Recycling volume", "server", v.Server, "share", v.Share, "subDir", v.SubDir, "PVC", pvcKey(pv))
	if err := r.cfg.Scrubber.Scrub(ctx, v); err != nil {
		r.recorder.Eventf(pv, v1.EventTypeWarning, ReasonRecycleFailed, "Emptying %s:%s/%s failed (will retry): %v", v.Server, v.Share, v.SubDir, err)
		metrics.Recycled.WithLabelValues("error").Inc()
		return 0, fmt.Errorf("recycling PV %s: %w", name, err)
	}

	// Unbind as Kubernetes' recycler does: a PV the controller bound loses its claimRef; one the user
	// pre-bound keeps the claim's name (it stays reserved for that claim) and loses only the UID. A PV
	// our provisioner made was bound by it, not by a user: it loses its claimRef too, or it would stay
	// reserved for a claim that is gone and no new claim of its class could ever bind it.
	done := pv.DeepCopy()
	delete(done.Annotations, AnnRecycling)
	claim := pvcKey(pv)
	_, byController := done.Annotations[annBoundByController]
	if byController || done.Annotations[annProvisionedBy] == r.cfg.DriverName {
		done.Spec.ClaimRef = nil
		delete(done.Annotations, annBoundByController)
	} else {
		done.Spec.ClaimRef.UID = ""
	}
	if len(done.Annotations) == 0 {
		done.Annotations = nil
	}
	if _, err := r.cfg.Client.CoreV1().PersistentVolumes().Update(ctx, done, metav1.UpdateOptions{}); err != nil {
		// The directory is empty; the next pass (ours, the annotation is ours) scrubs nothing and unbinds.
		if apierrors.IsConflict(err) {
			return 0, fmt.Errorf("%w: PV %s changed while unbinding it: %v", errRetry, name, err)
		}
		return 0, fmt.Errorf("unbinding recycled PV %s: %w", name, err)
	}
	r.recorder.Eventf(pv, v1.EventTypeNormal, ReasonRecycled, "Emptied %s:%s/%s after claim %s was released; the volume is available again",
		v.Server, v.Share, v.SubDir, claim)
	metrics.Recycled.WithLabelValues("success").Inc()
	logger.Info("Recycled volume", "PVC", claim)
	return 0, nil
}

var errNotReleased = errors.New("claim still exists")

// checkReleased makes sure no one can still be using the directory: the claim the PV names is gone (or
// the name now belongs to a new claim) and no running pod mounts a claim of that name, as the PV
// controller checks before it recycles.
func (r *Reconciler) checkReleased(ctx context.Context, pv *v1.PersistentVolume) error {
	ref := pv.Spec.ClaimRef
	pvc, err := r.cfg.Client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case err == nil && pvc.UID == ref.UID:
		return errNotReleased
	case err == nil:
		return nil // the name is reused: pods mounting it mount the new claim's volume
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("reading claim %s of PV %s: %w", pvcKey(pv), pv.Name, err)
	}
	pods, err := r.cfg.Client.CoreV1().Pods(ref.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing pods that may use claim %s of PV %s: %w", pvcKey(pv), pv.Name, err)
	}
	var users []string
	for _, p := range pods.Items {
		if p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			continue
		}
		for _, vol := range p.Spec.Volumes {
			if vol.PersistentVolumeClaim != nil && vol.PersistentVolumeClaim.ClaimName == ref.Name {
				users = append(users, p.Name)
				break
			}
		}
	}
	if len(users) > 0 {
		return &pendingError{fmt.Sprintf("Not recycling while pods use claim %s: %s", pvcKey(pv), strings.Join(users, ", "))}
	}
	return nil
}

// decode finds the volume's directory: from a Paddock volume ID, or for a static PV from its
// volumeAttributes (validated like StorageClass parameters: no "..", no absolute subDir), and how to
// mount its export from the PV's mountOptions (a static PV may pin the NFS version there).
func decode(pv *v1.PersistentVolume) (volume.Volume, error) {
	v, err := volume.FromPV(pv.Spec.CSI.VolumeHandle, pv.Spec.CSI.VolumeAttributes, pv.Spec.MountOptions)
	if err != nil {
		return v, fmt.Errorf("PV %s: %w", pv.Name, err)
	}
	return v, nil
}

func parseHold(s string) (holder string, since time.Time, ok bool) {
	if s == "" {
		return "", time.Time{}, false
	}
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return s, time.Time{}, true // unreadable time: stale, may be taken over
	}
	t, err := time.Parse(time.RFC3339, s[i+1:])
	if err != nil {
		return s[:i], time.Time{}, true
	}
	return s[:i], t, true
}

func pvcKey(pv *v1.PersistentVolume) string {
	if pv.Spec.ClaimRef == nil {
		return ""
	}
	return pv.Spec.ClaimRef.Namespace + "/" + pv.Spec.ClaimRef.Name
}
