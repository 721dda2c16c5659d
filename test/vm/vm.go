// Package vm boots a throw-away QEMU (TCG) guest that runs a real Linux
// kernel NFS server and client, and runs commands in it through the guest
// agent. The host kernel has no NFS; every test that mounts runs in here.
//
// The guest image is built by build-guest.sh (cached under
// $PADDOCK_CACHE/vm). Set PADDOCK_GUEST_DIR to a directory holding vmlinux
// and initrd.img to skip the build step entirely.
//
// Inside the guest: exports /srv/nfs/a (fsid=1), /srv/nfs/b (fsid=2) and
// /srv/nfs/squash (root_squash, fsid=3) on tmpfs, served at 127.0.0.1 and
// ServerIP; /usr/local/bin/nfs-server-stop [--hang] and nfs-server-start; user
// paddock-test (uid/gid 1000); the host share (Options.ShareDir) at /host;
// the host's loopback services at 10.0.2.2.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// AgentPort is the guest TCP port of the agent.
	AgentPort = 10022
	// ServerIP is an extra address of the in-guest NFS server (on lo). Mount
	// through it (rather than 127.0.0.1) when a test needs
	// "nfs-server-stop --hang", which drops packets to this address only.
	ServerIP = "192.0.2.1"
	// GuestIP is the guest's eth0 address (QEMU user net).
	GuestIP = "10.0.2.15"
	// HostIP is the host's loopback as seen from the guest (QEMU user net).
	HostIP = "10.0.2.2"
)

// Options configure a guest.
type Options struct {
	ShareDir string // host dir shared at /host in the guest (9p, security_model=none); optional
	MemoryMB int    // default 1024
	Forward  []int  // extra guest TCP ports to expose on host 127.0.0.1 (random free host ports)
	CPUs     int    // virtual CPUs (default 1); more than one uses QEMU's multi-threaded TCG
	LogPath  string // serial console log file; default a temp file
}

// Result is the outcome of a command run in the guest.
type Result struct {
	Stdout   string
	Stderr   string
	ExitCode int  // 128+N when killed by signal N; 127 when it could not start; -1 when stuck (see TimedOut)
	TimedOut bool // the timeout expired and the command was killed (ExitCode -1: it did not die, e.g. blocked on a dead NFS server, and was left behind)
}

// ExecRequest describes a command for ExecOpts.
type ExecRequest struct {
	Argv    []string
	Env     []string // KEY=VALUE, added to the agent's environment
	Dir     string
	Stdin   string
	Timeout time.Duration // kill the command (its whole process group) after this; 0: ctx deadline or none
	UID     *int          // run as this uid/gid (no supplementary groups); nil: root
	GID     *int
}

// Guest is a running QEMU guest.
type Guest struct {
	cmd      *exec.Cmd
	logPath  string
	logFile  *os.File
	ports    map[int]int
	base     string
	client   *http.Client
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

var buildMu sync.Mutex

// ImageDir returns the directory with vmlinux and initrd.img, building the
// guest with build-guest.sh if needed (cached; a no-op when up to date).
func ImageDir(ctx context.Context) (string, error) {
	if d := os.Getenv("PADDOCK_GUEST_DIR"); d != "" {
		return d, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	script, err := findScript()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("vm: %s failed: %v\n%s", script, err, tail(stderr.String(), 40))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1], nil
}

// findScript locates build-guest.sh next to this source file, or (for
// -trimpath builds) under test/vm of the module containing the working dir.
func findScript() (string, error) {
	if _, self, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(self), "build-guest.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if d, err := os.Getwd(); err == nil {
		for ; ; d = filepath.Dir(d) {
			p := filepath.Join(d, "test", "vm", "build-guest.sh")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("vm: cannot find test/vm/build-guest.sh (run from the repository, or set PADDOCK_GUEST_DIR)")
}

// Start builds (cached) and boots a guest and waits until its agent answers.
// If ctx has no deadline, boot gives up after 3 minutes.
func Start(ctx context.Context, o Options) (*Guest, error) {
	dir, err := ImageDir(ctx)
	if err != nil {
		return nil, err
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 1024
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
	}
	// Free ports are picked by binding and releasing them, so another process
	// can race us to one; QEMU then fails at once and we retry.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		g, err := boot(ctx, dir, o)
		if err == nil {
			return g, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, lastErr
}

var errPortTaken = errors.New("host port taken")

func boot(ctx context.Context, dir string, o Options) (*Guest, error) {
	g := &Guest{ports: map[int]int{}, exited: make(chan struct{})}
	var err error
	if o.LogPath != "" {
		g.logFile, err = os.Create(o.LogPath)
	} else {
		g.logFile, err = os.CreateTemp("", "paddock-vm-*.log")
	}
	if err != nil {
		return nil, err
	}
	g.logPath = g.logFile.Name()

	guestPorts := append([]int{AgentPort}, o.Forward...)
	fwd := ""
	for _, gp := range guestPorts {
		if _, dup := g.ports[gp]; dup {
			continue
		}
		hp, err := freePort()
		if err != nil {
			g.logFile.Close()
			return nil, err
		}
		g.ports[gp] = hp
		fwd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", hp, gp)
	}
	args := []string{
		"-accel", "tcg", "-cpu", "max", // max gives RDRAND: no entropy wait in rpc.nfsd
		"-m", strconv.Itoa(o.MemoryMB), "-smp", strconv.Itoa(max(o.CPUs, 1)),
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
		"-serial", "stdio", "-no-reboot",
		"-kernel", filepath.Join(dir, "vmlinux"), "-initrd", filepath.Join(dir, "initrd.img"),
		"-append", "console=ttyS0 quiet panic=-1",
		"-netdev", "user,id=n0" + fwd,
		"-device", "virtio-net-pci,netdev=n0,romfile=",
	}
	if o.ShareDir != "" {
		abs, err := filepath.Abs(o.ShareDir)
		if err != nil {
			g.logFile.Close()
			return nil, err
		}
		if strings.ContainsAny(abs, ",") {
			g.logFile.Close()
			return nil, fmt.Errorf("vm: share dir %q must not contain a comma (QEMU option syntax)", abs)
		}
		args = append(args, "-virtfs", "local,path="+abs+",mount_tag=host0,security_model=none,id=host0")
	}
	// Not CommandContext: the guest must outlive Start's ctx; Stop ends it.
	g.cmd = exec.Command("qemu-system-x86_64", args...)
	g.cmd.Stdout = g.logFile
	g.cmd.Stderr = g.logFile
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		g.logFile.Close()
		return nil, fmt.Errorf("vm: starting qemu-system-x86_64 (run test/vm/build-guest.sh once as root to install it): %w", err)
	}
	go func() {
		g.waitErr = g.cmd.Wait()
		close(g.exited)
	}()
	g.base = fmt.Sprintf("http://127.0.0.1:%d", g.ports[AgentPort])
	g.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 4}}

	if err := g.waitReady(ctx); err != nil {
		g.kill()
		log := readTail(g.logPath, 40)
		if strings.Contains(log, "Could not set up host forwarding rule") {
			return nil, errPortTaken
		}
		return nil, fmt.Errorf("vm: guest did not become ready: %w\n--- serial log %s (tail) ---\n%s", err, g.logPath, log)
	}
	return g, nil
}

func (g *Guest) waitReady(ctx context.Context) error {
	for {
		select {
		case <-g.exited:
			return fmt.Errorf("qemu exited: %v", g.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, g.base+"/ready", nil)
		resp, err := g.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
		}
		cancel()
		select {
		case <-time.After(100 * time.Millisecond):
		case <-g.exited:
		case <-ctx.Done():
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// HostPort returns the host loopback port that forwards to guestPort (the
// agent's port or one of Options.Forward), or 0 if it is not forwarded.
func (g *Guest) HostPort(guestPort int) int { return g.ports[guestPort] }

// LogPath returns the serial console log file.
func (g *Guest) LogPath() string { return g.logPath }

// Exec runs argv in the guest as root and returns its output. A non-zero
// exit status is not an error; err reports only failures to run it at all.
func (g *Guest) Exec(ctx context.Context, argv ...string) (Result, error) {
	return g.ExecOpts(ctx, ExecRequest{Argv: argv})
}

type wireExec struct {
	Argv           []string `json:"argv"`
	Env            []string `json:"env,omitempty"`
	Dir            string   `json:"dir,omitempty"`
	Stdin          string   `json:"stdin,omitempty"`
	TimeoutSeconds float64  `json:"timeout_seconds,omitempty"`
	UID            *int     `json:"uid,omitempty"`
	GID            *int     `json:"gid,omitempty"`
	Stream         bool     `json:"stream,omitempty"`
}

type wireResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
	TimedOut bool   `json:"timed_out"`
	Error    string `json:"error"`
}

func (r ExecRequest) wire(ctx context.Context, stream bool) wireExec {
	w := wireExec{Argv: r.Argv, Env: r.Env, Dir: r.Dir, Stdin: r.Stdin, UID: r.UID, GID: r.GID, Stream: stream}
	t := r.Timeout
	// Let the guest kill the command itself when ctx expires, so no orphan
	// keeps running (and holding mounts) after the caller gave up.
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); t == 0 || left < t {
			t = left
		}
	}
	if t > 0 {
		w.TimeoutSeconds = t.Seconds()
	}
	return w
}

// ExecOpts runs a command described by r.
func (g *Guest) ExecOpts(ctx context.Context, r ExecRequest) (Result, error) {
	if len(r.Argv) == 0 {
		return Result{}, errors.New("vm: empty argv")
	}
	var wr wireResult
	if err := g.call(ctx, "/exec", r.wire(ctx, false), &wr); err != nil {
		return Result{}, fmt.Errorf("vm: exec %q: %w", r.Argv, err)
	}
	res := Result{Stdout: wr.Stdout, Stderr: wr.Stderr, ExitCode: wr.ExitCode, TimedOut: wr.TimedOut}
	if wr.Error != "" && wr.ExitCode == -1 && !wr.TimedOut {
		return res, fmt.Errorf("vm: exec %q: %s", r.Argv, wr.Error)
	}
	return res, nil
}

// ExecStream runs a command and copies its output to stdout and stderr as it
// is produced (for long commands); the returned Result has empty Stdout and
// Stderr.
func (g *Guest) ExecStream(ctx context.Context, r ExecRequest, stdout, stderr io.Writer) (Result, error) {
	if len(r.Argv) == 0 {
		return Result{}, errors.New("vm: empty argv")
	}
	body, err := json.Marshal(r.wire(ctx, true))
	if err != nil {
		return Result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+"/exec", bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("vm: exec %q: %w", r.Argv, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return Result{}, fmt.Errorf("vm: exec %q: agent: %s: %s", r.Argv, resp.Status, strings.TrimSpace(string(b)))
	}
	br := bufio.NewReader(resp.Body)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return Result{}, fmt.Errorf("vm: exec %q: output stream ended early (guest died?): %w", r.Argv, err)
		}
		data := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(br, data); err != nil {
			return Result{}, fmt.Errorf("vm: exec %q: output stream ended early: %w", r.Argv, err)
		}
		switch hdr[0] {
		case 1:
			stdout.Write(data)
		case 2:
			stderr.Write(data)
		case 3:
			var wr wireResult
			if err := json.Unmarshal(data, &wr); err != nil {
				return Result{}, err
			}
			res := Result{ExitCode: wr.ExitCode, TimedOut: wr.TimedOut}
			if wr.Error != "" && wr.ExitCode != 0 {
				fmt.Fprintln(stderr, wr.Error)
				if wr.ExitCode == -1 && !wr.TimedOut {
					return res, fmt.Errorf("vm: exec %q: %s", r.Argv, wr.Error)
				}
			}
			return res, nil
		}
	}
}

// Spawn starts argv in the background under name; its stdout and stderr go
// to /tmp/spawn/<name>.log in the guest. A name can be reused once its
// process has exited.
func (g *Guest) Spawn(ctx context.Context, name string, argv []string, env []string) error {
	req := map[string]any{"name": name, "argv": argv, "env": env}
	if err := g.call(ctx, "/spawn", req, nil); err != nil {
		return fmt.Errorf("vm: spawn %s %q: %w", name, argv, err)
	}
	return nil
}

// Kill sends sig to the process group of the spawned process name. It is not
// an error if the process has already exited.
func (g *Guest) Kill(ctx context.Context, name string, sig syscall.Signal) error {
	if err := g.call(ctx, "/kill", map[string]any{"name": name, "signal": int(sig)}, nil); err != nil {
		return fmt.Errorf("vm: kill %s: %w", name, err)
	}
	return nil
}

// Relay makes the guest relay every TCP connection to listen (a guest address) to target, for as long
// as the guest runs.
func (g *Guest) Relay(ctx context.Context, listen, target string) error {
	if err := g.call(ctx, "/relay", map[string]string{"listen": listen, "target": target}, nil); err != nil {
		return fmt.Errorf("vm: relay %s -> %s: %w", listen, target, err)
	}
	return nil
}

// SpawnStatus reports whether the spawned process name still runs, and its
// exit code once it has exited.
func (g *Guest) SpawnStatus(ctx context.Context, name string) (running bool, exitCode int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+"/status?name="+name, nil)
	if err != nil {
		return false, 0, err
	}
	var st struct {
		Running  bool `json:"running"`
		ExitCode int  `json:"exit_code"`
	}
	if err := g.do(req, &st); err != nil {
		return false, 0, fmt.Errorf("vm: status %s: %w", name, err)
	}
	return st.Running, st.ExitCode, nil
}

func (g *Guest) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return g.do(req, out)
}

func (g *Guest) do(req *http.Request, out any) error {
	resp, err := g.client.Do(req)
	if err != nil {
		select {
		case <-g.exited:
			return fmt.Errorf("guest is gone (qemu exited: %v; serial log %s): %w", g.waitErr, g.logPath, err)
		default:
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent: %s", e.Error)
		}
		return fmt.Errorf("agent: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// Stop powers the guest off, killing QEMU if it does not exit promptly.
// It is idempotent and safe to call on a guest that already died.
func (g *Guest) Stop() error {
	g.stopOnce.Do(func() {
		select {
		case <-g.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			g.call(ctx, "/poweroff", struct{}{}, nil)
			cancel()
			select {
			case <-g.exited:
			case <-time.After(10 * time.Second):
				g.kill()
			}
		}
		g.client.CloseIdleConnections()
		g.stopErr = g.logFile.Close()
	})
	return g.stopErr
}

func (g *Guest) kill() {
	g.cmd.Process.Kill()
	<-g.exited
}

// Exited is closed when QEMU has exited.
func (g *Guest) Exited() <-chan struct{} { return g.exited }

// SerialTail returns the last n lines of the serial console log.
func (g *Guest) SerialTail(n int) string { return readTail(g.logPath, n) }

func readTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(string(b), n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
