//go:build e2e

// Package node holds Paddock's node end-to-end tests. They run INSIDE the test guest (test/vm), where
// a kernel NFS server exports /srv/nfs/a, /srv/nfs/b (no_root_squash) and /srv/nfs/squash
// (root_squash) on 127.0.0.1. Each test starts real paddock processes, speaks CSI gRPC to them the way
// kubelet and the provisioner do, and judges the result from the NFS server's own view of the export
// (the test runs on the server host, so it lists /srv/nfs directly).
//
//	make test-e2e-node
package node

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var paddockBin = flag.String("paddock", "/host/paddock", "paddock binary to test")

const (
	server      = "127.0.0.1"
	exportA     = "/srv/nfs/a"
	exportB     = "/srv/nfs/b"
	exportSq    = "/srv/nfs/squash"
	exportsRoot = "/srv/nfs"
	nodeID      = "e2e-node"
	helperEnv   = "PADDOCK_E2E_HELPER"
)

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(helperMain(h, os.Args[1:]))
	}
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e-node: must run as root inside the test guest (make test-e2e-node)")
		os.Exit(1)
	}
	if _, err := os.Stat(filepath.Join(exportA, ".")); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-node: %s is not here: run inside the test guest (make test-e2e-node): %v\n", exportA, err)
		os.Exit(1)
	}
	// The 9p share has no page cache: every exec from it reads the whole binary from the host again
	// (seconds under TCG). Run a local copy.
	local, err := copyBinary(*paddockBin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-node: -paddock: %v\n", err)
		os.Exit(1)
	}
	*paddockBin = local
	code := m.Run()
	os.RemoveAll(filepath.Dir(local))
	os.Exit(code)
}

func copyBinary(src string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}

// helperMain runs in a child process (usually under another uid): the test binary re-executed.
func helperMain(action string, args []string) int {
	fail := func(err error) int {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			fmt.Printf("ERRNO=%d %v\n", int(errno), err)
		} else {
			fmt.Printf("ERR %v\n", err)
		}
		return 1
	}
	switch action {
	case "write": // write PATH CONTENT
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			return fail(err)
		}
		fmt.Println("OK")
		return 0
	case "hold": // hold PATH: keep PATH open and stat it forever (a pod using the volume)
		f, err := os.Open(args[0])
		if err != nil {
			return fail(err)
		}
		fmt.Println("OK")
		for {
			_, _ = f.Stat()
			_, _ = os.Stat(args[0])
			time.Sleep(200 * time.Millisecond)
		}
	}
	fmt.Printf("ERR unknown helper action %q\n", action)
	return 2
}

// runAs runs a helper action as uid:gid and returns its output and whether it succeeded; a failure
// carries the errno the helper saw.
func runAs(t *testing.T, uid, gid int, action string, args ...string) (string, syscall.Errno, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+action)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err == nil {
		return s, 0, true
	}
	var errno int
	if _, serr := fmt.Sscanf(s, "ERRNO=%d", &errno); serr != nil {
		t.Fatalf("helper %s %v as %d:%d failed without an errno: %v: %s", action, args, uid, gid, err, s)
	}
	return s, syscall.Errno(errno), false
}

var seq atomic.Int64

// uniq gives a fresh, valid volume/directory name for this test run.
func uniq(prefix string) string {
	return fmt.Sprintf("e2e-%s-%d-%d", prefix, time.Now().UnixNano()%1_000_000_000, seq.Add(1))
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---------- paddock processes ----------

// Paddock is one paddock process (controller, node or all), restartable with the same socket and
// work dir, as kubelet would restart a plugin container.
type Paddock struct {
	t          *testing.T
	Mode       string
	Dir        string
	Sock       string
	WorkDir    string
	LogPath    string
	cmd        *exec.Cmd
	done       chan struct{}
	conn       *grpc.ClientConn
	Identity   csi.IdentityClient
	Controller csi.ControllerClient
	Node       csi.NodeClient
}

// newDir makes a scratch directory that is removed only when nothing is mounted below it (a
// RemoveAll through a live NFS mount would delete data on the export).
func newDir(t *testing.T, name string) string {
	t.Helper()
	d, err := os.MkdirTemp("", "e2e-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(t, d)
		if m := mountsUnder(d); len(m) > 0 {
			t.Errorf("mounts left under %s, not removing it: %v", d, m)
			return
		}
		_ = os.RemoveAll(d)
	})
	return d
}

// startPaddock starts paddock in mode ("all", "controller", "node") with extra flags (later flags
// win over the defaults). It is stopped with SIGTERM when the test ends.
func startPaddock(t *testing.T, mode string, extra ...string) *Paddock {
	t.Helper()
	dir := newDir(t, "paddock-"+mode)
	p := &Paddock{t: t, Mode: mode, Dir: dir, Sock: filepath.Join(dir, "csi.sock"),
		WorkDir: filepath.Join(dir, "work"), LogPath: filepath.Join(dir, "paddock.log")}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("---- paddock %s log (tail) ----\n%s", mode, tail(p.LogPath, 60))
		}
	})
	p.Start(extra...)
	return p
}

// Start runs the process (again) and waits until it answers Probe.
func (p *Paddock) Start(extra ...string) {
	t := p.t
	t.Helper()
	args := []string{"--mode=" + p.Mode, "--endpoint=unix://" + p.Sock, "--node-id=" + nodeID,
		"--work-dir=" + p.WorkDir, "--fs-timeout=10s", "-v=4"}
	args = append(args, extra...)
	lf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(lf, "==== e2e: starting paddock %s\n", strings.Join(args, " "))
	cmd := exec.Command(*paddockBin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("starting paddock: %v", err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); lf.Close(); close(done) }(p.done)
	if p.conn == nil {
		// Reconnect quickly after a restart (the default backoff starts at 1s).
		conn, err := grpc.NewClient("unix://"+p.Sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second,
				Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}))
		if err != nil {
			t.Fatal(err)
		}
		p.conn = conn
		p.Identity, p.Controller, p.Node = csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	}
	started := time.Now()
	deadline := started.Add(30 * time.Second)
	defer func() {
		t.Logf("paddock %s %s answers Probe after %v", p.Mode, strings.Join(extra, " "), time.Since(started).Round(time.Millisecond))
	}()
	for {
		select {
		case <-p.done:
			t.Fatalf("paddock exited at start:\n%s", tail(p.LogPath, 40))
		default:
		}
		if err := p.Probe(2 * time.Second); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("paddock did not answer Probe within 30s: %v\n%s", err, tail(p.LogPath, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Probe calls Identity.Probe with a deadline.
func (p *Paddock) Probe(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	resp, err := p.Identity.Probe(ctx, &csi.ProbeRequest{}, grpc.WaitForReady(false))
	if err != nil {
		return err
	}
	if resp.GetReady() != nil && !resp.GetReady().GetValue() {
		return errors.New("not ready")
	}
	return nil
}

// Running tells whether the process is still alive.
func (p *Paddock) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL (a crash: nothing is cleaned up) and waits for the process to die.
func (p *Paddock) Kill() {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	f, err := os.OpenFile(p.LogPath, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		fmt.Fprintf(f, "==== e2e: paddock killed with SIGKILL\n")
		f.Close()
	}
}

// Stop sends SIGTERM (graceful shutdown) and waits; SIGKILL after 45 s.
func (p *Paddock) Stop() {
	if p.Running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(45 * time.Second):
			p.t.Errorf("paddock %s did not stop within 45s of SIGTERM; killing it", p.Mode)
			p.Kill()
		}
	}
}

// Restart kills (SIGKILL) and starts the process again with the given extra flags.
func (p *Paddock) Restart(extra ...string) {
	p.t.Helper()
	p.Kill()
	p.Start(extra...)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------- CSI calls ----------

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var rwx = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER

// classA is the parameters of a plain StorageClass on export a, plus overrides.
func class(share string, kv ...string) map[string]string {
	m := map[string]string{"server": server, "share": share}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func createVolume(t *testing.T, c csi.ControllerClient, name string, params map[string]string) *csi.Volume {
	t.Helper()
	resp, err := c.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{
		Name: name, Parameters: params, VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
	})
	if err != nil {
		t.Fatalf("CreateVolume %s %v: %v", name, params, err)
	}
	return resp.GetVolume()
}

func deleteVolume(t *testing.T, c csi.ControllerClient, id string) {
	t.Helper()
	if _, err := c.DeleteVolume(ctxT(t, time.Minute), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatalf("DeleteVolume %s: %v", id, err)
	}
}

// Publishes go as kubelet makes them when the plugin has STAGE_UNSTAGE_VOLUME: NodeStageVolume at a
// staging path shared by the publishes of one volume (with one capability) below the same scratch
// directory, then NodePublishVolume of that staging path. unpublish unstages after the last target.
var staged = struct {
	sync.Mutex
	targets map[string]map[string]bool // staging path -> published targets
	of      map[string]string          // target -> staging path
}{targets: map[string]map[string]bool{}, of: map[string]string{}}

// stagingPath is the staging path publish uses for a volume published at target with capability c:
// beside the pod directory, like kubelet's per-volume globalmount.
func stagingPath(id, target string, c *csi.VolumeCapability) string {
	sum := sha256.Sum256([]byte(id + "\x00" + c.GetAccessMode().GetMode().String() + "\x00" + strings.Join(c.GetMount().GetMountFlags(), ",")))
	return filepath.Join(filepath.Dir(filepath.Dir(target)), "staging-"+hex.EncodeToString(sum[:6]))
}

func publish(t *testing.T, n csi.NodeClient, vol *csi.Volume, target string, c *csi.VolumeCapability, readonly bool) {
	t.Helper()
	if err := publishErr(t, n, vol.GetVolumeId(), vol.GetVolumeContext(), target, c, readonly); err != nil {
		t.Fatalf("NodeStage/PublishVolume %s at %s: %v", vol.GetVolumeId(), target, err)
	}
}

func publishErr(t *testing.T, n csi.NodeClient, id string, vctx map[string]string, target string, c *csi.VolumeCapability, readonly bool) error {
	staging := stagingPath(id, target, c)
	// The CO makes the staging directory. A stat of a stale staging mount fails (ESTALE), so only the
	// parent goes through MkdirAll; an existing staging path, stale or not, is NodeStageVolume's.
	if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(staging, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		t.Fatal(err)
	}
	if _, err := n.NodeStageVolume(ctxT(t, time.Minute), &csi.NodeStageVolumeRequest{
		VolumeId: id, VolumeContext: vctx, StagingTargetPath: staging, VolumeCapability: c,
	}); err != nil {
		return err
	}
	_, err := n.NodePublishVolume(ctxT(t, time.Minute), &csi.NodePublishVolumeRequest{
		VolumeId: id, VolumeContext: vctx, TargetPath: target, StagingTargetPath: staging, VolumeCapability: c, Readonly: readonly,
	})
	staged.Lock()
	defer staged.Unlock()
	if err != nil {
		if len(staged.targets[staging]) == 0 {
			_, _ = n.NodeUnstageVolume(ctxT(t, time.Minute), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
		}
		return err
	}
	if staged.targets[staging] == nil {
		staged.targets[staging] = map[string]bool{}
	}
	staged.targets[staging][filepath.Clean(target)] = true
	staged.of[filepath.Clean(target)] = staging
	return nil
}

// stagingOf is the staging path of a target publish made, or "".
func stagingOf(target string) string {
	staged.Lock()
	defer staged.Unlock()
	return staged.of[filepath.Clean(target)]
}

// unpublish unpublishes target and, after the last target of its staging path, unstages the volume.
func unpublish(t *testing.T, n csi.NodeClient, id, target string) {
	t.Helper()
	if _, err := n.NodeUnpublishVolume(ctxT(t, time.Minute), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume %s at %s: %v", id, target, err)
	}
	forgetTarget(t, n, id, target)
}

// forgetTarget is unpublish's second half, for tests that call NodeUnpublishVolume themselves.
func forgetTarget(t *testing.T, n csi.NodeClient, id, target string) {
	t.Helper()
	staged.Lock()
	defer staged.Unlock()
	staging, ok := staged.of[filepath.Clean(target)]
	if !ok {
		return
	}
	delete(staged.of, filepath.Clean(target))
	delete(staged.targets[staging], filepath.Clean(target))
	if len(staged.targets[staging]) > 0 {
		return
	}
	delete(staged.targets, staging)
	if _, err := n.NodeUnstageVolume(ctxT(t, time.Minute), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume %s at %s: %v", id, staging, err)
	}
	if m := mountAt(t, staging); m != nil {
		t.Errorf("NodeUnstageVolume left %v mounted at %s", m.Source, staging)
	}
}

// wantCode checks a gRPC error's code (one of codes) and that its message says something.
func wantCode(t *testing.T, what string, err error, want ...codes.Code) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want %v", what, want)
		return
	}
	st, _ := status.FromError(err)
	for _, c := range want {
		if st.Code() == c {
			t.Logf("%s: %v: %s", what, st.Code(), st.Message())
			if len(st.Message()) < 20 {
				t.Errorf("%s: message %q is too terse to act on", what, st.Message())
			}
			return
		}
	}
	t.Errorf("%s: got %v (%s), want one of %v", what, st.Code(), st.Message(), want)
}

// ---------- the client's mount table ----------

type mountEntry struct {
	Source, Target, FSType string
	Options                []string
}

func (m mountEntry) has(opt string) bool {
	for _, o := range m.Options {
		if o == opt {
			return true
		}
	}
	return false
}

func (m mountEntry) opt(key string) string {
	for _, o := range m.Options {
		if v, ok := strings.CutPrefix(o, key+"="); ok {
			return v
		}
	}
	return ""
}

func procMounts(t *testing.T) []mountEntry {
	t.Helper()
	f, err := os.Open("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		out = append(out, mountEntry{Source: fs[0], Target: unescapeMount(fs[1]), FSType: fs[2], Options: strings.Split(fs[3], ",")})
	}
	return out
}

func unescapeMount(s string) string {
	return regexp.MustCompile(`\\[0-7]{3}`).ReplaceAllStringFunc(s, func(e string) string {
		var n int
		fmt.Sscanf(e[1:], "%o", &n)
		return string(rune(n))
	})
}

// mountAt returns the mount on top at target, or nil.
func mountAt(t *testing.T, target string) *mountEntry {
	t.Helper()
	var found *mountEntry
	for _, m := range procMounts(t) {
		if m.Target == filepath.Clean(target) {
			m := m
			found = &m
		}
	}
	return found
}

func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 {
			mp := unescapeMount(f[4])
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				out = append(out, mp)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unmountUnder detaches everything mounted below dir (what a killed paddock left behind).
func unmountUnder(t *testing.T, dir string) {
	for i := 0; i < 4; i++ {
		mps := mountsUnder(dir)
		if len(mps) == 0 {
			return
		}
		for _, mp := range mps {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				t.Logf("unmount %s: %v", mp, err)
			}
		}
	}
}

// ---------- the server's view ----------

type fileInfo struct {
	Kind     string // d, f, l, other
	Mode     fs.FileMode
	UID, GID uint32
	Size     int64
	Sum      string // sha256 of a regular file
	Link     string // a symlink's target
}

func (e fileInfo) String() string {
	s := fmt.Sprintf("%s %v %d:%d", e.Kind, e.Mode, e.UID, e.GID)
	switch e.Kind {
	case "f":
		s += fmt.Sprintf(" %dB %s", e.Size, e.Sum[:12])
	case "l":
		s += " -> " + e.Link
	}
	return s
}

// listing walks root on the server (never following symlinks) and describes every entry below it,
// keyed by its path relative to root ("." is root itself).
func listing(t *testing.T, root string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = describe(t, p)
		return nil
	})
	if err != nil {
		t.Fatalf("listing %s: %v", root, err)
	}
	return out
}

func describe(t *testing.T, p string) fileInfo {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	e := fileInfo{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
	switch {
	case fi.IsDir():
		e.Kind = "d"
	case fi.Mode().IsRegular():
		e.Kind, e.Size = "f", fi.Size()
		e.Sum = sha256File(t, p)
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Kind = "l"
		e.Link, _ = os.Readlink(p)
	default:
		e.Kind = "other"
	}
	return e
}

func sha256File(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diff lists the differences between two listings, sorted.
func diff(before, after map[string]fileInfo) []string {
	var d []string
	for k, a := range before {
		b, ok := after[k]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("- %s (%v)", k, a))
		case a != b:
			d = append(d, fmt.Sprintf("~ %s: %v => %v", k, a, b))
		}
	}
	for k, b := range after {
		if _, ok := before[k]; !ok {
			d = append(d, fmt.Sprintf("+ %s (%v)", k, b))
		}
	}
	sort.Strings(d)
	return d
}

func assertSame(t *testing.T, what string, before, after map[string]fileInfo) {
	t.Helper()
	if d := diff(before, after); len(d) > 0 {
		if len(d) > 40 {
			d = append(d[:40], fmt.Sprintf("... and %d more", len(d)-40))
		}
		t.Errorf("%s: the server's view changed:\n  %s", what, strings.Join(d, "\n  "))
	}
}

// guardExport removes, when the test ends, every top-level entry of the export and of its metadata
// areas that the test added (volumes, trash and archive entries, claims), so tests do not see each
// other's leftovers. Register it before starting paddock, so it runs after paddock has stopped.
func guardExport(t *testing.T, export string) {
	t.Helper()
	areas := []string{export, export + "/.paddock", export + "/.paddock/claims", export + "/.paddock/trash", export + "/.paddock/archive"}
	before := map[string]bool{}
	for _, a := range areas {
		for _, n := range names(a) {
			before[a+"/"+n] = true
		}
	}
	t.Cleanup(func() {
		for i := len(areas) - 1; i >= 0; i-- {
			for _, n := range names(areas[i]) {
				p := areas[i] + "/" + n
				// Inside .paddock only its areas' entries are the test's; a .paddock the test
				// made (on an export no earlier test used) goes as a whole.
				if !before[p] && i != 1 {
					if err := os.RemoveAll(p); err != nil {
						t.Errorf("cleanup %s: %v", p, err)
					}
				}
			}
		}
	})
}

func names(dir string) []string {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return n
}

// trashEntries lists the trash entries whose name carries volName.
func trashEntries(export, volName string) []string {
	var out []string
	for _, n := range names(export + "/.paddock/trash") {
		if strings.Contains(n, "-"+volName+"-") {
			out = append(out, n)
		}
	}
	return out
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustWrite(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func subDirOf(t *testing.T, v *csi.Volume) string {
	t.Helper()
	s := v.GetVolumeContext()["subDir"]
	if s == "" {
		t.Fatalf("volume %s has no subDir in its context %v", v.GetVolumeId(), v.GetVolumeContext())
	}
	return s
}
