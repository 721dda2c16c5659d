package provisioner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/paddock-csi/paddock/pkg/metrics"
)

// Config configures Run.
type Config struct {
	Client     kubernetes.Interface
	DriverName string // provisioner name in StorageClasses and CSI driver name in PVs
	Core       Core
	// Threadiness is the number of claims (and of PVs to delete) worked on at once (default 4).
	Threadiness int
	// VolumesInformer, if set, is a PV informer shared with other controllers (the recycler); the
	// caller runs it. Otherwise the library makes its own.
	VolumesInformer cache.SharedInformer
	// ClaimsInformer and ClassesInformer, if set, are the caller's PVC and StorageClass informers
	// (made before the caller starts its factory, so the library can add its index and handlers).
	ClaimsInformer  cache.SharedIndexInformer
	ClassesInformer cache.SharedInformer
	// RetryStart and RetryMax bound the per-claim exponential backoff (defaults 1s and 5m, as the
	// external csi-provisioner's --retry-interval-start/--retry-interval-max).
	RetryStart, RetryMax time.Duration
	// SnapshotClient reads VolumeSnapshots and VolumeSnapshotContents for restores. Without it, a claim
	// whose data source is a VolumeSnapshot is refused.
	SnapshotClient snapclient.Interface
}

// Run provisions and deletes volumes until ctx ends, then waits for the operations in flight.
//
// The library's own leader election is off: on losing (or, at shutdown, merely leaving) the Lease it
// exits the process with status 1, skipping the driver's graceful shutdown, and it could not gate the
// recycler. The caller elects a leader once for both and runs this only while leading.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Client == nil || cfg.Core == nil || cfg.DriverName == "" {
		return errors.New("provisioner: client, core and driver name are required")
	}
	if cfg.Threadiness <= 0 {
		cfg.Threadiness = controller.DefaultThreadiness
	}
	if cfg.RetryStart <= 0 {
		cfg.RetryStart = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Minute
	}
	limiter := workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.RetryStart, cfg.RetryMax),
		&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
	var workers sync.WaitGroup
	// The claims informer is needed here too (clone sources being deleted), so it is never the library's
	// private one: without the caller's, Run makes and starts its own.
	var factory informers.SharedInformerFactory
	if cfg.ClaimsInformer == nil {
		factory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithTransform(StripManagedFields))
		cfg.ClaimsInformer = factory.Core().V1().PersistentVolumeClaims().Informer()
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: cfg.Client.CoreV1().Events(v1.NamespaceAll)})
	defer broadcaster.Shutdown()
	p := New(cfg.DriverName, cfg.Core, WithKubeClient(cfg.Client), WithSnapshotClient(cfg.SnapshotClient),
		WithEventRecorder(broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: cfg.DriverName})))
	opts := []func(*controller.ProvisionController) error{
		controller.LeaderElection(false),
		controller.Threadiness(cfg.Threadiness),
		controller.RateLimiter(limiter),
		controller.RetryIntervalMax(cfg.RetryMax),
		// Retry for ever with backoff: a claim whose NFS server is down for a day must still be
		// provisioned when it comes back, and a volume must not leak because a delete gave up.
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
		// Save PVs through a background queue that retries until the API server takes them, so a
		// directory created on the export is never orphaned by an API hiccup.
		controller.CreateProvisionedPVLimiter(workqueue.DefaultTypedControllerRateLimiter[string]()),
		// The library's metrics go on Paddock's /metrics (pkg/metrics), not on a port of their own.
		controller.MetricsPort(0),
		controller.MetricsInstance(metrics.Library),
	}
	if cfg.VolumesInformer != nil {
		opts = append(opts, controller.VolumesInformer(cfg.VolumesInformer))
	}
	opts = append(opts, controller.ClaimsInformer(cfg.ClaimsInformer))
	if cfg.ClassesInformer != nil {
		opts = append(opts, controller.ClassesInformer(cfg.ClassesInformer))
	}
	pc := controller.NewProvisionController(ctx, cfg.Client, cfg.DriverName, p, opts...)
	pc.ControllerWaitGroup(&workers)
	sources, err := watchCloneSources(cfg.ClaimsInformer, limiterOf(cfg))
	if err != nil {
		return err
	}
	if factory != nil {
		factory.Start(ctx.Done())
		defer factory.Shutdown()
	}
	workers.Add(1)
	go func() {
		defer workers.Done()
		sources.run(ctx, p.guard, cfg.ClaimsInformer.GetIndexer())
	}()
	pc.Run(ctx) // returns when ctx ends; its workers finish their current item
	workers.Wait()
	return nil
}

func limiterOf(cfg Config) workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.RetryStart, cfg.RetryMax)
}

// cloneSources queues source claims that carry the cloning-protection finalizer and are being deleted,
// so that a finalizer whose clone is over (a controller crashed mid-clone) does not block their deletion
// for ever.
type cloneSources struct {
	queue workqueue.TypedRateLimitingInterface[string]
}

func watchCloneSources(claims cache.SharedIndexInformer, limiter workqueue.TypedRateLimiter[string]) (*cloneSources, error) {
	s := &cloneSources{queue: workqueue.NewTypedRateLimitingQueueWithConfig(limiter,
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "clone-sources"})}
	add := func(obj any) {
		if c, ok := obj.(*v1.PersistentVolumeClaim); ok && c.DeletionTimestamp != nil && slices.Contains(c.Finalizers, CloneFinalizer) {
			s.queue.Add(c.Namespace + "/" + c.Name)
		}
	}
	if _, err := claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, obj any) { add(obj) },
	}); err != nil {
		return nil, fmt.Errorf("provisioner: watching clone sources: %w", err)
	}
	return s, nil
}

func (s *cloneSources) run(ctx context.Context, guard *cloneGuard, claims cache.Indexer) {
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	logger := klog.FromContext(ctx)
	for {
		key, quit := s.queue.Get()
		if quit {
			return
		}
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		src := types.NamespacedName{Namespace: ns, Name: name}
		err := guard.releaseIdle(ctx, src, func() bool {
			var inNS []*v1.PersistentVolumeClaim
			_ = cache.ListAllByNamespace(claims, ns, labels.Everything(), func(obj any) {
				if c, ok := obj.(*v1.PersistentVolumeClaim); ok {
					inNS = append(inNS, c)
				}
			})
			return clonesPending(inNS, src)
		})
		switch {
		case err == nil:
			s.queue.Forget(key)
		case ctx.Err() == nil:
			if !errors.Is(err, errWaiting) {
				logger.Error(err, "Removing the cloning-protection finalizer", "PVC", src)
			}
			s.queue.AddRateLimited(key)
		}
		s.queue.Done(key)
	}
}

// StripManagedFields is an informer transform that drops metadata.managedFields before an object is
// cached. The provisioner and the recycler never read them, and on PVs and PVCs they are often the
// largest part of the object: with 1000 volumes they are most of the controller's heap. Updates sent
// from a cached object carry no managedFields, which the API server takes as "unchanged".
// Annotations are kept (templates read them, and an Update without them would delete them).
func StripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}
