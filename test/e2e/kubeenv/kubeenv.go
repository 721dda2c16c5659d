// Package kubeenv is the harness shared by the cluster and kubelet end-to-end tiers (test/e2e/cluster,
// test/e2e/kubelet) and the demo (test/e2e/demo): a real control plane on the host (test/cluster), a
// QEMU guest with a kernel NFS server (test/vm), Paddock's deploy/kubernetes base applied for real, and
// paddock processes in the guest that reach the API server through QEMU's user network (10.0.2.2) with
// the token of the ServiceAccount the manifests create, so the manifests' RBAC is what they run with.
// The guest can also be made a Kubernetes node (node.go). testing.go holds the helpers both tiers'
// tests use.
package kubeenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/test/cluster"
	"github.com/paddock-csi/paddock/test/vm"
)

const (
	// Driver is the CSI driver and provisioner name the base manifests install.
	Driver = "nfs.paddock.dev"
	// Namespace is the namespace of the base manifests.
	Namespace = "paddock"
	// ControllerSA is the controller's ServiceAccount in the base manifests.
	ControllerSA = "paddock-controller"
	// Server is the NFS server as the guest sees it.
	Server = "127.0.0.1"
	// ExportA and ExportB are two exports of the guest's NFS server (no_root_squash).
	ExportA = "/srv/nfs/a"
	ExportB = "/srv/nfs/b"
	// Paddock is the guest-local copy of the paddock binary (9p has no page cache: every exec from
	// /host would read the whole binary from the host again).
	Paddock = "/usr/local/bin/paddock"
	// GuestShare is where the host share directory appears in the guest.
	GuestShare = "/host"
	// RunDir holds the paddock processes' sockets and pid files in the guest.
	RunDir = "/run/paddock"
)

// Options configure Start.
type Options struct {
	GuestDir   string // host dir with the static paddock binary (make guest-binaries: _output/guest)
	Repo       string // repository root (for deploy/); default: found from the working directory
	MemoryMB   int    // guest memory (default 2048)
	CPUs       int    // guest virtual CPUs (default 1)
	Forward    []int  // guest TCP ports to expose on host loopback
	ClusterDir string // control-plane state dir (default: a temp dir removed by Stop)
	Node       bool   // authorize kubelets as a production cluster does (for StartNode)
	Logf       func(format string, args ...any)
}

// Env is a running control plane and guest.
type Env struct {
	Cluster  *cluster.Cluster
	Guest    *vm.Guest
	Repo     string
	ShareDir string // host side of GuestShare
	logf     func(string, ...any)
	seq      atomic.Int64 // numbers the names of the tests' objects (uniqueName)
}

// Start boots the control plane (with kube-scheduler) and the guest in parallel and copies paddock
// into the guest. Stop undoes everything, also after a partial failure.
func Start(ctx context.Context, o Options) (_ *Env, err error) {
	e := &Env{logf: o.Logf}
	if e.logf == nil {
		e.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()
	e.Repo = o.Repo
	if e.Repo == "" {
		if e.Repo, err = FindRepo(); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(o.GuestDir, "paddock")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("static paddock binary for the guest: %w (run make guest-binaries)", err)
	}
	if e.ShareDir, err = os.MkdirTemp("", "paddock-kubeenv-"); err != nil {
		return nil, err
	}
	if err := copyFile(bin, filepath.Join(e.ShareDir, "paddock"), 0o755); err != nil {
		return nil, err
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 2048
	}

	type cres struct {
		c   *cluster.Cluster
		err error
	}
	cch := make(chan cres, 1)
	go func() {
		// A cold build of the binaries takes many minutes; cached ones start in seconds.
		cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		defer cancel()
		c, err := cluster.Start(cctx, cluster.Options{Dir: o.ClusterDir, ExtraSANs: []string{vm.HostIP}, Scheduler: true, NodeAuthorizer: o.Node})
		cch <- cres{c, err}
	}()
	g, gerr := vm.Start(ctx, vm.Options{ShareDir: e.ShareDir, MemoryMB: o.MemoryMB, Forward: o.Forward, CPUs: o.CPUs})
	r := <-cch
	e.Guest, e.Cluster = g, r.c
	if gerr != nil {
		return nil, fmt.Errorf("guest: %w", gerr)
	}
	if r.err != nil {
		return nil, fmt.Errorf("control plane: %w", r.err)
	}
	e.logf("control plane up at %s (kubeconfig %s); guest up (serial log %s)", e.Cluster.URL, e.Cluster.Kubeconfig, e.Guest.LogPath())
	if _, err := e.Exec(ctx, "/bin/sh", "-c", "mkdir -p "+RunDir+" && cp "+GuestShare+"/paddock "+Paddock+" && chmod 755 "+Paddock); err != nil {
		return nil, err
	}
	return e, nil
}

// Stop stops the guest and the control plane and removes the share directory. Idempotent.
func (e *Env) Stop() {
	if e.Guest != nil {
		_ = e.Guest.Stop()
	}
	if e.Cluster != nil {
		_ = e.Cluster.Stop()
	}
	if e.ShareDir != "" {
		os.RemoveAll(e.ShareDir)
	}
}

// FindRepo walks up from the working directory to the directory with go.mod.
func FindRepo() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("repository root (go.mod) not found above the working directory")
		}
		d = p
	}
}

// Install applies deploy/kubernetes with kubectl (kustomize) and writes a kubeconfig with a token of
// the controller's ServiceAccount into the share; it returns that kubeconfig's path in the guest.
func (e *Env) Install(ctx context.Context) (string, error) {
	out, err := e.Cluster.Kubectl(ctx, "apply", "-k", filepath.Join(e.Repo, "deploy", "kubernetes"))
	if err != nil {
		return "", fmt.Errorf("kubectl apply -k deploy/kubernetes: %w\n%s", err, out)
	}
	e.logf("kubectl apply -k deploy/kubernetes:\n%s", strings.TrimRight(out, "\n"))
	return e.ServiceAccountKubeconfig(ctx, Namespace, ControllerSA)
}

// ServiceAccountKubeconfig writes a TokenRequest kubeconfig of namespace/sa pointing at the API server
// as the guest reaches it into the share and returns its guest path.
func (e *Env) ServiceAccountKubeconfig(ctx context.Context, ns, sa string) (string, error) {
	// The ServiceAccount may have been created a moment ago.
	if err := WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, string, error) {
		_, err := e.Cluster.Client.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{})
		return err == nil, fmt.Sprintf("serviceaccount %s/%s: %v", ns, sa, err), nil
	}); err != nil {
		return "", err
	}
	p, err := e.Cluster.ServiceAccountKubeconfig(ctx, ns, sa, "https://"+vm.HostIP+":"+strconv.Itoa(e.Cluster.Port))
	if err != nil {
		return "", err
	}
	name := "sa-" + ns + "-" + sa + ".kubeconfig"
	if err := copyFile(p, filepath.Join(e.ShareDir, name), 0o600); err != nil {
		return "", err
	}
	return GuestShare + "/" + name, nil
}

// Exec runs argv in the guest and fails on a non-zero exit, with the output in the error.
func (e *Env) Exec(ctx context.Context, argv ...string) (string, error) {
	r, err := e.Guest.Exec(ctx, argv...)
	if err != nil {
		return "", err
	}
	if r.ExitCode != 0 {
		return r.Stdout, fmt.Errorf("guest: %q exited %d: %s%s", argv, r.ExitCode, r.Stdout, r.Stderr)
	}
	return r.Stdout, nil
}

// Sh runs a shell script in the guest (dash), failing on a non-zero exit.
func (e *Env) Sh(ctx context.Context, script string) (string, error) {
	return e.Exec(ctx, "/bin/sh", "-c", script)
}

// StartPaddock spawns paddock with args under name in the guest (log /tmp/spawn/<name>.log) and waits
// until it listens on sock (a guest path, or "" to not wait for a socket).
func (e *Env) StartPaddock(ctx context.Context, name, sock string, args ...string) error {
	pidFile := RunDir + "/" + name + ".pid"
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	script := "mkdir -p " + RunDir + " && echo $$ > " + pidFile + " && exec " + Paddock + " " + strings.Join(q, " ")
	if err := e.Guest.Spawn(ctx, name, []string{"/bin/sh", "-c", script}, nil); err != nil {
		return err
	}
	if sock == "" {
		return nil
	}
	return WaitFor(ctx, 90*time.Second, func(ctx context.Context) (bool, string, error) {
		r, err := e.Guest.Exec(ctx, "test", "-S", sock)
		if err != nil {
			return false, "", err
		}
		if r.ExitCode == 0 {
			return true, "", nil
		}
		if running, code, _ := e.Guest.SpawnStatus(ctx, name); !running {
			return false, "", fmt.Errorf("paddock %s exited with %d:\n%s", name, code, e.Log(ctx, name, 30))
		}
		return false, "no socket " + sock, nil
	})
}

// StopPaddock sends sig to the paddock process name and waits for it to exit (SIGKILL after 30 s).
func (e *Env) StopPaddock(ctx context.Context, name string, sig syscall.Signal) error {
	if err := e.Guest.Kill(ctx, name, sig); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		running, _, err := e.Guest.SpawnStatus(ctx, name)
		if err != nil || !running {
			return err
		}
		if time.Now().After(deadline) {
			_ = e.Guest.Kill(ctx, name, syscall.SIGKILL)
			deadline = time.Now().Add(time.Hour)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Log returns the last n lines of a spawned process's log in the guest.
func (e *Env) Log(ctx context.Context, name string, n int) string {
	r, err := e.Guest.Exec(ctx, "tail", "-n", strconv.Itoa(n), "/tmp/spawn/"+name+".log")
	if err != nil {
		return err.Error()
	}
	return r.Stdout
}

// ControllerArgs are the arguments the controller Deployment runs paddock with, adapted to the guest:
// the API server through kubeconfig, a socket and work dir of its own, and a short reap interval.
func ControllerArgs(kubeconfig, sock, workDir string) []string {
	return []string{
		"--mode=controller", "--endpoint=unix://" + sock, "--driver-name=" + Driver,
		"--work-dir=" + workDir, "--provisioner", "--recycler", "--leader-elect",
		"--leader-elect-namespace=" + Namespace, "--kubeconfig=" + kubeconfig,
		"--reap-interval=5s", "-v=2",
	}
}

// WaitFor polls cond every 200 ms until it is true or errors, or until timeout, when the error names
// what cond last reported.
func WaitFor(ctx context.Context, timeout time.Duration, cond func(context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ok, msg, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		last = msg
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %v: %s", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
