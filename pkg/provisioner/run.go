package provisioner

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
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
	if cfg.ClaimsInformer != nil {
		opts = append(opts, controller.ClaimsInformer(cfg.ClaimsInformer))
	}
	if cfg.ClassesInformer != nil {
		opts = append(opts, controller.ClassesInformer(cfg.ClassesInformer))
	}
	pc := controller.NewProvisionController(ctx, cfg.Client, cfg.DriverName, New(cfg.DriverName, cfg.Core), opts...)
	pc.ControllerWaitGroup(&workers)
	pc.Run(ctx) // returns when ctx ends; its workers finish their current item
	workers.Wait()
	return nil
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
