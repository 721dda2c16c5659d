//go:build e2e

package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/quota/rpc/rpctest"
)

// Enforced capacity (package quota) against the real thing: the guest's /srv/nfs/q is XFS mounted
// with prjquota and exported by knfsd; the quota agent is the paddock binary in quota-agent mode,
// reached over mutual TLS with certificates made here; the limits are judged through a real NFS
// mount (statfs, writes) and on the server (xfs_io lsproj, xfs_quota report).

const (
	exportQ     = "/srv/nfs/q"
	quotaRecord = exportQ + "/.paddock/quota/projects"
	mib         = 1 << 20
)

// ---------- certificates ----------

const server4 = "127.0.0.1"

func newCA(t *testing.T, cn string) *rpctest.CA {
	t.Helper()
	ca, err := rpctest.NewCA(cn)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue writes credentials for cn signed by ca, trusting trust, into a new directory.
func issue(t *testing.T, ca *rpctest.CA, cn string, server bool, trust *rpctest.CA) string {
	t.Helper()
	dir := newDir(t, "tls-"+cn)
	id := rpctest.Identity{CommonName: cn, Server: server, Trust: trust}
	if server {
		id.Hosts = []string{server4}
	}
	if err := ca.WriteDir(dir, id); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ---------- the agent ----------

type quotaAgent struct {
	t    *testing.T
	addr string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

var agentPort = 19820

// startAgent runs paddock --mode=quota-agent on the XFS export with the credentials in dir.
func startAgent(t *testing.T, creds string) *quotaAgent {
	t.Helper()
	agentPort++
	a := &quotaAgent{t: t, addr: net.JoinHostPort(server4, strconv.Itoa(agentPort)),
		log: filepath.Join(newDir(t, "agent"), "agent.log")}
	a.args = []string{"--mode=quota-agent", "--quota-credentials=" + creds, "--quota-export-roots=" + exportQ,
		"--quota-listen=" + a.addr, "-v=4"}
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			t.Logf("---- quota agent log (tail) ----\n%s", tail(a.log, 40))
		}
	})
	a.start()
	return a
}

func (a *quotaAgent) start() {
	t := a.t
	t.Helper()
	lf, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(*paddockBin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = lf, lf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); lf.Close(); close(done) }(a.cmd, a.done)
	if !waitFor(30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("quota agent did not listen on %s:\n%s", a.addr, tail(a.log, 30))
	}
}

func (a *quotaAgent) kill() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
}

// ---------- the server's view ----------

// projectOf is the directory's XFS project ID, as the server sees it.
func projectOf(t *testing.T, dir string) uint32 {
	t.Helper()
	out, err := exec.Command("xfs_io", "-r", "-c", "lsproj", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("xfs_io lsproj %s: %v: %s", dir, err, out)
	}
	m := regexp.MustCompile(`projid = (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("xfs_io lsproj %s: %q", dir, out)
	}
	n, _ := strconv.ParseUint(string(m[1]), 10, 32)
	return uint32(n)
}

// projectLimit is the project's hard block limit in bytes from xfs_quota (0: none).
func projectLimit(t *testing.T, id uint32) int64 {
	t.Helper()
	out, err := exec.Command("xfs_quota", "-x", "-c", "report -p -b -n -N", exportQ).CombinedOutput()
	if err != nil {
		t.Fatalf("xfs_quota report: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		// #<id> used soft hard warn/grace, in KiB
		if len(f) >= 4 && f[0] == fmt.Sprintf("#%d", id) {
			kb, _ := strconv.ParseInt(f[3], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func records(t *testing.T) []string {
	t.Helper()
	return names(quotaRecord)
}

func quotaClass(agent, vers string, kv ...string) map[string]string {
	return class(exportQ, append([]string{"quota", "enforce", "quotaAgent", agent, "nfsvers", vers}, kv...)...)
}

func createSized(c csi.ControllerClient, t *testing.T, name string, params map[string]string, size int64, d time.Duration) (*csi.Volume, error) {
	resp, err := c.CreateVolume(ctxT(t, d), &csi.CreateVolumeRequest{
		Name: name, Parameters: params, VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)},
		CapacityRange: &csi.CapacityRange{RequiredBytes: size},
	})
	return resp.GetVolume(), err
}

// fill writes up to n bytes into path through the mount in 1 MiB chunks, each made durable with
// fsync, and returns the bytes made durable before the first error, and that error. (Over NFS a
// buffered write lands in the page cache and succeeds; the server's refusal comes back at fsync.)
func fill(t *testing.T, path string, n int64) (int64, error) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, mib)
	st, _ := f.Stat()
	written := st.Size()
	for written < n {
		w, err := f.Write(chunk)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			return written, err
		}
		written += int64(w)
	}
	return written, f.Close()
}

// createWhenUp retries CreateVolume while it is Unavailable, as a CO does: the controller's connection
// to a restarted agent comes back within its reconnect backoff.
func createWhenUp(c csi.ControllerClient, t *testing.T, name string, params map[string]string, size int64) (*csi.Volume, error) {
	deadline := time.Now().Add(45 * time.Second)
	for {
		v, err := createSized(c, t, name, params, size, time.Minute)
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func statfsBytes(t *testing.T, p string) (total, used int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		t.Fatalf("statfs %s: %v", p, err)
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Blocks-st.Bfree) * st.Bsize
}

func near(got, want, slack int64) bool { return got >= want-slack && got <= want+slack }

// TestQuotaEnforcedThroughTheMount is the issue's scenario, over NFSv3 and NFSv4.2: a 10 MiB claim
// stops a 20 MiB write at about 10 MiB with EDQUOT/ENOSPC; statfs through the mount shows the claim's
// size and its usage; expansion to 30 MiB lets the write complete; deletion frees the project.
func TestQuotaEnforcedThroughTheMount(t *testing.T) {
	guardExport(t, exportQ)
	ca := newCA(t, "paddock-e2e-ca")
	agent := startAgent(t, issue(t, ca, "quota-agent", true, ca))
	p := startPaddock(t, "all", "--quota-credentials="+issue(t, ca, "paddock-controller", false, ca))
	for _, vers := range []string{"3", "4.2"} {
		t.Run("nfsvers="+vers, func(t *testing.T) {
			name := uniq("quota")
			vol, err := createSized(p.Controller, t, name, quotaClass(agent.addr, vers), 10*mib, time.Minute)
			if err != nil {
				t.Fatalf("CreateVolume: %v", err)
			}
			if !strings.HasSuffix(vol.GetVolumeId(), "#"+agent.addr) {
				t.Errorf("volume ID %q does not carry its agent", vol.GetVolumeId())
			}
			dir := filepath.Join(exportQ, subDirOf(t, vol))
			id := projectOf(t, dir)
			if id == 0 || projectLimit(t, id) != 10*mib {
				t.Fatalf("server: %s has project %d with limit %d, want its own project limited to 10 MiB", dir, id, projectLimit(t, id))
			}
			target := filepath.Join(newDir(t, "quota"), "mount")
			c := mountCap(rwx, "nfsvers="+vers)
			publish(t, p.Node, vol, target, c, false)
			if m := mountAt(t, target); m == nil || m.opt("vers") != vers {
				t.Fatalf("mount at %s: %+v, want vers=%s", target, m, vers)
			}
			total, used := statfsBytes(t, target)
			t.Logf("statfs through the NFSv%s mount of an empty 10 MiB volume: total %d, used %d", vers, total, used)
			if !near(total, 10*mib, mib/4) || used > mib/4 {
				t.Errorf("statfs: total %d, used %d; want the claim's 10 MiB and next to nothing used", total, used)
			}

			file := filepath.Join(target, "big")
			got, err := fill(t, file, 20*mib)
			var errno syscall.Errno
			if !errors.As(err, &errno) || (errno != syscall.EDQUOT && errno != syscall.ENOSPC) {
				t.Fatalf("20 MiB write into a 10 MiB volume: %d bytes, then %v; want EDQUOT or ENOSPC", got, err)
			}
			onServer, _ := os.Stat(filepath.Join(dir, "big"))
			t.Logf("NFSv%s: the write stopped after %d durable bytes with %v (errno %d); %d bytes on the server", vers, got, errno, int(errno), onServer.Size())
			if got < 8*mib || got > 10*mib || onServer.Size() > 10*mib {
				t.Errorf("the write stopped at %d bytes (%d on the server), want about 10 MiB and never more", got, onServer.Size())
			}
			total, used = statfsBytes(t, target)
			t.Logf("statfs through the mount of the full volume: total %d, used %d", total, used)
			if !near(total, 10*mib, mib/4) || !near(used, onServer.Size(), mib/2) {
				t.Errorf("statfs of the full volume: total %d, used %d; want 10 MiB and about %d used", total, used, onServer.Size())
			}
			// The volume's health says it is full.
			hr, err := p.Controller.ControllerGetVolumeHealth(ctxT(t, time.Minute), &csi.ControllerGetVolumeHealthRequest{VolumeId: vol.GetVolumeId()})
			if err != nil || len(hr.GetVolumeHealth().GetHealthStatuses()) == 0 ||
				!strings.HasPrefix(hr.GetVolumeHealth().GetHealthStatuses()[0].GetReason(), "Quota") {
				t.Errorf("health of the full volume: %v, %v; want a Quota entry", hr, err)
			}

			if _, err := p.Controller.ControllerExpandVolume(ctxT(t, time.Minute), &csi.ControllerExpandVolumeRequest{
				VolumeId: vol.GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: 30 * mib}, VolumeCapability: c}); err != nil {
				t.Fatalf("ControllerExpandVolume to 30 MiB: %v", err)
			}
			if projectLimit(t, id) != 30*mib {
				t.Errorf("server: project %d limit %d after expansion, want 30 MiB", id, projectLimit(t, id))
			}
			total, _ = statfsBytes(t, target)
			if !near(total, 30*mib, mib/4) {
				t.Errorf("statfs through the same mount after expansion: total %d, want 30 MiB without a remount", total)
			}
			if err := os.Truncate(file, 0); err != nil {
				t.Fatal(err)
			}
			if got, err := fill(t, file, 20*mib); err != nil || got != 20*mib {
				t.Fatalf("20 MiB write after expansion: %d bytes, %v", got, err)
			}
			unpublish(t, p.Node, vol.GetVolumeId(), target)

			deleteVolume(t, p.Controller, vol.GetVolumeId())
			if projectLimit(t, id) != 0 {
				t.Errorf("server: project %d still limited to %d after DeleteVolume", id, projectLimit(t, id))
			}
			if contains(records(t), strconv.FormatUint(uint64(id), 10)) {
				t.Errorf("server: project %d still recorded as handed out after DeleteVolume", id)
			}
		})
	}
}

// TestQuotaProjectsAreNeverShared: volumes made at once below one parent each get a project of their
// own, and a repeated CreateVolume keeps the one it got.
func TestQuotaProjectsAreNeverShared(t *testing.T) {
	guardExport(t, exportQ)
	ca := newCA(t, "paddock-e2e-ca")
	agent := startAgent(t, issue(t, ca, "quota-agent", true, ca))
	p := startPaddock(t, "all", "--quota-credentials="+issue(t, ca, "paddock-controller", false, ca))
	base := uniq("nest")
	params := quotaClass(agent.addr, "4.2", "subDir", base+"/${pv.metadata.name}")
	errs := make(chan error, 6)
	vols := make([]*csi.Volume, 6)
	for i := range vols {
		go func(i int) {
			var err error
			vols[i], err = createSized(p.Controller, t, fmt.Sprintf("%s-%d", base, i), params, int64(i+1)*mib, time.Minute)
			errs <- err
		}(i)
	}
	for range vols {
		if err := <-errs; err != nil {
			t.Fatalf("CreateVolume: %v", err)
		}
	}
	seen := map[uint32]string{}
	for i, v := range vols {
		dir := filepath.Join(exportQ, subDirOf(t, v))
		id := projectOf(t, dir)
		if other, dup := seen[id]; dup || id == 0 {
			t.Fatalf("%s has project %d, shared with %q", dir, id, other)
		}
		seen[id] = dir
		if projectLimit(t, id) != int64(i+1)*mib {
			t.Errorf("%s: limit %d, want %d MiB", dir, projectLimit(t, id), i+1)
		}
		// A repeat (a lost reply) keeps the same project.
		again, err := createSized(p.Controller, t, fmt.Sprintf("%s-%d", base, i), params, int64(i+1)*mib, time.Minute)
		if err != nil || again.GetVolumeId() != v.GetVolumeId() || projectOf(t, dir) != id {
			t.Errorf("repeated CreateVolume: %v, %v; project now %d, was %d", again.GetVolumeId(), err, projectOf(t, dir), id)
		}
	}
	for _, v := range vols {
		deleteVolume(t, p.Controller, v.GetVolumeId())
	}
}

// TestQuotaAgentFailures: a controller never returns a volume of an enforcing class without its
// limit, whatever happens to the agent: down, stopped half way through a call and killed, restarted;
// and an agent refuses clients whose certificates its CA did not sign.
func TestQuotaAgentFailures(t *testing.T) {
	guardExport(t, exportQ)
	ca := newCA(t, "paddock-e2e-ca")
	agent := startAgent(t, issue(t, ca, "quota-agent", true, ca))
	p := startPaddock(t, "all", "--quota-credentials="+issue(t, ca, "paddock-controller", false, ca))
	params := quotaClass(agent.addr, "4.2")

	// Down: Unavailable, and the directory (made before the limit) has no project.
	agent.kill()
	name := uniq("down")
	_, err := createSized(p.Controller, t, name, params, 5*mib, time.Minute)
	wantCode(t, "CreateVolume with the agent down", err, codes.Unavailable)
	if _, serr := os.Stat(filepath.Join(exportQ, name)); serr == nil && projectOf(t, filepath.Join(exportQ, name)) != 0 {
		t.Errorf("a failed create left %s with project %d", name, projectOf(t, filepath.Join(exportQ, name)))
	}
	agent.start()
	vol, err := createWhenUp(p.Controller, t, name, params, 5*mib)
	if err != nil {
		t.Fatalf("CreateVolume retried after the agent came back: %v", err)
	}
	id := projectOf(t, filepath.Join(exportQ, name))
	if id == 0 || projectLimit(t, id) != 5*mib {
		t.Fatalf("after the retry: project %d limited to %d, want 5 MiB", id, projectLimit(t, id))
	}

	// Stopped mid-call (SIGSTOP while CreateVolume waits on it), then killed: the call fails, and the
	// directory either has no project or one with its full limit, never a project without a limit.
	name2 := uniq("mid")
	_ = agent.cmd.Process.Signal(syscall.SIGSTOP)
	_, err = createSized(p.Controller, t, name2, params, 7*mib, 5*time.Second)
	wantCode(t, "CreateVolume while the agent is stopped", err, codes.DeadlineExceeded, codes.Unavailable)
	agent.kill()
	dir2 := filepath.Join(exportQ, name2)
	if _, serr := os.Stat(dir2); serr == nil {
		if pid := projectOf(t, dir2); pid != 0 && projectLimit(t, pid) != 7*mib {
			t.Errorf("killed mid-create: %s has project %d with limit %d", dir2, pid, projectLimit(t, pid))
		}
	}
	before := len(records(t))
	agent.start()
	vol2, err := createWhenUp(p.Controller, t, name2, params, 7*mib)
	if err != nil {
		t.Fatalf("CreateVolume after the agent restarted: %v", err)
	}
	id2 := projectOf(t, dir2)
	if id2 == 0 || id2 == id || projectLimit(t, id2) != 7*mib {
		t.Fatalf("after restart: %s has project %d (first volume %d) limited to %d", dir2, id2, id, projectLimit(t, id2))
	}
	if after := len(records(t)); after > before+1 {
		t.Errorf("the retried create handed out %d project IDs, want at most 1", after-before)
	}

	// Bad certificates: a controller whose client certificate another CA signed is refused.
	rogue := newCA(t, "rogue-ca")
	bad := startPaddock(t, "all", "--quota-credentials="+issue(t, rogue, "paddock-controller", false, ca))
	_, err = createSized(bad.Controller, t, uniq("rogue"), params, 5*mib, time.Minute)
	wantCode(t, "CreateVolume with a client certificate from another CA", err, codes.Unavailable)
	// And one that does not trust the agent's CA refuses the agent.
	distrust := startPaddock(t, "all", "--quota-credentials="+issue(t, ca, "paddock-controller", false, rogue))
	_, err = createSized(distrust.Controller, t, uniq("distrust"), params, 5*mib, time.Minute)
	wantCode(t, "CreateVolume with an agent the controller does not trust", err, codes.Unavailable)
	if st, _ := status.FromError(err); st != nil && !strings.Contains(st.Message(), "certificate") {
		t.Errorf("the refusal does not say it is about the certificate: %s", st.Message())
	}

	for _, v := range []*csi.Volume{vol, vol2} {
		deleteVolume(t, p.Controller, v.GetVolumeId())
	}
}
