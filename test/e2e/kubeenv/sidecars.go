package kubeenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The controller's CSI sidecars as deploy/components adds them, run for real in the guest: the
// cluster tier (test/e2e/cluster/overlays_test.go) starts them with the arguments of the rendered
// component and the controller's ServiceAccount, as in the controller pod. csi-snapshotter comes with
// the control plane (test/cluster/build.sh); csi-resizer is built here, at the release the resizer
// component pins, into $PADDOCK_CACHE/tools (make test builds it in the background beforehand: the
// Makefile's csi-resizer target, with the same command and lock).

// ResizerModule is external-resizer's module (its v2 releases).
const ResizerModule = "github.com/kubernetes-csi/external-resizer/v2"

// CacheDir is $PADDOCK_CACHE, or ~/.cache/paddock.
func CacheDir() (string, error) {
	if d := os.Getenv("PADDOCK_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "paddock"), nil
}

// ModuleDir is the directory of module@version in the module cache, downloaded from the module proxy
// if it is not there (outside any module, so the repository's go.mod is not touched).
func ModuleDir(ctx context.Context, module, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr != nil || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %v %s %s", module, version, err, info.Error, out)
	}
	return info.Dir, nil
}

// BuildCSIResizer returns the path of a static csi-resizer of external-resizer version (v2.x.y),
// building it if it is not cached. A cold build compiles its own client-go and takes minutes.
func BuildCSIResizer(ctx context.Context, version string) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "tools", "external-resizer-"+version)
	bin := filepath.Join(dir, "csi-resizer")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// The Makefile's csi-resizer target takes the same lock: one build at a time, the other waits.
	lock, err := os.OpenFile(filepath.Join(cache, "tools", "external-resizer.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", "-ldflags", "-s -w -X main.version="+version,
		ResizerModule+"/cmd/csi-resizer@"+version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "CGO_ENABLED=0", "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building csi-resizer %s: %w\n%s", version, err, out)
	}
	fmt.Printf("built csi-resizer %s in %v\n", version, time.Since(start).Round(time.Second))
	return bin, nil
}

// InstallSidecar copies the host binary bin into the guest as /usr/local/bin/<its name> (9p has no
// page cache) and returns the guest path.
func (e *Env) InstallSidecar(ctx context.Context, bin string) (string, error) {
	name := filepath.Base(bin)
	if err := copyFile(bin, filepath.Join(e.ShareDir, name), 0o755); err != nil {
		return "", err
	}
	dst := "/usr/local/bin/" + name
	if _, err := e.Exec(ctx, "/bin/sh", "-c", "cp "+GuestShare+"/"+name+" "+dst+" && chmod 755 "+dst); err != nil {
		return "", err
	}
	return dst, nil
}

// StartSidecar spawns argv under name in the guest and waits until its log says ready (a sidecar
// says so once it has its Lease and its controllers run), failing early if it exits.
func (e *Env) StartSidecar(ctx context.Context, name string, argv []string, ready string) error {
	if err := e.Guest.Spawn(ctx, name, argv, nil); err != nil {
		return err
	}
	return WaitFor(ctx, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		if running, code, _ := e.Guest.SpawnStatus(ctx, name); !running {
			return false, "", fmt.Errorf("%s exited with %d:\n%s", name, code, e.Log(ctx, name, 30))
		}
		log := e.Log(ctx, name, 300)
		return strings.Contains(log, ready), fmt.Sprintf("%s not ready (%q not logged yet); last lines:\n%s", name, ready, tail(log, 5)), nil
	})
}

// StopSidecar ends the spawned process name (SIGTERM, then SIGKILL after 20 s) and waits for it.
func (e *Env) StopSidecar(ctx context.Context, name string) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := e.Guest.Kill(ctx, name, sig); err != nil {
			return err
		}
		err := WaitFor(ctx, 20*time.Second, func(ctx context.Context) (bool, string, error) {
			running, _, err := e.Guest.SpawnStatus(ctx, name)
			return err == nil && !running, name + " still running", err
		})
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s does not exit", name)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
