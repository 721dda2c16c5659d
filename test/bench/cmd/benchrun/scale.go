package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/paddock-csi/paddock/test/bench/load"
)

// The scale section (-only scale) checks that CreateVolume and DeleteVolume
// stay O(1) in the number of volumes already on the export: the same
// sequential measurement with ScaleLow and then ScaleHigh real Paddock
// volumes (directories and claims, made by CreateVolume) on one export.
//
// It uses its own export, /srv/nfs/b, so the thousands of volumes it leaves
// there touch no other figure (the PVC figure and every floor use /srv/nfs/a),
// and the guest is thrown away at the end: nothing needs deleting.
const (
	scaleExport = "/srv/nfs/b"
	scaleNS     = "bench-scale"    // the claims' namespace for the two-level template
	scaleIDs    = "/tmp/bench-ids" // guest-local: 10 000-volume lists stay out of docs/bench
	// After the trash is seen empty, a sweep may still be listing the archive,
	// and a sweep queued meanwhile runs once more over the empty trash.
	scaleSettle = time.Second
)

var scaleParams = "server=127.0.0.1,share=" + scaleExport

// scaleTemplate is one subDir template the section measures.
type scaleTemplate struct {
	key, label string
	params     string
	pvcNS      string // csiload -pvc-namespace; "" sends no claim metadata
}

var scaleTemplates = []scaleTemplate{
	{key: "default", label: "subDir `${pv.metadata.name}` (default)", params: scaleParams},
	{key: "nested", label: "subDir `${pvc.metadata.namespace}/${pvc.metadata.name}`",
		params: scaleParams + ",subDir=${pvc.metadata.namespace}/${pvc.metadata.name}", pvcNS: scaleNS},
}

// scaleRep is one repetition of one template at one size.
type scaleRep struct {
	create, delete load.OpStats
	info           float64  // GetPluginInfo p50 just before, in ms: the guest's speed then
	rpcCreate      rpcDelta // the create calls
	rpcDelCalls    rpcDelta // the delete calls alone
	rpcDelete      rpcDelta // the delete calls and the reaper until the trash is empty again
}

// scaleSet is every repetition of one template at one size.
type scaleSet struct {
	volumes int // volume directories on the export before the repetitions
	reps    []scaleRep
}

func (b *bench) scale(ctx context.Context, ep string, sz sizes) error {
	start := time.Now()
	if _, err := b.exec(ctx, "mkdir", "-p", scaleIDs); err != nil {
		return err
	}
	// Nothing left from earlier sections may sweep while the counters run.
	for _, exp := range []string{export, scaleExport} {
		if err := b.waitTrashEmpty(ctx, exp); err != nil {
			return err
		}
	}
	time.Sleep(scaleSettle)
	sizesList := []int{sz.ScaleLow, sz.ScaleHigh}
	results := map[string]map[int]*scaleSet{} // template key -> size -> set
	info := map[int][]float64{}               // size -> GetPluginInfo p50 per repetition
	for _, t := range scaleTemplates {
		results[t.key] = map[int]*scaleSet{}
	}
	have := 0
	for _, size := range sizesList {
		// Top the export up to size volumes, half with each template (the
		// two-level ones all in one namespace directory), through CreateVolume
		// with parallel workers, untimed. The phases below add and remove
		// their own volumes, so the count is back to size before each one.
		if add := size - have; add > 0 {
			pt := time.Now()
			for i, t := range scaleTemplates {
				n := add / len(scaleTemplates)
				if i < add%len(scaleTemplates) {
					n++
				}
				if n == 0 {
					continue
				}
				name := fmt.Sprintf("scale-populate-%d-%s", size, t.key)
				args := []string{"-endpoint", ep, "-scenario", "create", "-n", strconv.Itoa(n), "-workers", strconv.Itoa(sz.Workers),
					"-params", t.params, "-access-mode", "RWX", "-ids", scaleIDs + "/" + name + ".json"}
				if t.pvcNS != "" {
					args = append(args, "-pvc-namespace", t.pvcNS)
				}
				rep, err := b.csiload(ctx, name, args...)
				if err != nil {
					return err
				}
				if e := rep.Errors(); e > 0 {
					return fmt.Errorf("populating %s: %d of %d CreateVolume calls failed: %s", scaleExport, e, n, firstErr(rep))
				}
			}
			logf("[scale] %d volumes on %s, populated in %s", size, scaleExport, time.Since(pt).Round(time.Second))
			have = size
		}
		dirs, links, err := b.countVolumes(ctx)
		if err != nil {
			return err
		}
		b.notes = append(b.notes, fmt.Sprintf("scale: %d volume directories on %s (%d expected), %d symlinks in its .paddock/claims",
			dirs, scaleExport, size, links))
		for _, t := range scaleTemplates {
			results[t.key][size] = &scaleSet{volumes: dirs}
		}
		// Repetitions alternate the templates so that a change in the guest's
		// speed during the run spreads over both.
		for rep := 1; rep <= sz.ScaleReps; rep++ {
			gi, err := b.csiload(ctx, fmt.Sprintf("scale-%d-getplugininfo-%d", size, rep), "-endpoint", ep, "-scenario", "info",
				"-n", strconv.Itoa(sz.ScaleOps), "-workers", "1")
			if err != nil {
				return err
			}
			ip50 := op(gi, load.OpGetPluginInfo).P50Ms
			info[size] = append(info[size], ip50)
			for _, t := range scaleTemplates {
				r, err := b.scaleRep(ctx, ep, sz, t, size, rep)
				if err != nil {
					return err
				}
				r.info = ip50
				results[t.key][size].reps = append(results[t.key][size].reps, r)
			}
		}
	}
	lo, hi := sz.ScaleLow, sz.ScaleHigh
	for _, t := range scaleTemplates {
		b.scaleRows(t, results[t.key][lo], results[t.key][hi], sz)
	}
	gr := row{fig: fmt.Sprintf("GetPluginInfo p50 during the O(1) runs, at %d vs %d volumes", hi, lo), group: "scale",
		value: msStr(median(info[hi])), floor: msStr(median(info[lo])) + fmt.Sprintf(" at %d", lo),
		note: fmt.Sprintf("no filesystem work: the guest's speed at the two sizes (per repetition %s ms at %d, %s ms at %d)",
			spread(info[lo]), lo, spread(info[hi]), hi)}
	if m := median(info[lo]); m > 0 {
		gr.ratio = fmt.Sprintf("%.2f×", median(info[hi])/m)
	}
	b.add(gr)
	logf("[scale] section took %s", time.Since(start).Round(time.Second))
	return nil
}

// scaleRep creates ScaleOps volumes one at a time and deletes them again,
// reading the NFS client counters around each phase; the delete phase's
// count runs on until the reaper has emptied the trash they went to (and
// settled), so the next phase starts with the reaper idle.
func (b *bench) scaleRep(ctx context.Context, ep string, sz sizes, t scaleTemplate, size, rep int) (scaleRep, error) {
	var r scaleRep
	name := fmt.Sprintf("scale-%d-%s-%d", size, t.key, rep)
	ids := scaleIDs + "/" + name + ".json"
	if err := b.waitTrashEmpty(ctx, scaleExport); err != nil {
		return r, err
	}
	var cr *load.Report
	var err error
	r.rpcCreate, err = b.counted(ctx, func() error {
		args := []string{"-endpoint", ep, "-scenario", "create", "-n", strconv.Itoa(sz.ScaleOps), "-workers", "1",
			"-params", t.params, "-access-mode", "RWX", "-ids", ids}
		if t.pvcNS != "" {
			args = append(args, "-pvc-namespace", t.pvcNS)
		}
		cr, err = b.csiload(ctx, name+"-create", args...)
		return err
	})
	if err != nil {
		return r, err
	}
	r.create = op(cr, load.OpCreateVolume)

	c0, err := b.nfsCounters(ctx)
	if err != nil {
		return r, err
	}
	dr, err := b.csiload(ctx, name+"-delete", "-endpoint", ep, "-scenario", "delete", "-ids", ids, "-workers", "1")
	if err != nil {
		return r, err
	}
	r.delete = op(dr, load.OpDeleteVolume)
	c1, err := b.nfsCounters(ctx)
	if err != nil {
		return r, err
	}
	if err := b.waitTrashEmpty(ctx, scaleExport); err != nil {
		return r, err
	}
	time.Sleep(scaleSettle)
	c2, err := b.nfsCounters(ctx)
	if err != nil {
		return r, err
	}
	r.rpcDelCalls, r.rpcDelete = delta(c0, c1), delta(c0, c2)
	logf("[scale] %d volumes, %s, repetition %d: CreateVolume p50 %s, %.1f RPCs; DeleteVolume p50 %s, %.1f RPCs (%.1f in the calls)",
		size, t.key, rep, msStr(r.create.P50Ms), perOp(r.rpcCreate, r.create), msStr(r.delete.P50Ms),
		perOp(r.rpcDelete, r.delete), perOp(r.rpcDelCalls, r.delete))
	return r, nil
}

// waitTrashEmpty polls the export's trash on the server side (no NFS
// traffic) until the reaper has emptied it.
func (b *bench) waitTrashEmpty(ctx context.Context, exp string) error {
	dir := exp + "/.paddock/trash"
	deadline := time.Now().Add(5 * time.Minute)
	for {
		res, err := b.g.Exec(ctx, "/bin/sh", "-c", "test ! -d "+dir+" || test -z \"$(ls -A "+dir+")\"")
		if err != nil {
			return err
		}
		if res.ExitCode == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not empty after 5 minutes", dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countVolumes counts, on the server side, the volume directories the two
// templates make on the scale export (at its root, and in the namespace
// directory), and the symlinks at the top of its claims area (a claim is
// one; the layout of the rest of that area is Paddock's business).
func (b *bench) countVolumes(ctx context.Context) (dirs, claimLinks int, err error) {
	script := "cd " + scaleExport + " && " +
		"a=$(ls -A | grep -v -x -e .paddock -e " + scaleNS + " | wc -l) && " +
		"n=$( (ls -A " + scaleNS + " 2>/dev/null || true) | wc -l) && " +
		"l=$(ls -l .paddock/claims | grep -c '^l' || true) && echo $((a+n)) $l"
	out, err := b.exec(ctx, "/bin/sh", "-c", script)
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscan(out, &dirs, &claimLinks); err != nil {
		return 0, 0, fmt.Errorf("counting volumes on %s: %q: %w", scaleExport, out, err)
	}
	return dirs, claimLinks, nil
}

// scaleRows adds the four rows of one template: p50 and round trips of
// CreateVolume and DeleteVolume at the high size, against the low size.
func (b *bench) scaleRows(t scaleTemplate, lo, hi *scaleSet, sz sizes) {
	if lo == nil || hi == nil || len(lo.reps) == 0 || len(hi.reps) == 0 {
		return
	}
	vs := fmt.Sprintf("%d vs %d volumes on the export", hi.volumes, lo.volumes)
	reps := fmt.Sprintf("%d repetitions of %d sequential calls", len(hi.reps), sz.ScaleOps)
	for _, k := range []struct {
		name string
		get  func(r scaleRep) load.OpStats
	}{
		{load.OpCreateVolume, func(r scaleRep) load.OpStats { return r.create }},
		{load.OpDeleteVolume, func(r scaleRep) load.OpStats { return r.delete }},
	} {
		lp, hp := p50s(lo.reps, k.get), p50s(hi.reps, k.get)
		le, he := errCount(lo.reps, k.get), errCount(hi.reps, k.get)
		r := row{fig: fmt.Sprintf("%s p50, sequential, %s, %s", k.name, vs, t.label), group: "scale",
			value: msStr(median(hp)), floor: msStr(median(lp)) + fmt.Sprintf(" at %d", lo.volumes), target: "≤ 1.5× (O(1))"}
		if he+le > 0 {
			r.value += fmt.Sprintf(" (%d failed)", he+le)
		}
		ratio := safeDiv(median(hp), median(lp))
		if ratio > 0 {
			r.ratio = fmt.Sprintf("%.2f×", ratio)
			r.met = tri(ratio <= 1.5 && he+le == 0)
		}
		r.note = fmt.Sprintf("median of the p50s of %s; p50 per repetition %s ms at %d, %s ms at %d; ratio %s with the extremes paired",
			reps, spread(lp), lo.volumes, spread(hp), hi.volumes, ratioSpread(lp, hp))
		// The same against the guest's speed at the time: each repetition's
		// p50 in units of the GetPluginInfo p50 measured just before it.
		if lr, hr := relP50s(lo.reps, k.get), relP50s(hi.reps, k.get); median(lr) > 0 {
			r.note += fmt.Sprintf("; in GetPluginInfo p50s of the same repetition %.1f at %d, %.1f at %d (%.2f×)",
				median(lr), lo.volumes, median(hr), hi.volumes, median(hr)/median(lr))
		}
		b.add(r)
	}

	// Round trips: the creates' own; the deletes' with the reaper's removal
	// of what they moved into the trash.
	create := func(r scaleRep) (rpcDelta, load.OpStats) { return r.rpcCreate, r.create }
	cl, ch := rpcPer(lo.reps, create), rpcPer(hi.reps, create)
	rc := row{fig: fmt.Sprintf("NFS round trips per CreateVolume, %s, %s", vs, t.label), group: "scale",
		value: fmt.Sprintf("%.1f", ch.per), floor: fmt.Sprintf("%.1f at %d", cl.per, lo.volumes), target: "≤ 4 and ≤ 1.5× (O(1))"}
	if cl.per > 0 {
		ratio := ch.per / cl.per
		rc.ratio = fmt.Sprintf("%.2f×", ratio)
		// Compared as shown (one decimal): the NFS client's own lease
		// renewals (a lone SEQUENCE on its timer) add about 0.02 per call.
		rc.met = tri(ratio <= 1.5 && round1(ch.per) <= 4 && round1(cl.per) <= 4)
	}
	rc.note = fmt.Sprintf("at %d: %s; at %d: %s; per repetition %s at %d, %s at %d",
		hi.volumes, ch.by, lo.volumes, cl.by, spread(cl.reps), lo.volumes, spread(ch.reps), hi.volumes)
	b.add(rc)

	del := func(r scaleRep) (rpcDelta, load.OpStats) { return r.rpcDelete, r.delete }
	calls := func(r scaleRep) (rpcDelta, load.OpStats) { return r.rpcDelCalls, r.delete }
	dl, dh := rpcPer(lo.reps, del), rpcPer(hi.reps, del)
	kl, kh := rpcPer(lo.reps, calls), rpcPer(hi.reps, calls)
	rd := row{fig: fmt.Sprintf("NFS round trips per DeleteVolume incl. the reaper emptying the trash, %s, %s", vs, t.label), group: "scale",
		value: fmt.Sprintf("%.1f", dh.per), floor: fmt.Sprintf("%.1f at %d", dl.per, lo.volumes), target: "≤ 1.5× (O(1))"}
	if dl.per > 0 {
		ratio := dh.per / dl.per
		rd.ratio = fmt.Sprintf("%.2f×", ratio)
		rd.met = tri(ratio <= 1.5)
	}
	rd.note = fmt.Sprintf("in the DeleteVolume calls alone %.1f at %d, %.1f at %d; at %d: %s; at %d: %s; per repetition %s at %d, %s at %d",
		kl.per, lo.volumes, kh.per, hi.volumes, hi.volumes, dh.by, lo.volumes, dl.by, spread(dl.reps), lo.volumes, spread(dh.reps), hi.volumes)
	b.add(rd)
}

// rpcSummary is the round trips of a set of repetitions per successful op.
type rpcSummary struct {
	per  float64   // all repetitions: total RPCs / total ops
	reps []float64 // per repetition
	by   string    // per op kind, biggest first
}

// rpcPer sums the counter deltas of reps and divides by their successful ops.
func rpcPer(reps []scaleRep, get func(scaleRep) (rpcDelta, load.OpStats)) rpcSummary {
	var s rpcSummary
	sum := rpcDelta{by: map[string]int64{}}
	ops := 0
	for _, r := range reps {
		d, st := get(r)
		n := st.Count - st.Errors
		ops += n
		sum.total += d.total
		for k, v := range d.by {
			sum.by[k] += v
		}
		s.reps = append(s.reps, perOp(d, st))
	}
	if ops > 0 {
		s.per = float64(sum.total) / float64(ops)
		s.by = sum.perOp(ops)
	}
	return s
}

// perOp is d's round trips per successful op of st.
func perOp(d rpcDelta, st load.OpStats) float64 {
	n := st.Count - st.Errors
	if n <= 0 {
		return 0
	}
	return float64(d.total) / float64(n)
}

func p50s(reps []scaleRep, get func(scaleRep) load.OpStats) []float64 {
	var out []float64
	for _, r := range reps {
		if s := get(r); s.Count > s.Errors {
			out = append(out, s.P50Ms)
		}
	}
	return out
}

// relP50s is each repetition's p50 divided by its GetPluginInfo p50.
func relP50s(reps []scaleRep, get func(scaleRep) load.OpStats) []float64 {
	var out []float64
	for _, r := range reps {
		if s := get(r); s.Count > s.Errors && r.info > 0 {
			out = append(out, s.P50Ms/r.info)
		}
	}
	return out
}

func errCount(reps []scaleRep, get func(scaleRep) load.OpStats) int {
	n := 0
	for _, r := range reps {
		n += get(r).Errors
	}
	return n
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func minMax(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	lo, hi := v[0], v[0]
	for _, x := range v[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// spread formats the min–max of v in v's own unit (ms for latencies, a
// plain count for round trips).
func spread(v []float64) string {
	lo, hi := minMax(v)
	return f1(lo) + "–" + f1(hi)
}

// ratioSpread is hi/lo at its most favourable and least favourable pairing
// of the repetitions: the range the ratio could take if the guest's speed
// drifted between the two sizes.
func ratioSpread(lo, hi []float64) string {
	lmin, lmax := minMax(lo)
	hmin, hmax := minMax(hi)
	if lmin <= 0 || lmax <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f–%.2f×", hmin/lmax, hmax/lmin)
}
