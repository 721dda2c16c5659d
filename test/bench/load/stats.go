// Package load is a CSI load generator and a set of raw "floor" measurements
// (mkdir, rename, mount, rm -rf) reported with the same statistics, so that a
// benchmark report can put a driver's RPC latency next to the cost of the
// filesystem work underneath it. It speaks plain CSI and assumes nothing about
// the driver behind the endpoint.
package load

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"
)

// Percentile returns the p-th percentile (0..100) of sorted using the
// nearest-rank method: the smallest sample such that at least p% of the
// samples are <= it. Nearest-rank never invents a value that was not observed,
// which is what a latency report wants. p <= 0 gives the minimum, p >= 100 the
// maximum, an empty slice 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	// The epsilon keeps p*n that is integral in exact arithmetic (e.g. 90% of
	// 10) from rounding up a rank through floating-point error.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// Recorder accumulates the latencies and errors of one op kind. It is safe for
// concurrent use by the workers of a phase.
type Recorder struct {
	op string

	mu       sync.Mutex
	lat      []time.Duration
	errs     int
	firstErr string
	wall     time.Duration
	items    int
}

// NewRecorder returns a Recorder for the op kind named op.
func NewRecorder(op string) *Recorder { return &Recorder{op: op} }

// Observe records one op that took d and failed with err (nil for success).
func (r *Recorder) Observe(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs++
		if r.firstErr == "" {
			r.firstErr = err.Error()
		}
		return
	}
	r.lat = append(r.lat, d)
}

// Time runs f, records its latency and error, and returns the error.
func (r *Recorder) Time(f func() error) error {
	start := time.Now()
	err := f()
	r.Observe(time.Since(start), err)
	return err
}

// SetWall sets the wall time of the phase the ops ran in; throughput is
// successful ops over this time.
func (r *Recorder) SetWall(d time.Duration) {
	r.mu.Lock()
	r.wall = d
	r.mu.Unlock()
}

// SetItems records how many items (files, directories) the ops processed, for
// ops like rm -rf where one op covers many items.
func (r *Recorder) SetItems(n int) {
	r.mu.Lock()
	r.items = n
	r.mu.Unlock()
}

// Stats summarizes what was recorded.
func (r *Recorder) Stats() OpStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := OpStats{
		Op:         r.op,
		Count:      len(r.lat) + r.errs,
		Errors:     r.errs,
		FirstError: r.firstErr,
		WallS:      r.wall.Seconds(),
		Items:      r.items,
	}
	if len(r.lat) > 0 {
		sorted := append([]time.Duration(nil), r.lat...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		var sum time.Duration
		for _, d := range sorted {
			sum += d
		}
		s.MeanMs = ms(sum / time.Duration(len(sorted)))
		s.MinMs = ms(sorted[0])
		s.P50Ms = ms(Percentile(sorted, 50))
		s.P90Ms = ms(Percentile(sorted, 90))
		s.P99Ms = ms(Percentile(sorted, 99))
		s.MaxMs = ms(sorted[len(sorted)-1])
	}
	if r.wall > 0 {
		s.OpsPerS = float64(len(r.lat)) / r.wall.Seconds()
		if r.items > 0 {
			s.ItemsPerS = float64(r.items) / r.wall.Seconds()
		}
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Parallel calls fn(ctx, i) for i in [0, n) on at most workers goroutines and
// returns the wall time from the first dispatch to the last completion. Once
// ctx is done no further indices are dispatched: an interrupted run stops
// instead of piling up failures.
func Parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int)) time.Duration {
	if workers < 1 {
		workers = 1
	}
	if workers > n {
		workers = n
	}
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(ctx, i)
			}
		}()
	}
dispatch:
	for i := 0; i < n; i++ {
		// Checked first because select picks at random when a worker is
		// also ready, which would let dispatch run on after a cancel.
		if ctx.Err() != nil {
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break dispatch
		}
	}
	close(next)
	wg.Wait()
	return time.Since(start)
}

// RunOps runs n ops named op on workers goroutines, timing each call of fn,
// and returns their statistics with the phase's wall time.
func RunOps(ctx context.Context, op string, n, workers int, fn func(ctx context.Context, i int) error) OpStats {
	r := NewRecorder(op)
	wall := Parallel(ctx, n, workers, func(ctx context.Context, i int) {
		_ = r.Time(func() error { return fn(ctx, i) })
	})
	r.SetWall(wall)
	return r.Stats()
}
