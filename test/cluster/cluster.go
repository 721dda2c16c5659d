// Package cluster runs a real Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager and optionally kube-scheduler) on loopback for tests.
// The binaries are built from the Go module proxy by build.sh (module ./tools)
// and cached; there is no kubelet and no container runtime, so pods never run,
// but everything the API server and the controllers do is real: RBAC,
// admission, PV/PVC binding, scheduling, TokenRequest.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configures Start.
type Options struct {
	// Dir is the state dir: certificates, etcd data, logs, kubeconfigs.
	// Default: a temp dir, removed by Stop. A Dir given here is kept, and a
	// later Start on it reuses the etcd data, the CA and the SA key.
	Dir string
	// ExtraSANs are additional IPs or DNS names for the apiserver serving
	// cert, e.g. "10.0.2.2", the address at which a QEMU user-net guest
	// reaches host loopback.
	ExtraSANs []string
	// Scheduler also runs kube-scheduler.
	Scheduler bool
	// NodeAuthorizer authorizes kubelets as a production cluster does (the
	// Node authorizer before RBAC, and the NodeRestriction admission plugin),
	// for a real kubelet joined with NodeKubeconfig.
	NodeAuthorizer bool
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler and kubectl. Default: $PADDOCK_CLUSTER_BIN if set, else
	// the output of build.sh (which builds them on first use, ~10 min cold).
	BinDir string
}

// Cluster is a running control plane.
type Cluster struct {
	Dir        string
	Kubeconfig string // admin kubeconfig (system:masters client cert)
	Config     *rest.Config
	Client     kubernetes.Interface
	Port       int    // apiserver secure port on 127.0.0.1
	URL        string // https://127.0.0.1:Port
	BinDir     string
	EtcdURL    string
	CAFile     string // CA of the apiserver serving cert and of client certs
	CAData     []byte

	pki     *pki
	procs   []*proc
	tmpDir  bool
	hbCtx   context.Context // lives until Stop; fake-node heartbeats
	stopHB  context.CancelFunc
	hbWG    sync.WaitGroup
	stopMu  sync.Mutex
	stopped bool
	stopErr error
}

// Start builds (if needed) and starts the control plane, and returns when the
// apiserver is ready and the controller-manager (and scheduler) are healthy.
// ctx bounds the startup only; the processes run until Stop. On error every
// process started so far has been stopped, and the error includes the tail of
// the failing process's log.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	c := &Cluster{Dir: o.Dir, BinDir: o.BinDir}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "paddock-cluster-"); err != nil {
			return nil, err
		}
		c.tmpDir = true
	}
	if c.Dir, err = filepath.Abs(c.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.BinDir == "" {
		c.BinDir = os.Getenv("PADDOCK_CLUSTER_BIN")
	}
	if c.BinDir == "" {
		if c.BinDir, err = EnsureBinaries(ctx); err != nil {
			return nil, err
		}
	}
	c.hbCtx, c.stopHB = context.WithCancel(context.Background())

	if c.pki, err = newPKI(filepath.Join(c.Dir, "pki"), o.ExtraSANs); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	c.CAFile, c.CAData = c.pki.caCert, c.pki.caPEM

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	c.Port = apiPort
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	c.EtcdURL = fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)

	// etcd. --unsafe-no-fsync: test data, and fsync dominates write latency.
	etcd, err := c.start("etcd", "etcd",
		"--name=paddock",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+c.EtcdURL,
		"--advertise-client-urls="+c.EtcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=paddock="+peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	if err := etcd.waitHTTP(ctx, http.DefaultClient, c.EtcdURL+"/health"); err != nil {
		return nil, err
	}

	p := c.pki
	authz, extra := "RBAC", []string(nil)
	if o.NodeAuthorizer {
		authz, extra = "Node,RBAC", []string{"--enable-admission-plugins=NodeRestriction"}
	}
	api, err := c.start("kube-apiserver", "kube-apiserver", append([]string{
		"--etcd-servers=" + c.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + p.serverCert,
		"--tls-private-key-file=" + p.serverKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=" + authz,
		"--allow-privileged=true",
		// There is no kube-proxy or real node IP: the kubernetes Service's
		// endpoints would point at loopback, which the apiserver refuses.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver-certs"),
		// Front proxy (aggregation) settings as kubeadm sets them; one CA
		// for everything is enough for a test cluster.
		"--requestheader-client-ca-file=" + p.caCert,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.proxyCert,
		"--proxy-client-key-file=" + p.proxyKey,
	}, extra...)...)
	if err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.URL, c.CAData, kubeUser{certFile: p.adminCert, keyFile: p.adminKey}); err != nil {
		return nil, err
	}
	c.Config = &rest.Config{
		Host: c.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.CAData, CertData: p.adminCertPEM, KeyData: p.adminKeyP,
		},
		// Tests create objects in bursts; the client-side default (5 QPS)
		// would only add waiting.
		QPS: 200, Burst: 400,
	}
	tr, err := rest.TransportFor(c.Config)
	if err != nil {
		return nil, err
	}
	if err := api.waitHTTP(ctx, &http.Client{Transport: tr}, c.URL+"/readyz"); err != nil {
		return nil, err
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}

	kcmKC := filepath.Join(c.Dir, "controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmKC, c.URL, c.CAData, kubeUser{certFile: p.kcmCert, keyFile: p.kcmKey}); err != nil {
		return nil, err
	}
	probe := insecureClient()
	defer probe.CloseIdleConnections()
	kcm, _, err := c.startServing(ctx, probe, "kube-controller-manager", func(port int) []string {
		return []string{
			"--kubeconfig=" + kcmKC,
			"--authentication-kubeconfig=" + kcmKC,
			"--authorization-kubeconfig=" + kcmKC,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(c.Dir, "controller-manager-certs"),
			"--leader-elect=false",
			// Each controller runs as its own service account with the
			// bootstrap RBAC roles, as kubeadm sets it up.
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + p.saKey,
			"--root-ca-file=" + p.caCert,
			"--controllers=*",
			// The PV binder only looks for a volume when it syncs a claim; a
			// claim processed before its informer has seen a PV created a moment
			// earlier waits for the next resync (15 s by default). Same code
			// path, just sooner: tests create PV and PVC within milliseconds.
			"--pvclaimbinder-sync-period=2s",
		}
	})
	if err != nil {
		return nil, err
	}
	if o.Scheduler {
		schedKC := filepath.Join(c.Dir, "scheduler.kubeconfig")
		if err := writeKubeconfig(schedKC, c.URL, c.CAData, kubeUser{certFile: p.schedCert, keyFile: p.schedKey}); err != nil {
			return nil, err
		}
		if _, _, err := c.startServing(ctx, probe, "kube-scheduler", func(port int) []string {
			return []string{
				"--kubeconfig=" + schedKC,
				"--authentication-kubeconfig=" + schedKC,
				"--authorization-kubeconfig=" + schedKC,
				"--bind-address=127.0.0.1",
				"--secure-port=" + strconv.Itoa(port),
				"--cert-dir=" + filepath.Join(c.Dir, "scheduler-certs"),
				"--leader-elect=false",
			}
		}); err != nil {
			return nil, err
		}
	}
	// kube-controller-manager answers /healthz before its controllers run: it
	// constructs them one by one (seconds) and starts them together. Objects
	// created in that gap wait for a resync (the PV binder's is 15 s), so wait
	// for a sign that the controllers are running: the service-account
	// controller's "default" ServiceAccount in "default".
	if err := kcm.waitFor(ctx, "controllers (default ServiceAccount)", func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// startServing starts a component that serves HTTPS on a port of its own (kube-controller-manager,
// kube-scheduler) and waits for its /healthz. The port is picked just before the start, and picked
// again if the component finds it taken: between freePorts releasing a port and the component binding
// it, any connection on loopback (the API server's clients among them) can get it as its ephemeral
// local port, and the bind fails with "address already in use".
func (c *Cluster) startServing(ctx context.Context, probe *http.Client, name string, args func(port int) []string) (*proc, int, error) {
	var err error
	for attempt := 1; ; attempt++ {
		ports, perr := freePorts(1)
		if perr != nil {
			return nil, 0, perr
		}
		p, serr := c.start(name, name, args(ports[0])...)
		if serr != nil {
			return nil, 0, serr
		}
		err = p.waitHTTP(ctx, probe, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0]))
		if err == nil {
			return p, ports[0], nil
		}
		if attempt == 3 || !p.exited() || !strings.Contains(p.tail(5), "address already in use") {
			return nil, 0, err
		}
		p.stop(0)
	}
}

func (c *Cluster) start(name, bin string, args ...string) (*proc, error) {
	p, err := startProc(c.Dir, name, filepath.Join(c.BinDir, bin), args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// Stop stops every process Start started, in reverse order, and removes the
// state dir if Start created it. It is idempotent and safe to defer.
func (c *Cluster) Stop() error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.stopped {
		return c.stopErr
	}
	c.stopped = true
	if c.stopHB != nil {
		c.stopHB()
	}
	c.hbWG.Wait()
	var errs []error
	// A component that died on its own before Stop is worth reporting.
	for _, p := range c.procs {
		if p.exited() {
			errs = append(errs, p.failure(errors.New("exited before Stop")))
		}
	}
	// Clients of the apiserver (controller-manager, scheduler) first, in
	// parallel; then the apiserver; etcd last, so nobody logs a lost backend.
	stopAll := func(ps []*proc) {
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Go(func() { p.stop(10 * time.Second) })
		}
		wg.Wait()
	}
	if len(c.procs) > 2 {
		stopAll(c.procs[2:])
	}
	for i := min(len(c.procs), 2) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	if c.tmpDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	c.stopErr = errors.Join(errs...)
	return c.stopErr
}

// Kubectl runs kubectl with the admin kubeconfig and returns its combined
// output; on failure the error includes that output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// EnsureBinaries runs build.sh, which builds the control-plane binaries on
// first use and returns their directory.
func EnsureBinaries(ctx context.Context) (string, error) {
	script, err := buildScript()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", script)
	// build.sh reports progress on stderr; pass it through so a 10-minute
	// cold build does not look like a hang.
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// buildScript finds build.sh next to this source file (go test builds
// without -trimpath), else below the current directory's ancestors.
func buildScript() (string, error) {
	var cands []string
	if _, file, _, ok := runtime.Caller(0); ok {
		cands = append(cands, filepath.Join(filepath.Dir(file), "build.sh"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			cands = append(cands, filepath.Join(d, "test", "cluster", "build.sh"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, f := range cands {
		if _, err := os.Stat(f); err == nil {
			return f, nil
		}
	}
	return "", fmt.Errorf("build.sh not found (looked at %v); set PADDOCK_CLUSTER_BIN or Options.BinDir", cands)
}
