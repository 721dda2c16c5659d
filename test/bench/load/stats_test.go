package load

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func durs(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func seq(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one p50", durs(7), 50, 7 * time.Millisecond},
		{"one p99", durs(7), 99, 7 * time.Millisecond},
		{"p0 is min", durs(1, 2, 3), 0, 1 * time.Millisecond},
		{"p100 is max", durs(1, 2, 3), 100, 3 * time.Millisecond},
		{"negative p is min", durs(1, 2, 3), -5, 1 * time.Millisecond},
		{"two p50 is lower", durs(1, 2), 50, 1 * time.Millisecond},
		{"two p51 is upper", durs(1, 2), 51, 2 * time.Millisecond},
		{"four p50", durs(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"ten p90 exact rank", seq(10), 90, 9 * time.Millisecond},
		{"ten p99 rounds up", seq(10), 99, 10 * time.Millisecond},
		{"hundred p50", seq(100), 50, 50 * time.Millisecond},
		{"hundred p90", seq(100), 90, 90 * time.Millisecond},
		{"hundred p99", seq(100), 99, 99 * time.Millisecond},
		{"thousand p99", seq(1000), 99, 990 * time.Millisecond},
		{"thousand p99.9", seq(1000), 99.9, 999 * time.Millisecond},
		{"three p33.4", durs(10, 20, 30), 100.0 / 3, 10 * time.Millisecond},
		{"duplicates", durs(5, 5, 5, 9), 75, 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestRecorderStats(t *testing.T) {
	r := NewRecorder("op")
	// Out of order on purpose: Stats must sort.
	for _, m := range []int{40, 10, 30, 20} {
		r.Observe(time.Duration(m)*time.Millisecond, nil)
	}
	r.Observe(time.Second, errors.New("first"))
	r.Observe(time.Second, errors.New("second"))
	r.SetWall(2 * time.Second)
	r.SetItems(10)
	s := r.Stats()
	want := OpStats{
		Op: "op", Count: 6, Errors: 2, FirstError: "first", WallS: 2,
		OpsPerS: 2, MeanMs: 25, MinMs: 10, P50Ms: 20, P90Ms: 40, P99Ms: 40, MaxMs: 40,
		Items: 10, ItemsPerS: 5,
	}
	if s != want {
		t.Errorf("Stats() = %+v\nwant      %+v", s, want)
	}

	empty := NewRecorder("none").Stats()
	if empty.Count != 0 || empty.OpsPerS != 0 || empty.MaxMs != 0 {
		t.Errorf("empty recorder: %+v", empty)
	}
	allFail := NewRecorder("fail")
	allFail.Observe(time.Millisecond, errors.New("boom"))
	allFail.SetWall(time.Second)
	if s := allFail.Stats(); s.Count != 1 || s.Errors != 1 || s.OpsPerS != 0 || s.P50Ms != 0 {
		t.Errorf("all-fail recorder: %+v", s)
	}
}

func TestParallel(t *testing.T) {
	for _, tc := range []struct{ n, workers, wantMax int }{
		{0, 4, 0},
		{1, 4, 1},
		{10, 1, 1},
		{12, 3, 3},
		{8, 0, 1}, // workers < 1 means serial
	} {
		var inFlight, maxInFlight, calls atomic.Int32
		var mu sync.Mutex
		seen := map[int]bool{}
		Parallel(context.Background(), tc.n, tc.workers, func(_ context.Context, i int) {
			cur := inFlight.Add(1)
			for {
				m := maxInFlight.Load()
				if cur <= m || maxInFlight.CompareAndSwap(m, cur) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			inFlight.Add(-1)
			calls.Add(1)
			mu.Lock()
			seen[i] = true
			mu.Unlock()
		})
		if int(calls.Load()) != tc.n || len(seen) != tc.n {
			t.Errorf("n=%d workers=%d: %d calls, %d distinct indices", tc.n, tc.workers, calls.Load(), len(seen))
		}
		if int(maxInFlight.Load()) != tc.wantMax {
			t.Errorf("n=%d workers=%d: max in flight %d, want %d", tc.n, tc.workers, maxInFlight.Load(), tc.wantMax)
		}
	}
}

func TestParallelStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	Parallel(ctx, 1000, 2, func(_ context.Context, i int) {
		if calls.Add(1) == 5 {
			cancel()
		}
	})
	// The two workers may each be handed one more index around the cancel.
	if c := calls.Load(); c < 5 || c > 8 {
		t.Errorf("%d calls after cancel at the 5th, want 5..8", c)
	}
}

func TestRunOps(t *testing.T) {
	s := RunOps(context.Background(), "x", 10, 2, func(_ context.Context, i int) error {
		if i%5 == 0 {
			return errors.New("div5")
		}
		return nil
	})
	if s.Op != "x" || s.Count != 10 || s.Errors != 2 || s.FirstError != "div5" || s.WallS <= 0 || s.OpsPerS <= 0 {
		t.Errorf("RunOps stats: %+v", s)
	}
}
