package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/discovery"
	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/provisioner"
	"github.com/paddock-csi/paddock/pkg/reclaim"
	"github.com/paddock-csi/paddock/pkg/share"
)

// kubeFlags configure the parts that talk to the Kubernetes API (embedded provisioner, recycler).
type kubeFlags struct {
	kubeconfig                                string
	provisioner, recycler, leaderElect        bool
	discover                                  bool
	leaderElectNamespace                      string
	leaseDuration, renewDeadline, retryPeriod time.Duration
	qps                                       float64
	burst                                     int
	threadiness, recycleWorkers               int
	recycleHoldTimeout                        time.Duration
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "paddock"
	}
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig for the Kubernetes API (empty: in-cluster)")
	fs.BoolVar(&k.provisioner, "provisioner", false, "controller: provision PVs for claims whose StorageClass names --driver-name (no csi-provisioner sidecar needed)")
	fs.BoolVar(&k.recycler, "recycler", false, "controller: recycle Released PVs of --driver-name with reclaim policy Recycle (empty the directory, make the PV Available)")
	fs.BoolVar(&k.discover, "discover-exports", false, "controller: learn the exports to reap and list from the StorageClasses and PVs of --driver-name (always on with --provisioner or --recycler; set it alone when the external csi-provisioner provisions). Without it, an export is known only once a call has used it since start")
	fs.BoolVar(&k.leaderElect, "leader-elect", false, "run the provisioner and recycler only while holding a Lease, so several replicas can run")
	fs.StringVar(&k.leaderElectNamespace, "leader-elect-namespace", ns, "namespace of the leader-election Lease (default: $POD_NAMESPACE, else paddock)")
	fs.DurationVar(&k.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a standby waits before taking over an unrenewed Lease")
	fs.DurationVar(&k.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps trying to renew before it stops working")
	fs.DurationVar(&k.retryPeriod, "leader-elect-retry-period", 2*time.Second, "interval between Lease acquire and renew attempts")
	fs.Float64Var(&k.qps, "kube-api-qps", 20, "queries per second to the Kubernetes API")
	fs.IntVar(&k.burst, "kube-api-burst", 40, "burst of queries to the Kubernetes API")
	fs.IntVar(&k.threadiness, "provisioner-threadiness", 4, "claims provisioned (and PVs deleted) at once")
	fs.IntVar(&k.recycleWorkers, "recycler-workers", 2, "PVs recycled at once")
	fs.DurationVar(&k.recycleHoldTimeout, "recycle-hold-timeout", 30*time.Minute, "after this long, a recycle another replica started and never finished is taken over")
}

// start runs the provisioner and the recycler in the background (under the Lease with --leader-elect)
// until ctx ends; wg is done when they have stopped and, with --leader-elect, the Lease is released.
func (k *kubeFlags) start(ctx context.Context, wg *sync.WaitGroup, d *driver.Driver, ws *share.Workspace, opts driver.Options) error {
	if !k.provisioner && !k.recycler && !k.discover {
		if k.leaderElect {
			return errors.New("--leader-elect needs --provisioner, --recycler or --discover-exports")
		}
		return nil
	}
	if opts.Mode == driver.ModeNode || ws == nil {
		return fmt.Errorf("--provisioner, --recycler and --discover-exports need --mode=controller or --mode=all: they use the controller's export workspace")
	}
	cfg, err := k.restConfig()
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	var snapshots snapclient.Interface
	if k.provisioner {
		// Restores read VolumeSnapshots; the client works whether or not their CRDs are installed.
		if snapshots, err = snapclient.NewForConfig(cfg); err != nil {
			return fmt.Errorf("volume snapshot client: %w", err)
		}
	}
	id := identity()
	work := func(ctx context.Context) { k.work(ctx, client, snapshots, id, d, ws, opts.Name) }
	var lock resourcelock.Interface
	if k.leaderElect {
		if k.leaseDuration <= k.renewDeadline || k.renewDeadline <= k.retryPeriod || k.retryPeriod <= 0 {
			return errors.New("leader election needs --leader-elect-lease-duration > --leader-elect-renew-deadline > --leader-elect-retry-period > 0")
		}
		lock = &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: k.leaderElectNamespace, Name: provisioner.LeaseName(opts.Name)},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if lock == nil {
			work(ctx)
			return
		}
		runElected(ctx, lock, k.leaseDuration, k.renewDeadline, k.retryPeriod, work)
	}()
	return nil
}

func (k *kubeFlags) restConfig() (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if k.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", k.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes API config (--kubeconfig=%q): %w", k.kubeconfig, err)
	}
	cfg.QPS = float32(k.qps)
	cfg.Burst = k.burst
	return rest.AddUserAgent(cfg, "paddock/"+version), nil
}

// work runs export discovery and the selected controllers until ctx ends and they have stopped. They
// share one PV informer.
func (k *kubeFlags) work(ctx context.Context, client kubernetes.Interface, snapshots snapclient.Interface, id string, d *driver.Driver, ws *share.Workspace, driverName string) {
	logger := klog.FromContext(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 15*time.Minute,
		informers.WithTransform(provisioner.StripManagedFields))
	pvs := factory.Core().V1().PersistentVolumes().Informer()
	// Every export the cluster uses becomes known here at once (this replica may have just taken over
	// with an empty work dir), so the reaper, archive expiry and listings cover all of them.
	if err := discovery.Register(driverName, factory.Storage().V1().StorageClasses().Informer(), pvs, ws); err != nil {
		logger.Error(err, "Export discovery not started")
	}
	var running sync.WaitGroup
	if k.recycler {
		r, err := reclaim.New(reclaim.Config{Client: client, DriverName: driverName, Scrubber: ws, Informer: pvs,
			Identity: id, Workers: k.recycleWorkers, HoldTimeout: k.recycleHoldTimeout})
		if err != nil {
			logger.Error(err, "Recycler not started")
		} else {
			running.Add(1)
			go func() {
				defer running.Done()
				if err := r.Run(ctx); err != nil && ctx.Err() == nil {
					logger.Error(err, "Recycler stopped")
				}
			}()
		}
	}
	if k.provisioner {
		// Requested here, before factory.Start, so that the factory starts them.
		claims := factory.Core().V1().PersistentVolumeClaims().Informer()
		classes := factory.Storage().V1().StorageClasses().Informer()
		running.Add(1)
		go func() {
			defer running.Done()
			err := provisioner.Run(ctx, provisioner.Config{Client: client, DriverName: driverName, Core: d,
				Threadiness: k.threadiness, VolumesInformer: pvs, ClaimsInformer: claims, ClassesInformer: classes,
				SnapshotClient: snapshots})
			if err != nil {
				logger.Error(err, "Provisioner stopped")
			}
		}()
	}
	factory.Start(ctx.Done())
	running.Wait()
	factory.Shutdown()
}

// runElected runs work only while holding the Lease, campaigning again after losing it, until ctx
// ends. The library's own election is not used: it exits the process when leadership ends, even at a
// normal shutdown. Here, at shutdown the work stops first and only then is the Lease released, so a
// standby never works while this replica still does; after a lost Lease the work is stopped (and
// waited for) before campaigning again.
func runElected(ctx context.Context, lock resourcelock.Interface, leaseDuration, renewDeadline, retryPeriod time.Duration, work func(context.Context)) {
	logger := klog.FromContext(ctx).WithValues("lease", lock.Describe(), "identity", lock.Identity())
	for ctx.Err() == nil {
		// The election outlives ctx until the work is done: ReleaseOnCancel releases at its end.
		electCtx, cancelElect := context.WithCancel(context.WithoutCancel(ctx))
		var mu sync.Mutex
		started, stopping := false, false
		workDone := make(chan struct{})
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
			ReleaseOnCancel: true, Name: lock.Describe(),
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(leadCtx context.Context) {
					defer close(workDone)
					mu.Lock()
					if stopping {
						mu.Unlock()
						return
					}
					started = true
					mu.Unlock()
					wctx, cancel := context.WithCancel(leadCtx) // ends when the Lease is lost...
					defer cancel()
					defer context.AfterFunc(ctx, cancel)() // ...or at shutdown
					logger.Info("Leading: provisioner and recycler running")
					work(wctx)
					logger.Info("Provisioner and recycler stopped")
				},
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			cancelElect()
			logger.Error(err, "Leader election misconfigured; provisioner and recycler not started")
			return
		}
		// At shutdown: wait for the work, then end the election (which releases the Lease).
		go func() {
			select {
			case <-ctx.Done():
			case <-electCtx.Done():
				return
			}
			mu.Lock()
			stopping = true
			s := started
			mu.Unlock()
			if s {
				<-workDone
			}
			cancelElect()
		}()
		le.Run(electCtx)
		mu.Lock()
		stopping = true
		s := started
		mu.Unlock()
		if s {
			<-workDone
		}
		cancelElect()
		if ctx.Err() == nil {
			logger.Info("Lost the Lease: provisioner and recycler stopped; campaigning again")
		}
	}
}

func identity() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "_" + hex.EncodeToString(b)
}
