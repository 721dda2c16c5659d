package main

import (
	"testing"

	"github.com/paddock-csi/paddock/test/bench/load"
)

func TestMedianSpread(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0}, {[]float64{3}, 3}, {[]float64{9, 1, 5}, 5}, {[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	in := []float64{9, 1, 5}
	median(in)
	if in[0] != 9 || in[1] != 1 {
		t.Errorf("median sorted its argument: %v", in)
	}
	if got := spread([]float64{6.5, 12.31, 7}); got != "6.50–12.3" {
		t.Errorf("spread = %q", got)
	}
	// The ratio's range pairs the extremes: best case hmin/lmax, worst hmax/lmin.
	if got := ratioSpread([]float64{4, 5}, []float64{5, 6}); got != "1.00–1.50×" {
		t.Errorf("ratioSpread = %q", got)
	}
	if round1(4.02) != 4 || round1(4.06) != 4.1 {
		t.Errorf("round1: %v %v", round1(4.02), round1(4.06))
	}
	if got := ratioSpread(nil, []float64{1}); got != "—" {
		t.Errorf("ratioSpread without a baseline = %q", got)
	}
}

func TestRPCPer(t *testing.T) {
	st := func(n, errs int) load.OpStats { return load.OpStats{Count: n, Errors: errs} }
	reps := []scaleRep{
		{create: st(50, 0), rpcCreate: rpcDelta{total: 150, by: map[string]int64{"LOOKUP": 50, "CREATE": 50, "SYMLINK": 50}}},
		{create: st(50, 10), rpcCreate: rpcDelta{total: 160, by: map[string]int64{"LOOKUP": 60, "CREATE": 50, "SYMLINK": 50}}},
	}
	s := rpcPer(reps, func(r scaleRep) (rpcDelta, load.OpStats) { return r.rpcCreate, r.create })
	// Failed calls are not ops: 310 round trips over 90 successful calls.
	if s.per != 310.0/90 || len(s.reps) != 2 || s.reps[0] != 3 || s.reps[1] != 4 {
		t.Errorf("rpcPer = %+v", s)
	}
	if s.by != "LOOKUP 1.2, CREATE 1.1, SYMLINK 1.1" {
		t.Errorf("by = %q", s.by)
	}
	rel := relP50s([]scaleRep{{create: load.OpStats{Count: 1, P50Ms: 6}, info: 3}, {create: load.OpStats{Count: 1, P50Ms: 6}}},
		func(r scaleRep) load.OpStats { return r.create })
	if len(rel) != 1 || rel[0] != 2 {
		t.Errorf("relP50s = %v (a repetition without GetPluginInfo is left out)", rel)
	}
}
