package kubeenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The snapshot machinery of external-snapshotter, real and at the version test/cluster/tools pins
// (v8.7.0): its CRDs (from the client module's config/crd), snapshot-controller on the host next to
// kube-controller-manager, and the csi-snapshotter sidecar in the guest against a Paddock controller's
// socket, running with a ServiceAccount of its own and the RBAC the module ships for it. The binaries
// are built with the control plane (test/cluster/build.sh).

const (
	snapshotterModule = "github.com/kubernetes-csi/external-snapshotter/v8"
	snapshotClient    = "github.com/kubernetes-csi/external-snapshotter/client/v8"
	// SnapshotterSA is the csi-snapshotter's ServiceAccount, in Namespace.
	SnapshotterSA = "csi-snapshotter"
	// csiSnapshotter is the guest-local copy of the sidecar (9p has no page cache).
	csiSnapshotter = "/usr/local/bin/csi-snapshotter"
)

// snapshotCRDs are the CRDs restores and the sidecar need (the group snapshot CRDs are installed too:
// the sidecar watches them).
var snapshotCRDs = []string{
	"volumesnapshotclasses.snapshot.storage.k8s.io",
	"volumesnapshotcontents.snapshot.storage.k8s.io",
	"volumesnapshots.snapshot.storage.k8s.io",
}

// moduleDir returns the directory of module as test/cluster/tools resolves it (its replacement's,
// if it has one), downloading it if the module cache lacks it.
func (e *Env) moduleDir(ctx context.Context, module string) (string, error) {
	tools := filepath.Join(e.Repo, "test", "cluster", "tools")
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = tools
		cmd.Env = append(os.Environ(), "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go %s (in %s): %w: %s", strings.Join(args, " "), tools, err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if _, err := run("mod", "download", module); err != nil {
		return "", err
	}
	dir, err := run("list", "-m", "-f", "{{if .Replace}}{{.Replace.Dir}}{{else}}{{.Dir}}{{end}}", module)
	if err != nil {
		return "", err
	}
	if dir == "" {
		return "", fmt.Errorf("module %s has no directory in the module cache", module)
	}
	return dir, nil
}

// InstallSnapshotCRDs applies the client module's CRDs and waits until the API server serves them.
func (e *Env) InstallSnapshotCRDs(ctx context.Context) error {
	dir, err := e.moduleDir(ctx, snapshotClient)
	if err != nil {
		return err
	}
	out, err := e.Cluster.Kubectl(ctx, "apply", "-k", filepath.Join(dir, "config", "crd"))
	if err != nil {
		return fmt.Errorf("snapshot CRDs: %w", err)
	}
	e.logf("snapshot CRDs from %s:\n%s", dir, strings.TrimRight(out, "\n"))
	args := []string{"wait", "--for=condition=Established", "--timeout=2m"}
	for _, crd := range snapshotCRDs {
		args = append(args, "crd/"+crd)
	}
	if _, err := e.Cluster.Kubectl(ctx, args...); err != nil {
		return fmt.Errorf("snapshot CRDs not established: %w", err)
	}
	return nil
}

// HostProcess is a process the harness runs on the host next to the control plane.
type HostProcess struct {
	Log  string // its output
	cmd  *exec.Cmd
	done chan struct{}
}

// Running reports whether the process has not exited.
func (p *HostProcess) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop ends the process (SIGTERM, SIGKILL after 10 s) and waits for it. Idempotent.
func (p *HostProcess) Stop() {
	if p == nil || !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Tail returns the last n lines of the process's output.
func (p *HostProcess) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// StartSnapshotController runs snapshot-controller on the host with the admin kubeconfig (as the
// cluster's own controllers run), once the CRDs are installed. Stop it with HostProcess.Stop.
func (e *Env) StartSnapshotController(ctx context.Context) (*HostProcess, error) {
	bin := filepath.Join(e.Cluster.BinDir, "snapshot-controller")
	log := filepath.Join(e.Cluster.Dir, "snapshot-controller.log")
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--kubeconfig="+e.Cluster.Kubeconfig, "--leader-election=false",
		"--retry-interval-start=500ms", "--retry-interval-max=10s", "-v=3")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot-controller: %w", err)
	}
	p := &HostProcess{Log: log, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	// It has started its informers once it says so; until then a snapshot would wait anyway.
	err = WaitFor(ctx, time.Minute, func(context.Context) (bool, string, error) {
		if !p.Running() {
			return false, "", fmt.Errorf("snapshot-controller exited:\n%s", p.Tail(30))
		}
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "Starting snapshot controller"), "snapshot-controller not started yet", nil
	})
	if err != nil {
		p.Stop()
		return nil, err
	}
	e.logf("snapshot-controller running on the host (log %s)", log)
	return p, nil
}

// InstallCSISnapshotter creates the sidecar's ServiceAccount in Namespace with the RBAC the
// external-snapshotter module ships for it (deploy/kubernetes/csi-snapshotter/rbac-csi-snapshotter.yaml,
// moved from namespace default into Namespace), copies the binary into the guest, and returns the
// guest path of a kubeconfig with that ServiceAccount's token.
func (e *Env) InstallCSISnapshotter(ctx context.Context) (string, error) {
	dir, err := e.moduleDir(ctx, snapshotterModule)
	if err != nil {
		return "", err
	}
	rbac, err := os.ReadFile(filepath.Join(dir, "deploy", "kubernetes", "csi-snapshotter", "rbac-csi-snapshotter.yaml"))
	if err != nil {
		return "", err
	}
	yaml := strings.ReplaceAll(string(rbac), "namespace: default", "namespace: "+Namespace)
	file := filepath.Join(e.Cluster.Dir, "rbac-csi-snapshotter.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		return "", err
	}
	// The ServiceAccount has no namespace in the file: -n puts it (and only it) into Namespace.
	out, err := e.Cluster.Kubectl(ctx, "apply", "-n", Namespace, "-f", file)
	if err != nil {
		return "", fmt.Errorf("csi-snapshotter RBAC: %w", err)
	}
	e.logf("csi-snapshotter RBAC:\n%s", strings.TrimRight(out, "\n"))
	if err := copyFile(filepath.Join(e.Cluster.BinDir, "csi-snapshotter"), filepath.Join(e.ShareDir, "csi-snapshotter"), 0o755); err != nil {
		return "", err
	}
	if _, err := e.Exec(ctx, "/bin/sh", "-c", "cp "+GuestShare+"/csi-snapshotter "+csiSnapshotter+" && chmod 755 "+csiSnapshotter); err != nil {
		return "", err
	}
	return e.ServiceAccountKubeconfig(ctx, Namespace, SnapshotterSA)
}

// StartCSISnapshotter spawns the csi-snapshotter sidecar under name in the guest against the CSI
// socket sock (as the sidecar container of a controller pod would run) with kubeconfig, unless it is
// running already. The sidecar exits when it loses its driver's socket (a restarted controller), so
// tests call this before they snapshot.
func (e *Env) StartCSISnapshotter(ctx context.Context, name, sock, kubeconfig string) error {
	if running, _, err := e.Guest.SpawnStatus(ctx, name); err == nil && running {
		return nil
	}
	argv := []string{csiSnapshotter, "--csi-address=" + sock, "--kubeconfig=" + kubeconfig,
		"--leader-election=false", "--timeout=2m", "--retry-interval-start=500ms", "--retry-interval-max=10s", "-v=3"}
	if err := e.Guest.Spawn(ctx, name, argv, nil); err != nil {
		return err
	}
	// Started once it has asked the driver its name and began its controller.
	return WaitFor(ctx, 90*time.Second, func(ctx context.Context) (bool, string, error) {
		if running, code, _ := e.Guest.SpawnStatus(ctx, name); !running {
			return false, "", fmt.Errorf("csi-snapshotter exited with %d:\n%s", code, e.Log(ctx, name, 30))
		}
		log := e.Log(ctx, name, 200)
		return strings.Contains(log, "Starting CSI snapshotter"), "csi-snapshotter not started yet", nil
	})
}
