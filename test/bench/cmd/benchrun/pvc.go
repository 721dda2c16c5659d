package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/paddock-csi/paddock/test/bench/load"
	"github.com/paddock-csi/paddock/test/cluster"
)

const driverName = "nfs.paddock.dev"

// pvc measures N claims through the real control plane to Bound: first
// against N pre-made static PVs (the floor: the PV controller's binding
// alone), then with Paddock's embedded provisioner in the guest creating the
// directories and the PVs.
func (b *bench) pvc(ctx context.Context, sz sizes) error {
	help, err := b.g.Exec(ctx, "/host/paddock", "-h")
	if err != nil {
		return err
	}
	if !strings.Contains(help.Stderr+help.Stdout, "-provisioner") {
		return fmt.Errorf("this paddock build has no --provisioner flag (pkg/provisioner is not in it)")
	}
	logf("starting the control plane on the host")
	cctx, cancel := context.WithTimeout(ctx, 20*time.Minute) // a cold build of the binaries takes ~6 min
	c, err := cluster.Start(cctx, cluster.Options{ExtraSANs: []string{"10.0.2.2"}})
	cancel()
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	defer c.Stop()
	b.commands = append(b.commands, "(host) test/cluster: etcd + kube-apiserver + kube-controller-manager v1.37.1 on loopback")

	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	for _, cl := range kc.Clusters {
		cl.Server = "https://10.0.2.2:" + strconv.Itoa(c.Port)
	}
	if err := clientcmd.WriteToFile(*kc, filepath.Join(b.resDir, "guest.kubeconfig")); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(b.resDir, "guest.kubeconfig"))

	n := sz.PVCs
	// Floor: static PVs, made and Available before the clock starts.
	static, err := b.bindRun(ctx, c.Client, "bench-static", "bench-static", n, func(ctx context.Context) error {
		if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
			ObjectMeta:        metav1.ObjectMeta{Name: "bench-static"},
			Provisioner:       "kubernetes.io/no-provisioner",
			VolumeBindingMode: ptr(storagev1.VolumeBindingImmediate),
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
		st := load.RunOps(ctx, "create PV", n+1, b.sz.Workers, func(ctx context.Context, i int) error {
			_, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, staticPV(i), metav1.CreateOptions{})
			return err
		})
		if st.Errors > 0 {
			return fmt.Errorf("creating static PVs: %s", st.FirstError)
		}
		return waitFor(ctx, 5*time.Minute, func() (bool, string, error) {
			pvs, err := c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, "", err
			}
			avail := 0
			for _, pv := range pvs.Items {
				if pv.Status.Phase == v1.VolumeAvailable {
					avail++
				}
			}
			return avail >= n+1, fmt.Sprintf("%d/%d static PVs Available", avail, n+1), nil
		})
	})
	if err != nil {
		return fmt.Errorf("static floor: %w", err)
	}

	// Paddock: the embedded provisioner in the guest.
	args := []string{"--mode=controller", "--provisioner", "--kubeconfig=" + b.gres + "/guest.kubeconfig",
		"--endpoint=unix://" + provSock, "--work-dir=/var/lib/paddock-prov", "--node-id=paddock-guest"}
	provPID, err := b.spawnPaddock(ctx, "prov", provSock, args...)
	if err != nil {
		return err
	}
	defer b.stopPaddock(ctx, "prov")
	dyn, err := b.bindRun(ctx, c.Client, "bench-paddock", "bench-paddock", n, func(ctx context.Context) error {
		_, err := c.Client.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
			ObjectMeta:        metav1.ObjectMeta{Name: "bench-paddock"},
			Provisioner:       driverName,
			Parameters:        map[string]string{"server": "127.0.0.1", "share": export},
			ReclaimPolicy:     ptr(v1.PersistentVolumeReclaimDelete),
			VolumeBindingMode: ptr(storagev1.VolumeBindingImmediate),
		}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("paddock provisioner: %w", err)
	}
	provMem, _ := b.rss(ctx, "rss-provisioner-after-pvcs", provPID)

	sAll, dAll := op(static, "all claims Bound"), op(dyn, "all claims Bound")
	sOne, dOne := op(static, "claim created -> Bound"), op(dyn, "claim created -> Bound")
	fig := fmt.Sprintf("%d PVCs to Bound, embedded provisioner (wall)", n)
	r := ratioRow(fig, dAll, dAll.P50Ms, "static PVs", sAll.P50Ms, 1.5, "≤ 1.5× static", "pvc")
	r.note = fmt.Sprintf("per claim p50 %s / p90 %s (static: %s / %s)", msStr(dOne.P50Ms), msStr(dOne.P90Ms), msStr(sOne.P50Ms), msStr(sOne.P90Ms))
	b.add(r)
	b.add(row{fig: "controller with --provisioner, VmHWM after " + strconv.Itoa(n) + " PVCs", value: mib(provMem.VmHWMKiB), group: "rss",
		target: "< 60 MiB", met: tri(provMem.VmHWMKiB > 0 && provMem.VmHWMKiB < 60*1024),
		note: "the controller as deployed (embedded provisioner: informers hold every PV, PVC and StorageClass)"})
	return nil
}

func ptr[T any](v T) *T { return &v }

func staticPV(i int) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-static-%d", i)},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
			StorageClassName:              "bench-static",
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:           driverName,
				VolumeHandle:     fmt.Sprintf("static-%d", i),
				VolumeAttributes: map[string]string{"server": "127.0.0.1", "share": export, "subDir": fmt.Sprintf("static-%d", i)},
			}},
		},
	}
}

func claim(name, class string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			StorageClassName: ptr(class),
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

// bindRun runs setup, binds one warm-up claim, then creates n claims in
// namespace ns (class class) on Workers goroutines and waits until all are
// Bound. The report (written as pvc-<ns>.json) has the create calls, each
// claim's latency from its Create call to the first Bound the watch sees, and
// "all claims Bound": one op from the first Create to the last Bound.
func (b *bench) bindRun(ctx context.Context, cs kubernetes.Interface, ns, class string, n int, setup func(context.Context) error) (*load.Report, error) {
	logf("[pvc %s] setup", ns)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if err := setup(ctx); err != nil {
		return nil, err
	}

	var mu sync.Mutex
	bound := map[string]time.Time{}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().PersistentVolumeClaims().Informer()
	see := func(obj any) {
		pvc, ok := obj.(*v1.PersistentVolumeClaim)
		if !ok || pvc.Status.Phase != v1.ClaimBound {
			return
		}
		now := time.Now()
		mu.Lock()
		if _, seen := bound[pvc.Name]; !seen {
			bound[pvc.Name] = now
		}
		mu.Unlock()
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }}); err != nil {
		return nil, err
	}
	ictx, stop := context.WithCancel(ctx)
	defer stop()
	f.Start(ictx.Done())
	f.WaitForCacheSync(ictx.Done())
	isBound := func(name string) bool { mu.Lock(); defer mu.Unlock(); _, ok := bound[name]; return ok }

	// Warm-up: one claim through the whole path (mounts the export in the
	// provisioner, fills the controllers' caches).
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim("warmup", class), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 3*time.Minute, func() (bool, string, error) { return isBound("warmup"), "warm-up claim not Bound", nil }); err != nil {
		return nil, err
	}

	logf("[pvc %s] creating %d claims", ns, n)
	created := make([]time.Time, n)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c-%d", i)
	}
	start := time.Now()
	createSt := load.RunOps(ctx, "create PVC", n, b.sz.Workers, func(ctx context.Context, i int) error {
		created[i] = time.Now()
		_, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim(names[i], class), metav1.CreateOptions{})
		return err
	})
	timeout := 20 * time.Minute
	waitErr := waitFor(ctx, timeout, func() (bool, string, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(bound) >= n+1, fmt.Sprintf("%d/%d claims Bound", len(bound)-1, n), nil
	})
	all := load.NewRecorder("all claims Bound")
	one := load.NewRecorder("claim created -> Bound")
	mu.Lock()
	var last time.Time
	for i, name := range names {
		t, ok := bound[name]
		if !ok {
			one.Observe(0, fmt.Errorf("claim %s/%s not Bound after %v", ns, name, timeout))
			continue
		}
		one.Observe(t.Sub(created[i]), nil)
		if t.After(last) {
			last = t
		}
	}
	mu.Unlock()
	if waitErr != nil {
		all.Observe(0, waitErr)
	} else {
		all.Observe(last.Sub(start), nil)
	}
	wall := time.Since(start)
	if !last.IsZero() {
		wall = last.Sub(start)
	}
	all.SetWall(wall)
	one.SetWall(wall)
	rep := &load.Report{Schema: load.SchemaVersion, Mode: "cluster", Scenario: "pvc-bind-" + ns, Started: start.UTC(),
		WallS: wall.Seconds(), Config: load.Config{N: n, Workers: b.sz.Workers},
		Ops: []load.OpStats{createSt, one.Stats(), all.Stats()}}
	rep.Host.NumCPU = numCPU()
	rep.Host.Kernel = readTrim("/proc/sys/kernel/osrelease")
	rep.Host.Hostname, _ = os.Hostname()
	if err := rep.WriteJSON(filepath.Join(b.resDir, "pvc-"+ns+".json")); err != nil {
		return nil, err
	}
	rep.WriteText(b.out)
	if waitErr != nil {
		return rep, waitErr
	}
	return rep, nil
}

// waitFor polls cond every 100ms until it is true, errors, or timeout.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := time.Now()
	for {
		ok, msg, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Since(last) > 10*time.Second {
			logf("waiting: %s", msg)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
