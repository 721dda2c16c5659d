package mount

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// keys is the number of keys with state in l (holders or waiters).
func (l *Limiter) keyCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// waiting is how many Acquires of key are waiting.
func (l *Limiter) waiting(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ks := l.keys[key]; ks != nil {
		return ks.waiters
	}
	return 0
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewLimiterDefault(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, 16}, {-3, 16}, {1, 1}, {8, 8}} {
		if got := NewLimiter(tc.in).PerKey(); got != tc.want {
			t.Errorf("NewLimiter(%d).PerKey() = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestAcquire walks the slot rules through sequences of steps on one limiter of 2 slots per key.
func TestAcquire(t *testing.T) {
	type step struct {
		op   string // "acquire" (expects a slot), "busy" (expects ErrBusy at once), "block" (expects a wait), "overran i", "release i"
		slot int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"two slots, then a wait", []step{{op: "acquire"}, {op: "acquire"}, {op: "block"}}},
		{"one overran, one within deadline: wait", []step{{op: "acquire"}, {op: "acquire"}, {op: "overran", slot: 0}, {op: "block"}}},
		{"all overran: busy at once", []step{{op: "acquire"}, {op: "acquire"}, {op: "overran", slot: 0}, {op: "overran", slot: 1}, {op: "busy"}}},
		{"an overran call returns: a slot again", []step{{op: "acquire"}, {op: "acquire"}, {op: "overran", slot: 0}, {op: "overran", slot: 1}, {op: "busy"}, {op: "release", slot: 0}, {op: "acquire"}, {op: "block"}}},
		{"overran after release is ignored", []step{{op: "acquire"}, {op: "acquire"}, {op: "release", slot: 0}, {op: "overran", slot: 0}, {op: "acquire"}, {op: "overran", slot: 1}, {op: "block"}}},
		{"release twice frees one slot", []step{{op: "acquire"}, {op: "acquire"}, {op: "release", slot: 0}, {op: "release", slot: 0}, {op: "acquire"}, {op: "block"}}},
		{"overran twice counts once", []step{{op: "acquire"}, {op: "acquire"}, {op: "overran", slot: 0}, {op: "overran", slot: 0}, {op: "block"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLimiter(2)
			var slots []*Slot
			for i, s := range tc.steps {
				switch s.op {
				case "acquire":
					sl, err := l.Acquire(context.Background(), "srv")
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					slots = append(slots, sl)
				case "busy":
					start := time.Now()
					_, err := l.Acquire(context.Background(), "srv")
					if !errors.Is(err, ErrBusy) {
						t.Fatalf("step %d: got %v, want ErrBusy", i, err)
					}
					if d := time.Since(start); d > time.Second {
						t.Fatalf("step %d: ErrBusy after %v, want at once", i, d)
					}
					if !strings.Contains(err.Error(), "srv") || !strings.Contains(err.Error(), "2 calls stuck") {
						t.Errorf("step %d: message %q does not name the server and the stuck calls", i, err)
					}
				case "block":
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
					_, err := l.Acquire(ctx, "srv")
					cancel()
					if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrBusy) {
						t.Fatalf("step %d: got %v, want a wait ended by the context", i, err)
					}
				case "overran":
					slots[s.slot].Overran()
				case "release":
					slots[s.slot].Release()
				}
			}
			for _, sl := range slots {
				sl.Release()
			}
			if n := l.keyCount(); n != 0 {
				t.Errorf("%d keys left after every slot was released", n)
			}
			if n := l.Stuck("srv"); n != 0 {
				t.Errorf("Stuck = %d after every slot was released", n)
			}
		})
	}
}

func TestAcquireKeysAreIndependent(t *testing.T) {
	l := NewLimiter(1)
	a, err := l.Acquire(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	a.Overran()
	if _, err := l.Acquire(context.Background(), "a"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a: got %v, want ErrBusy", err)
	}
	b, err := l.Acquire(context.Background(), "b")
	if err != nil {
		t.Fatalf("b is refused because a is stuck: %v", err)
	}
	if l.Stuck("a") != 1 || l.Stuck("b") != 0 {
		t.Errorf("Stuck a=%d b=%d, want 1 and 0", l.Stuck("a"), l.Stuck("b"))
	}
	a.Release()
	b.Release()
	if n := l.keyCount(); n != 0 {
		t.Errorf("%d keys left", n)
	}
}

func TestAcquireWaiterProceedsWhenSlotFrees(t *testing.T) {
	l := NewLimiter(1)
	first, err := l.Acquire(context.Background(), "srv")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		s, err := l.Acquire(context.Background(), "srv")
		if err == nil {
			s.Release()
		}
		got <- err
	}()
	eventually(t, "the waiter to wait", func() bool { return l.waiting("srv") == 1 })
	select {
	case err := <-got:
		t.Fatalf("the waiter did not wait: %v", err)
	default:
	}
	first.Release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not proceed when the slot freed")
	}
	eventually(t, "the key to be dropped", func() bool { return l.keyCount() == 0 })
}

// Waiters queued behind calls within their deadline fail fast once those calls overrun.
func TestAcquireWaitersFailWhenAllOverrun(t *testing.T) {
	l := NewLimiter(2)
	s1, _ := l.Acquire(context.Background(), "srv")
	s2, _ := l.Acquire(context.Background(), "srv")
	const n = 5
	errs := make(chan error, n)
	for range n {
		go func() {
			s, err := l.Acquire(context.Background(), "srv")
			if err == nil {
				s.Release()
			}
			errs <- err
		}()
	}
	eventually(t, "the waiters to wait", func() bool { return l.waiting("srv") == n })
	s1.Overran()
	if l.waiting("srv") != n {
		t.Fatal("waiters gave up while a slot was still within its deadline")
	}
	s2.Overran()
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrBusy) {
				t.Fatalf("got %v, want ErrBusy", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiter still waits after every holder overran")
		}
	}
	if l.Stuck("srv") != 2 {
		t.Errorf("Stuck = %d, want 2", l.Stuck("srv"))
	}
	// Recovery: the stuck calls return, the server is usable again.
	s1.Release()
	s2.Release()
	if l.Stuck("srv") != 0 || l.keyCount() != 0 {
		t.Errorf("after recovery: Stuck %d, keys %d", l.Stuck("srv"), l.keyCount())
	}
	s, err := l.Acquire(context.Background(), "srv")
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	s.Release()
}

func TestAcquireEndedContext(t *testing.T) {
	l := NewLimiter(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(ctx, "srv"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	ran := false
	if err := l.Bounded(ctx, "srv", time.Second, "x", func() error { ran = true; return nil }); !errors.Is(err, ErrTimeout) || ran {
		t.Fatalf("Bounded with an ended context: %v (ran %v), want ErrTimeout without running fn", err, ran)
	}
	if l.keyCount() != 0 || l.Stuck("srv") != 0 {
		t.Error("state left behind")
	}
}

func TestAcquireCancelWhileWaiting(t *testing.T) {
	l := NewLimiter(1)
	s, _ := l.Acquire(context.Background(), "srv")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx, "srv")
		errc <- err
	}()
	eventually(t, "the waiter to wait", func() bool { return l.waiting("srv") == 1 })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not end the wait")
	}
	if l.waiting("srv") != 0 {
		t.Error("the cancelled waiter is still counted")
	}
	s.Release()
	if n := l.keyCount(); n != 0 {
		t.Errorf("%d keys left", n)
	}
}

// Bounded gives up at the deadline but keeps the slot until fn really returns.
func TestLimiterBoundedHoldsSlotUntilReturn(t *testing.T) {
	l := NewLimiter(1)
	release := make(chan struct{})
	returned := make(chan struct{})
	start := time.Now()
	err := l.Bounded(context.Background(), "srv", 50*time.Millisecond, "statfs /x", func() error {
		<-release
		defer close(returned)
		return nil
	})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Bounded returned after %v", d)
	}
	if l.Stuck("srv") != 1 {
		t.Fatalf("Stuck = %d, want 1", l.Stuck("srv"))
	}
	// The slot is still held: the next call is refused without running fn.
	ran := false
	err = l.Bounded(context.Background(), "srv", time.Second, "statfs /x", func() error { ran = true; return nil })
	if !errors.Is(err, ErrBusy) || ran {
		t.Fatalf("second call: %v (ran %v), want ErrBusy without running", err, ran)
	}
	if !strings.Contains(err.Error(), "statfs /x") {
		t.Errorf("message %q does not say what was refused", err)
	}
	close(release)
	<-returned
	eventually(t, "the slot to be released", func() bool { return l.Stuck("srv") == 0 && l.keyCount() == 0 })
	want := errors.New("boom")
	if err := l.Bounded(context.Background(), "srv", time.Second, "x", func() error { return want }); err != want {
		t.Fatalf("after recovery: got %v, want fn's error", err)
	}
	if n := l.keyCount(); n != 0 {
		t.Errorf("%d keys left", n)
	}
}

// The deadline covers the wait for a slot: a call queued behind a slow one times out.
func TestLimiterBoundedWaitTimesOut(t *testing.T) {
	l := NewLimiter(1)
	s, _ := l.Acquire(context.Background(), "srv")
	defer s.Release()
	ran := false
	err := l.Bounded(context.Background(), "srv", 30*time.Millisecond, "stat /x", func() error { ran = true; return nil })
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("got %v (ran %v), want ErrTimeout without running fn", err, ran)
	}
}

func TestNilLimiter(t *testing.T) {
	var l *Limiter
	if err := l.Bounded(context.Background(), "srv", time.Second, "x", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	for range 3 {
		if err := l.Bounded(context.Background(), "srv", 10*time.Millisecond, "x", func() error { <-release; return nil }); !errors.Is(err, ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout (a nil Limiter never refuses)", err)
		}
	}
	s, err := l.Acquire(context.Background(), "srv")
	if err != nil {
		t.Fatal(err)
	}
	s.Overran()
	s.Release()
	if l.Stuck("srv") != 0 || l.PerKey() != 0 {
		t.Error("a nil Limiter reports state")
	}
	if st, err := LimitedValue(l, context.Background(), "srv", time.Second, "statfs", func() (Stats, error) { return ReadStats(t.TempDir()) }); err != nil || st.TotalBytes <= 0 {
		t.Fatalf("LimitedValue with a nil Limiter: %+v, %v", st, err)
	}
}

func TestLimitedValue(t *testing.T) {
	l := NewLimiter(2)
	dir := t.TempDir()
	st, err := LimitedValue(l, context.Background(), "srv", time.Second, "statfs "+dir, func() (Stats, error) { return ReadStats(dir) })
	if err != nil || st.TotalBytes <= 0 {
		t.Fatalf("statfs: %+v, %v", st, err)
	}
	lstat := func(p string) func() (os.FileInfo, error) { return func() (os.FileInfo, error) { return os.Lstat(p) } }
	fi, err := LimitedValue(l, context.Background(), "srv", time.Second, "stat "+dir, lstat(dir))
	if err != nil || !fi.IsDir() {
		t.Fatalf("lstat: %v, %v", fi, err)
	}
	if _, err := LimitedValue(l, context.Background(), "srv", time.Second, "stat", lstat(dir+"/missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lstat of a missing path: %v", err)
	}
	if n := l.keyCount(); n != 0 {
		t.Errorf("%d keys left", n)
	}
}

// A value acquired after the caller gave up is dropped, and the slot is freed when the call returns.
func TestLimitedOwnedDropsLateValue(t *testing.T) {
	l := NewLimiter(1)
	release := make(chan struct{})
	dropped := make(chan int, 1)
	_, err := LimitedOwned(l, context.Background(), "srv", 20*time.Millisecond, "open", func() (int, error) {
		<-release
		return 42, nil
	}, func(v int) { dropped <- v })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if l.Stuck("srv") != 1 {
		t.Fatalf("Stuck = %d, want 1", l.Stuck("srv"))
	}
	close(release)
	select {
	case v := <-dropped:
		if v != 42 {
			t.Errorf("dropped %d", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late value was not dropped")
	}
	eventually(t, "the slot to be released", func() bool { return l.keyCount() == 0 })
	v, err := LimitedOwned(l, context.Background(), "srv", time.Second, "open", func() (int, error) { return 7, nil },
		func(int) { t.Error("dropped a value its caller received") })
	if err != nil || v != 7 {
		t.Fatalf("got %d, %v", v, err)
	}
}

// A randomized mix of calls that return in time, overrun and get cancelled, on a few keys: the slots
// in flight never exceed the bound, every call ends, and no state is left.
func TestLimiterStress(t *testing.T) {
	const perKey = 3
	l := NewLimiter(perKey)
	keys := []string{"a", "b", "c"}
	var inFlight [3]atomic.Int32
	var maxSeen [3]atomic.Int32
	var ok, busy, timedOut atomic.Int32
	var wg sync.WaitGroup
	for i := range 600 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			k := r.IntN(len(keys))
			ctx := context.Background()
			if r.IntN(5) == 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Duration(r.IntN(3000))*time.Microsecond)
				defer cancel()
			}
			hold := time.Duration(r.IntN(4000)) * time.Microsecond
			err := l.Bounded(ctx, keys[k], 2*time.Millisecond, "op", func() error {
				n := inFlight[k].Add(1)
				for {
					m := maxSeen[k].Load()
					if n <= m || maxSeen[k].CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(hold)
				inFlight[k].Add(-1)
				return nil
			})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrBusy):
				busy.Add(1)
			case errors.Is(err, ErrTimeout):
				timedOut.Add(1)
			default:
				t.Errorf("unexpected error %v", err)
			}
			if r.IntN(3) == 0 {
				_ = l.Stuck(keys[k])
			}
		})
	}
	wg.Wait()
	for k := range keys {
		if m := maxSeen[k].Load(); m > perKey {
			t.Errorf("key %s: %d calls in flight at once, bound %d", keys[k], m, perKey)
		}
	}
	// Overrun calls may still be sleeping; they release their slots when they return.
	eventually(t, "every slot to be released", func() bool { return l.keyCount() == 0 })
	t.Logf("ok %d, busy %d, timed out %d", ok.Load(), busy.Load(), timedOut.Load())
	// How many of the storm's calls succeed depends on the machine's load (under -race on a busy
	// machine every 2 ms deadline can pass); what must hold is that the limiter serves again once the
	// stuck calls are gone.
	for _, k := range keys {
		if err := l.Bounded(context.Background(), k, 10*time.Second, "op", func() error { return nil }); err != nil {
			t.Errorf("key %s after the storm: %v", k, err)
		}
	}
}

// threads reads the process's OS thread count from /proc/self/status.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no Threads line in /proc/self/status")
	return 0
}

// blockedReading counts this process's threads blocked in read(2) on fd, from /proc/self/task/*/syscall
// ("<number> <arg0 as hex> ...": the call a thread is blocked in and its arguments).
func blockedReading(t *testing.T, fd int) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skipf("no /proc/self/task: %v", err)
	}
	want := strconv.Itoa(syscall.SYS_READ) + " 0x" + strconv.FormatInt(int64(fd), 16) + " "
	n := 0
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
		if err != nil {
			continue // the thread exited, or the kernel does not say
		}
		if strings.HasPrefix(string(b), want) {
			n++
		}
	}
	return n
}

// The point of the limiter: 500 calls against a server that never answers cost perKey OS threads, not
// 500. fn blocks in a real read(2) on a pipe nobody writes (a blocking descriptor, not Go's poller),
// which pins an OS thread as a hung NFS call does.
func TestLimiterBoundsThreads(t *testing.T) {
	const perKey, calls = 8, 500
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	rfd, wfd := p[0], p[1]
	wClosed := false
	defer func() {
		if !wClosed {
			syscall.Close(wfd)
		}
	}()
	l := NewLimiter(perKey)
	var entered, returned atomic.Int32
	hang := func() error {
		entered.Add(1)
		defer returned.Add(1)
		var b [1]byte
		_, err := syscall.Read(rfd, b[:]) // blocks until the write end closes
		return err
	}
	before := threads(t)
	var wg sync.WaitGroup
	var busy, timedOut atomic.Int32
	start := time.Now()
	for range calls {
		wg.Go(func() {
			err := l.Bounded(context.Background(), "dead-server", 50*time.Millisecond, "statfs /dead", hang)
			switch {
			case errors.Is(err, ErrBusy):
				busy.Add(1)
			case errors.Is(err, ErrTimeout):
				timedOut.Add(1)
			default:
				t.Errorf("got %v, want ErrBusy or ErrTimeout", err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	after := threads(t)
	t.Logf("%d calls in %v: %d timed out, %d refused busy; %d entered fn; threads %d -> %d", calls, elapsed,
		timedOut.Load(), busy.Load(), entered.Load(), before, after)
	if n := entered.Load(); n > perKey {
		t.Errorf("%d calls entered fn, bound %d", n, perKey)
	}
	eventually(t, "the calls in fn to block in read(2)", func() bool { return blockedReading(t, rfd) == int(entered.Load()) })
	if l.Stuck("dead-server") != perKey {
		t.Errorf("Stuck = %d, want %d", l.Stuck("dead-server"), perKey)
	}
	// The runtime may start a few threads of its own (sysmon, GC workers, a spare M); 500 calls must not.
	if after-before > perKey+6 {
		t.Errorf("threads grew by %d (from %d to %d), want at most %d + a few", after-before, before, after, perKey)
	}
	if elapsed > 10*time.Second {
		t.Errorf("500 calls against a dead server took %v", elapsed)
	}
	// The server comes back: the stuck reads return, their slots free, calls go through again.
	syscall.Close(wfd)
	wClosed = true
	eventually(t, "the stuck calls to return", func() bool { return returned.Load() == entered.Load() && l.keyCount() == 0 })
	syscall.Close(rfd)
	if err := l.Bounded(context.Background(), "dead-server", time.Second, "statfs /dead", func() error { return nil }); err != nil {
		t.Fatalf("after recovery: %v", err)
	}

	// The control: without a limiter every call pins a thread (so the bound above is the limiter's
	// doing). 64 calls, not 500: each one costs a thread for good.
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	rfd, wfd = p[0], p[1]
	wClosed = false
	entered.Store(0)
	returned.Store(0)
	var none *Limiter
	before = threads(t)
	const unlimited = 64
	for range unlimited {
		wg.Go(func() {
			if err := none.Bounded(context.Background(), "dead-server", 20*time.Millisecond, "statfs /dead", hang); !errors.Is(err, ErrTimeout) {
				t.Errorf("without a limiter: got %v, want ErrTimeout", err)
			}
		})
	}
	wg.Wait()
	eventually(t, "every unlimited call to block in read(2), each on a thread of its own",
		func() bool { return blockedReading(t, rfd) == unlimited })
	t.Logf("without a limiter: %d calls, threads %d -> %d (idle threads of earlier runs are reused)", unlimited, before, threads(t))
	syscall.Close(wfd)
	wClosed = true
	eventually(t, "the unlimited calls to return", func() bool { return returned.Load() == unlimited })
	syscall.Close(rfd)
}
