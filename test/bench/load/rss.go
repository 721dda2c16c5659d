package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcMem is the memory a process holds according to /proc/PID/status.
type ProcMem struct {
	VmRSSKiB int64 `json:"vmrss_kib"` // resident set size now
	VmHWMKiB int64 `json:"vmhwm_kib"` // peak resident set size, kept by the kernel
}

// ReadProcMem reads VmRSS and VmHWM of pid from /proc.
func ReadProcMem(pid int) (ProcMem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMem{}, err
	}
	defer f.Close()
	m, err := parseProcStatus(f)
	if err != nil {
		return ProcMem{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return m, nil
}

// parseProcStatus picks VmRSS and VmHWM ("VmRSS:\t  1234 kB") out of a status
// file. Kernel threads have neither; that is an error because a caller
// sampling one has the wrong pid.
func parseProcStatus(r io.Reader) (ProcMem, error) {
	var m ProcMem
	var haveRSS, haveHWM bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return m, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		v, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("unexpected %s line %q: %w", key, sc.Text(), err)
		}
		if key == "VmRSS" {
			m.VmRSSKiB, haveRSS = v, true
		} else {
			m.VmHWMKiB, haveHWM = v, true
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if !haveRSS || !haveHWM {
		return m, fmt.Errorf("no VmRSS/VmHWM (kernel thread or not a process status file)")
	}
	return m, nil
}

// RSSReport summarizes sampling a process's memory over a run.
type RSSReport struct {
	PID           int     `json:"pid"`
	IntervalMs    float64 `json:"interval_ms"`
	Samples       int     `json:"samples"`
	StartVmRSSKiB int64   `json:"start_vmrss_kib"`
	EndVmRSSKiB   int64   `json:"end_vmrss_kib"`
	PeakVmRSSKiB  int64   `json:"peak_vmrss_kib"` // highest VmRSS seen by sampling
	// VmHWMKiB is the kernel's high-water mark at the last sample: it
	// catches peaks between samples, but the kernel updates it lazily, so
	// it can read a little below a sampled VmRSS. Take the larger of the two.
	VmHWMKiB int64  `json:"vmhwm_kib"`
	Error    string `json:"error,omitempty"`
}

// RSSSampler samples a process's VmRSS in the background.
type RSSSampler struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	rep RSSReport
}

// StartRSSSampler samples pid every interval until Stop or ctx is done. It
// takes the first sample before returning, so Start-then-Stop always has a
// start value.
func StartRSSSampler(ctx context.Context, pid int, interval time.Duration) *RSSSampler {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &RSSSampler{cancel: cancel, done: make(chan struct{})}
	s.rep = RSSReport{PID: pid, IntervalMs: ms(interval)}
	ok := s.sample()
	go func() {
		defer close(s.done)
		if !ok {
			return
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !s.sample() {
					return // process gone: keep what we have
				}
			}
		}
	}()
	return s
}

func (s *RSSSampler) sample() bool {
	m, err := ReadProcMem(s.rep.PID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.rep.Error = err.Error()
		return false
	}
	if s.rep.Samples == 0 {
		s.rep.StartVmRSSKiB = m.VmRSSKiB
	}
	s.rep.Samples++
	s.rep.EndVmRSSKiB = m.VmRSSKiB
	s.rep.VmHWMKiB = m.VmHWMKiB
	if m.VmRSSKiB > s.rep.PeakVmRSSKiB {
		s.rep.PeakVmRSSKiB = m.VmRSSKiB
	}
	return true
}

// Stop takes a last sample (if the process is still there), stops sampling
// and returns the summary.
func (s *RSSSampler) Stop() RSSReport {
	s.cancel()
	<-s.done
	s.mu.Lock()
	failed := s.rep.Error != ""
	s.mu.Unlock()
	if !failed {
		s.sample()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rep
}

// SampleRSS samples pid every interval for duration (or until the process
// exits or ctx is done) and returns the summary.
func SampleRSS(ctx context.Context, pid int, interval, duration time.Duration) RSSReport {
	s := StartRSSSampler(ctx, pid, interval)
	select {
	case <-time.After(duration):
	case <-ctx.Done():
	case <-s.done:
	}
	return s.Stop()
}
