package load

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want ProcMem
		ok   bool
	}{
		{"typical", "Name:\tpaddock\nVmPeak:\t  900 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n", ProcMem{10240, 20480}, true},
		{"rss before hwm", "VmRSS: 5 kB\nVmHWM: 6 kB\n", ProcMem{5, 6}, true},
		{"kernel thread", "Name:\tkthreadd\nState:\tS\n", ProcMem{}, false},
		{"only rss", "VmRSS: 5 kB\n", ProcMem{}, false},
		{"bad unit", "VmRSS: 5 MB\nVmHWM: 6 kB\n", ProcMem{}, false},
		{"bad number", "VmRSS: x kB\nVmHWM: 6 kB\n", ProcMem{}, false},
		{"VmRSSx is not VmRSS", "VmRSSx: 1 kB\nVmRSS: 2 kB\nVmHWM: 3 kB\n", ProcMem{2, 3}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStatus(strings.NewReader(tc.in))
			if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
				t.Errorf("parseProcStatus = %+v, %v; want %+v ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestReadProcMemSelf(t *testing.T) {
	m, err := ReadProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.VmRSSKiB <= 0 || m.VmHWMKiB <= 0 {
		t.Errorf("self: %+v", m)
	}
	if _, err := ReadProcMem(1 << 30); err == nil {
		t.Error("no error for a pid that cannot exist")
	}
}

func TestSampleRSS(t *testing.T) {
	rep := SampleRSS(context.Background(), os.Getpid(), 10*time.Millisecond, 100*time.Millisecond)
	if rep.Error != "" || rep.Samples < 3 || rep.PeakVmRSSKiB <= 0 || rep.VmHWMKiB <= 0 ||
		rep.StartVmRSSKiB <= 0 || rep.EndVmRSSKiB <= 0 || rep.PID != os.Getpid() || rep.IntervalMs != 10 {
		t.Errorf("SampleRSS(self) = %+v", rep)
	}
	gone := SampleRSS(context.Background(), 1<<30, 10*time.Millisecond, time.Second)
	if gone.Samples != 0 || gone.Error == "" {
		t.Errorf("SampleRSS(no such pid) = %+v", gone)
	}
}
