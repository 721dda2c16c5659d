//go:build e2e

package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// TestHungExportThreadBound protects the controller from a hung NFS server: a stuck call holds an OS
// thread until the kernel gives up, and the kernel never does on a hard mount, so without a bound every
// call to a dead server would cost one more thread until the process hits its limit. The controller runs
// with --fs-timeout=2s and --max-stuck-calls=8 on export a reached at 192.0.2.1, mounted while the
// server answers; then every packet to that address is dropped (nfs-server-stop --hang: a powered-off
// server) and 500 CSI calls (CreateVolume, DeleteVolume, ControllerGetVolume, each on its own volume,
// 50 at a time, each with a 1s deadline) are sent. It checks that every call ends by its deadline with
// Unavailable or DeadlineExceeded; that paddock refuses all but the first wave at once with
// Unavailable naming the server (every slot held by a call stuck past its deadline); that no more than
// 8 threads are ever blocked in the kernel, the process's thread count stays within a fixed bound
// while the server hangs and after, and paddock_calls_stuck reports exactly 8; and that once the
// server answers again the stuck calls drain and new calls succeed.
func TestHungExportThreadBound(t *testing.T) {
	guardExport(t, exportA)
	const (
		maxStuck     = 8
		calls        = 500
		parallel     = 50
		callDeadline = time.Second
		metricsAddr  = "127.0.0.1:19808"
	)
	p := startPaddock(t, "controller", "--fs-timeout=2s", fmt.Sprintf("--max-stuck-calls=%d", maxStuck),
		"--http-endpoint="+metricsAddr, "--trash-grace=1h")
	pid := p.cmd.Process.Pid
	params := class(exportA, "server", hungServer)
	idOf := func(name string) string {
		return volume.Volume{Server: hungServer, Share: exportA, Name: name, SubDir: name, OnDelete: volume.OnDeleteDelete}.ID()
	}
	ctl := p.Controller

	// While the server answers: the export gets mounted, and the calls the burst will make run once
	// each kind, so the baseline holds the threads healthy work needs.
	vol := createVolume(t, ctl, uniq("hung"), params)
	for i := 0; i < 30; i++ {
		v := createVolume(t, ctl, uniq("warm"), params)
		if _, err := ctl.ControllerGetVolume(ctxT(t, 30*time.Second), &csi.ControllerGetVolumeRequest{VolumeId: v.GetVolumeId()}); err != nil {
			t.Fatalf("ControllerGetVolume with the server up: %v", err)
		}
		deleteVolume(t, ctl, v.GetVolumeId())
	}
	time.Sleep(time.Second)
	baseline := threadsOf(t, pid)
	t.Logf("threads with the server up, after 30 healthy create/get/delete rounds: %d", baseline)

	started := false
	startServer := func() {
		if started {
			return
		}
		started = true
		if b, err := exec.Command("/usr/local/bin/nfs-server-start").CombinedOutput(); err != nil {
			t.Errorf("nfs-server-start: %v: %s", err, b)
		}
	}
	if b, err := exec.Command("/usr/local/bin/nfs-server-stop", "--hang").CombinedOutput(); err != nil {
		t.Fatalf("nfs-server-stop --hang: %v: %s", err, b)
	}
	t.Cleanup(startServer) // runs before paddock is stopped

	// Sample the thread count, and how many threads sleep uninterruptibly in the kernel (state D: a
	// call stuck on the hard mount), while the calls run.
	var peak, peakD atomic.Int64
	raise := func(a *atomic.Int64, n int) {
		for {
			old := a.Load()
			if int64(n) <= old || a.CompareAndSwap(old, int64(n)) {
				return
			}
		}
	}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	var samples atomic.Int64
	go func() {
		defer close(sampled)
		for {
			if n, err := threadsErr(pid); err == nil {
				samples.Add(1)
				raise(&peak, n)
			}
			raise(&peakD, threadsInD(pid))
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	type result struct {
		kind string
		code codes.Code
		took time.Duration
		msg  string
	}
	results := make([]result, calls)
	var next atomic.Int64
	var wg sync.WaitGroup
	burst := time.Now()
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= calls {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
				start := time.Now()
				var err error
				var kind string
				switch i % 3 {
				case 0:
					kind = "create"
					_, err = ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: uniq("stuck"), Parameters: params,
						VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)}})
				case 1:
					kind = "delete"
					_, err = ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: idOf(uniq("gone"))})
				case 2:
					kind = "get"
					_, err = ctl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: vol.GetVolumeId()})
				}
				cancel()
				st, _ := status.FromError(err)
				results[i] = result{kind, st.Code(), time.Since(start), st.Message()}
			}
		}()
	}
	wg.Wait()
	burstTook := time.Since(burst)
	time.Sleep(500 * time.Millisecond) // let threads the last calls started show up
	close(stopSampling)
	<-sampled
	hungAfter, hungAfterD := threadsOf(t, pid), threadsInD(pid)
	stuck := stuckCalls(t, metricsAddr, hungServer)

	byCode := map[string]int{}
	var fast []time.Duration
	var unavailable, late int
	var maxTook time.Duration
	for _, r := range results {
		byCode[r.kind+":"+r.code.String()]++
		if r.took > maxTook {
			maxTook = r.took
		}
		switch r.code {
		case codes.Unavailable:
			unavailable++
			fast = append(fast, r.took)
			if !strings.Contains(r.msg, hungServer) {
				t.Errorf("Unavailable does not name the server %s: %s", hungServer, r.msg)
			}
		case codes.DeadlineExceeded:
		default:
			t.Errorf("%s with the server hung: %v (%s), want Unavailable or DeadlineExceeded", r.kind, r.code, r.msg)
		}
		if r.took > callDeadline+time.Second {
			late++
		}
	}
	sort.Slice(fast, func(i, j int) bool { return fast[i] < fast[j] })
	var p50, p99 time.Duration
	if len(fast) > 0 {
		p50, p99 = fast[len(fast)/2], fast[len(fast)*99/100]
	}
	t.Logf("%d calls, %d at a time, deadline %v, server hung: done in %v; results %v; slowest call %v; Unavailable latency p50 %v p99 %v",
		calls, parallel, callDeadline, burstTook.Round(time.Millisecond), byCode, maxTook.Round(time.Millisecond),
		p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	// Some answers are Unavailable: refused, not timed out. How many reach the client in time depends
	// on how fast the emulated CPU serves 50 callers; paddock's own count is judged below.
	if unavailable < calls/10 {
		t.Errorf("only %d of %d calls were refused with Unavailable; want at least %d", unavailable, calls, calls/10)
	}
	if late > 0 {
		t.Errorf("%d calls took longer than their deadline (%v) + 1s", late, callDeadline)
	}
	if stuck != maxStuck {
		t.Errorf("paddock_calls_stuck{server=%q} = %d with the server hung, want %d (--max-stuck-calls)", hungServer, stuck, maxStuck)
	}

	// The bound. Each call stuck in the kernel pins one OS thread, and the limiter lets at most
	// --max-stuck-calls of them be stuck on one server; every other call waits as a goroutine (no
	// thread) or is refused without touching the server. Besides the stuck threads the Go runtime
	// needs a few of its own while they block: one to run goroutines on the P a blocked thread gave up
	// (GOMAXPROCS is 1 in the guest), sysmon, and now and then one for a short syscall made at the same
	// moment. The baseline, taken after healthy rounds of the same calls, already holds the threads
	// healthy work needs, some of which the stuck calls reuse. So the bound is baseline + 8 + 3.
	// Measured in the guest: baseline 8-9, peak 13-15 (8 threads in state D), 15 after 30 healthy
	// rounds. A controller without the bound would pin one thread per call: hundreds here.
	bound := baseline + maxStuck + 3
	t.Logf("threads: baseline %d, peak %d while %d calls ran against the hung server (%d samples), %d after them; bound %d",
		baseline, peak.Load(), calls, samples.Load(), hungAfter, bound)
	t.Logf("threads blocked in the kernel (state D): peak %d during the calls, %d after them; paddock_calls_stuck %d",
		peakD.Load(), hungAfterD, stuck)
	// The limiter's promise, seen from the kernel: never more than --max-stuck-calls threads stuck on
	// the server. At least one must be, or the server did not hang and the test proves nothing.
	if peakD.Load() > maxStuck {
		t.Errorf("%d threads were blocked in the kernel at once, more than --max-stuck-calls=%d", peakD.Load(), maxStuck)
	}
	if hungAfterD == 0 {
		t.Errorf("no thread is blocked in the kernel with the server hung: the calls never reached the server")
	}
	if int(peak.Load()) > bound || hungAfter > bound {
		t.Errorf("thread count grew past the bound with the server hung: peak %d, after %d, bound %d (baseline %d + %d stuck + 3)",
			peak.Load(), hungAfter, bound, baseline, maxStuck)
	}

	// One more call while it still hangs: refused at once.
	start := time.Now()
	_, err := ctl.ControllerGetVolume(ctxT(t, callDeadline), &csi.ControllerGetVolumeRequest{VolumeId: vol.GetVolumeId()})
	took := time.Since(start)
	t.Logf("one more call with the server hung: %v after %v", status.Code(err), took.Round(time.Millisecond))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("ControllerGetVolume with every slot stuck: %v, want Unavailable", err)
	}
	// Refused, not timed out: this one well before its deadline. Under the burst the client's
	// latency is mostly queueing (50 callers and the server on one emulated CPU), so the refusals are
	// judged by the time paddock itself spent on them, from its log.
	if took > callDeadline/2 {
		t.Errorf("a refusal is not fast: it took %v (deadline %v)", took, callDeadline)
	}
	// Only the first wave can wait for a slot: once the 8 stuck calls pass their deadline, paddock
	// refuses every later call without waiting (its log says which code it answered and how long it
	// took, whether or not the answer reached the client before its deadline).
	if srv := loggedDurations(t, p.LogPath, "Unavailable"); len(srv) < calls-2*parallel {
		t.Errorf("paddock refused %d calls with Unavailable; want all but the first wave (at least %d)", len(srv), calls-2*parallel)
	} else {
		t.Logf("paddock's own time on the %d refusals it logged: p50 %v, p90 %v, max %v", len(srv), srv[len(srv)/2].Round(time.Microsecond),
			srv[len(srv)*9/10].Round(time.Microsecond), srv[len(srv)-1].Round(time.Microsecond))
		if p50 := srv[len(srv)/2]; p50 > callDeadline/10 {
			t.Errorf("paddock's median time to refuse a call is %v; want it at once (under %v)", p50, callDeadline/10)
		}
	}

	// The server answers again: the stuck calls return (their slots and threads are freed), and calls
	// succeed. The hard mount retries on its own schedule, so this may take a while.
	back := time.Now()
	startServer()
	var recovered time.Duration
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := ctl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: vol.GetVolumeId()})
		cancel()
		if err == nil {
			recovered = time.Since(back)
			break
		}
		if time.Since(back) > 3*time.Minute {
			t.Fatalf("calls still fail 3 minutes after the server came back: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !waitFor(2*time.Minute, func() bool { return stuckCalls(t, metricsAddr, hungServer) == 0 }) {
		t.Errorf("paddock_calls_stuck{server=%q} still %d 2 minutes after the server came back", hungServer, stuckCalls(t, metricsAddr, hungServer))
	}
	drained := time.Since(back)
	time.Sleep(500 * time.Millisecond)
	drainedThreads, drainedD := threadsOf(t, pid), threadsInD(pid)
	t.Logf("server back: threads %d, %d of them in state D, once the stuck calls returned", drainedThreads, drainedD)
	if drainedThreads > bound {
		t.Errorf("thread count once the stuck calls returned: %d, bound %d", drainedThreads, bound)
	}
	for i := 0; i < 30; i++ {
		v := createVolume(t, ctl, uniq("after"), params)
		if _, err := ctl.ControllerGetVolume(ctxT(t, 30*time.Second), &csi.ControllerGetVolumeRequest{VolumeId: v.GetVolumeId()}); err != nil {
			t.Errorf("ControllerGetVolume with the server back: %v", err)
		}
		deleteVolume(t, ctl, v.GetVolumeId())
	}
	deleteVolume(t, ctl, vol.GetVolumeId())
	after := threadsOf(t, pid)
	t.Logf("server back: first call OK after %v, stuck calls drained after %v; threads after 30 more healthy rounds: %d (baseline %d, peak %d, bound %d)",
		recovered.Round(time.Millisecond), drained.Round(time.Millisecond), after, baseline, peak.Load(), bound)
	if after > bound {
		t.Errorf("thread count after the server came back: %d, bound %d", after, bound)
	}
	if !p.Running() {
		t.Errorf("paddock died")
	}
}

// loggedDurations are the durations paddock logged for its failed calls with the given code, sorted.
func loggedDurations(t *testing.T, logPath, code string) []time.Duration {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Errorf("reading paddock's log: %v", err)
		return nil
	}
	var out []time.Duration
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `"Call failed"`) || !strings.Contains(l, `code="`+code+`"`) {
			continue
		}
		_, rest, ok := strings.Cut(l, ` duration="`)
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, `"`)
		if d, err := time.ParseDuration(v); err == nil {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// threadsOf is the process's thread count (/proc/PID/status Threads).
func threadsOf(t *testing.T, pid int) int {
	t.Helper()
	n, err := threadsErr(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func threadsErr(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Threads:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no Threads line", pid)
}

// threadsInD counts the process's threads in uninterruptible sleep (state D in /proc/PID/task/*/stat):
// on a hard NFS mount, the calls waiting for a server that does not answer.
func threadsInD(pid int) int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	n := 0
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue
		}
		// "tid (comm) S ...": comm may hold spaces and parentheses, so the state follows the last ')'.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'D' {
			n++
		}
	}
	return n
}

// stuckCalls reads paddock_calls_stuck{server} from the process's metrics (0 when absent).
func stuckCalls(t *testing.T, addr, server string) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Errorf("reading metrics: %v", err)
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("reading metrics: %v", err)
		return -1
	}
	prefix := fmt.Sprintf("paddock_calls_stuck{server=%q} ", server)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Errorf("metrics line %q: %v", l, err)
				return -1
			}
			return int(f)
		}
	}
	return 0
}
