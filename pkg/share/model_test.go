package share

// TestModelConcurrentVolumes is a randomized, model-checked concurrency test of the export workspace.
//
// Setup: one local directory stands in for the export nfs.example:/export, and its subdirectory "inner"
// for a second, overlapping export nfs.example:/export/inner of the same server. Two Workspaces (two
// controller processes) with their own work directories and fake mounters use both exports; the
// reaper does not run, so the trash keeps everything. A sentinel directory sits next to the export.
//
// Each round runs batches: the admin may first write files into unclaimed directories (static PVs,
// directories to adopt), then up to -model.batch logical operations run concurrently on distinct
// targets (volume names, static PVs, snapshots): Create (plain, with mode/uid, reuse of existing
// directories, restore from a snapshot, clone of a volume, and with a different subDir/onDelete/mode/
// uid/source than the live volume), Delete (onDelete delete/archive/retain), Scrub of volumes and of
// unclaimed directories (also ones holding volumes, and the inner export's root), CreateSnapshot,
// DeleteSnapshot and users writing files into live volumes. An operation is sometimes issued on both
// workspaces at once, repeated after it succeeded (a lost reply), or run with a 0-2 ms deadline or
// cancelled right after it started (a dead server), then often followed at once by a normal call on
// the same volume and workspace, after which a user writes files into it.
//
// The model knows, per volume name, whether it is absent, alive (its claim, directory and exact files
// must be there) or uncertain (a call on it was abandoned; a later normal call on the same workspace
// resolves it), every file it expects on the export, and every file a successful Delete or Scrub moved.
// After each batch it checks the invariants on the real directories: (1) claimed volume directories are
// never nested, equal or claimed twice, on the same server across both exports; (2) none is, contains
// or lies inside the other export's root or a metadata area; (3) every live volume has its claim and
// directory and holds exactly its files (none lost, none foreign); (4) what a successful Delete moved is
// in its export's trash (delete) or archive (archive), a retained directory stays in place, files
// written after a successful Scrub survive; (5) nothing next to the export changes. Successful calls are
// checked against the state before them as they return (a Create nested in or around a live volume, at
// an export root, over a directory with files without reuse, or with different arguments than the live
// volume; a Scrub emptying a live volume or an export root). A violation seen at a barrier is reported
// only if it is still there 100 ms later (abandoned calls may still be running). Finally (6) at least
// 20% of Create calls must succeed, so the test cannot pass by everything failing.
//
// Flags (after the package on the go test command line):
//
//	-model.seed=N     seed of round 0 (default: from the clock); round r uses N+r, and every failure
//	                  names its round's seed and the command that reruns that round alone
//	-model.ops=N      logical operations in all (default 10000: about 11700 workspace calls and 10000
//	                  file writes, some 20-30 s under -race on a two-core VM with an ext4 /tmp)
//	-model.round=N    operations per round (default 1000); each round starts on a fresh export, which
//	                  keeps the trees the checks walk small
//	-model.batch=N    concurrent operations between two checks (default 12)
//	-model.reports=N  violations printed in detail per round (default 25; the rest are counted)
//
// The seed fixes the planner's random choices, not the interleavings (nor the choices that depend on
// the outcomes), so reproducing a failure may take a few runs (-count=N). `make stress` runs 200000
// operations (STRESS_OPS, STRESS_SEED).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/volume"
)

var (
	modelSeed  = flag.Int64("model.seed", 0, "TestModelConcurrentVolumes: seed of the first round (0: from the clock); round r uses seed+r")
	modelOps   = flag.Int("model.ops", 10000, "TestModelConcurrentVolumes: logical operations in all rounds")
	modelRound = flag.Int("model.round", 1000, "TestModelConcurrentVolumes: logical operations per round (each on a fresh export)")
	modelBatch = flag.Int("model.batch", 12, "TestModelConcurrentVolumes: concurrent operations between two invariant checks")
	// modelReports bounds the violations reported in detail per round (the rest are counted).
	modelReports = flag.Int("model.reports", 25, "TestModelConcurrentVolumes: violations reported in detail per round")
)

func TestModelConcurrentVolumes(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000_000
	}
	per := max(*modelRound, 1)
	total := max(*modelOps, 1)
	batch := max(*modelBatch, 1)
	counts := newModelCounts()
	base := t.TempDir()
	start := time.Now()
	failed := 0
	for idx, done := 0, 0; done < total; idx++ {
		n := min(per, total-done)
		rs := seed + int64(idx)
		r := newModelRound(t, base, idx, rs, counts)
		r.run(n, batch)
		r.close()
		done += n
		counts.mu.Lock()
		counts.tCalls += r.tCalls
		counts.tChecks += r.tChecks
		counts.mu.Unlock()
		if r.nwrecked > 0 {
			t.Logf("round %d: %d further breaches on an export whose root a Scrub emptied were not reported", idx, r.nwrecked)
		}
		if r.nviol > 0 {
			failed++
			t.Errorf("round %d (seed %d, %d operations): %d distinct invariant violations (%d reported in detail above); rerun it alone: "+
				"go test -race -run TestModelConcurrentVolumes ./pkg/share -model.seed=%d -model.ops=%d", idx, rs, n, r.nviol,
				min(r.nviol, *modelReports), rs, n)
		}
	}
	ok, all := counts.createRatio()
	t.Logf("seed %d: %d logical operations, %d workspace calls, %d files written, %v (%v in batches of calls, %v in checks); calls by kind and outcome:\n%s",
		seed, total, counts.calls, counts.writes, time.Since(start).Round(time.Millisecond), counts.tCalls.Round(time.Millisecond),
		counts.tChecks.Round(time.Millisecond), counts.table())
	if len(counts.tags) > 0 {
		var tags []string
		for tag, n := range counts.tags {
			tags = append(tags, fmt.Sprintf("  %s: %d", tag, n))
		}
		sort.Strings(tags)
		t.Logf("distinct violations by invariant (seed %d, %d failing rounds):\n%s", seed, failed, strings.Join(tags, "\n"))
	}
	if counts.nnotes > 0 {
		t.Logf("%d idempotency notes (not failures: retries after OK that failed, identical concurrent Creates that both failed); first ones:\n  %s",
			counts.nnotes, strings.Join(counts.notes, "\n  "))
	}
	if all == 0 || ok*5 < all {
		t.Errorf("seed %d: only %d of %d Create calls returned OK (want at least 20%%): the test proves nothing if everything fails", seed, ok, all)
	}
}

type opKind string

const (
	kCreate  opKind = "Create"
	kDelete  opKind = "Delete"
	kScrub   opKind = "Scrub"
	kSScrub  opKind = "Scrub(static)"
	kSDelete opKind = "Delete(static)"
	kWrite   opKind = "write"
	kSnap    opKind = "CreateSnapshot"
	kDelSnap opKind = "DeleteSnapshot"
)

// mop is one logical operation of a batch.
type mop struct {
	kind    opKind
	x       *mvol    // volume operations, writes, snapshots (the source)
	st      *mstatic // static PV operations
	sn      *msnap   // snapshot operations
	sp      mspec    // the spec of the call (static delete: its onDelete)
	mutated bool     // sp differs from the live volume's
	srcHeld bool     // sp's content source is reserved for this operation: nothing else changes it meanwhile
	ws      []int    // concurrent identical calls on these workspaces
	tiny    time.Duration
	cancel  bool   // cancel after tiny instead of a deadline
	resume  opKind // after the tiny call, a normal call of this kind on the same workspace
	retry   int    // >= 0: repeat the call on this workspace after it returned OK (a lost reply)
	writes  int    // files a user writes into the volume afterwards, if it is alive
	nested  bool   // one of them in a new subdirectory
}

func (o *mop) path() string {
	if o.st != nil {
		return o.st.path()
	}
	return o.sp.path()
}

// mround is one round: a fresh export, two workspaces and the model. The model's fields are guarded by mu.
type mround struct {
	t        *testing.T
	idx      int
	seed     int64
	rng      *rand.Rand // the planner's (main goroutine only)
	dir      string
	export   string // local directory of nfs.example:/export
	outside  string
	sentinel string
	ws       [2]*Workspace
	fakes    [2]*mounttest.Fake
	counts   *modelCounts

	mu         sync.Mutex
	seq        int64
	batch      int
	vols       []*mvol
	byName     map[string]*mvol
	statics    []*mstatic
	snaps      []*msnap
	snapByName map[string]*msnap
	files      map[string]*rec // server path -> the file expected there
	moved      []*movedRec
	fences     map[string]int // server path -> workspace of an abandoned call on it
	staticDirs map[string]bool
	murky      map[string]bool // directories that may hold files the model does not know (a partial copy, a loose volume's content)
	claims     []dclaim        // at the last barrier
	log        []logEntry
	pending    []violation     // found while applying results
	mayVanish  map[string]bool // volumes a call of the running batch may delete: not "live" for the checks of other calls
	mayRemove  []*mop          // the batch's Deletes and Scrubs: they may move a directory while other calls use it

	tCalls, tChecks time.Duration
	seen            map[string]bool
	nviol           int
	wrecked         map[string]bool // export roots a Scrub emptied: later breaches there are its consequences
	nwrecked        int
}

func newModelRound(t *testing.T, base string, idx int, seed int64, counts *modelCounts) *mround {
	t.Helper()
	dir := filepath.Join(base, fmt.Sprintf("round%d", idx))
	r := &mround{t: t, idx: idx, seed: seed, rng: rand.New(rand.NewSource(seed)), dir: dir,
		export: filepath.Join(dir, "export"), outside: filepath.Join(dir, "outside"), counts: counts,
		byName: map[string]*mvol{}, snapByName: map[string]*msnap{}, files: map[string]*rec{}, fences: map[string]int{},
		staticDirs: map[string]bool{}, murky: map[string]bool{}, seen: map[string]bool{}, wrecked: map[string]bool{}}
	for _, d := range []string{filepath.Join(r.export, "inner"), filepath.Join(r.outside, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"keep", "sub/keep"} {
		if err := os.WriteFile(filepath.Join(r.outside, f), []byte("sentinel "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.sentinel = quietListing(r.outside)
	for i := range r.ws {
		r.fakes[i] = mounttest.New()
		r.fakes[i].AddExport(testServer+":"+modelShares[0], r.export)
		ws, err := New(Config{WorkDir: filepath.Join(dir, fmt.Sprintf("work%d", i)), IdleTimeout: time.Hour, FSTimeout: 5 * time.Second,
			TrashGrace: 24 * time.Hour, ReapInterval: time.Hour, Mounter: r.fakes[i]})
		if err != nil {
			t.Fatal(err)
		}
		r.ws[i] = ws
	}
	for k := range modelShares {
		for _, name := range modelNames[k] {
			x := &mvol{name: name, exp: k}
			r.vols = append(r.vols, x)
			r.byName[name] = x
		}
		for _, sub := range modelPools[k] {
			name := "static-" + strings.ReplaceAll(sub, "/", "-")
			if k == 1 {
				name += "-i"
			}
			r.statics = append(r.statics, &mstatic{exp: k, sub: sub, name: name})
		}
		for _, name := range modelSnapNames[k] {
			sn := &msnap{name: name, exp: k}
			r.snaps = append(r.snaps, sn)
			r.snapByName[name] = sn
		}
	}
	// Both workspaces mount both exports, and both exports get their metadata area, so the inner
	// export's root is visibly in use from the start.
	ctx := context.Background()
	for k := range modelShares {
		v := volume.Volume{Server: testServer, Share: modelShares[k], SubDir: "warm-up", Name: "pvc-warm-up", OnDelete: volume.OnDeleteDelete}
		for _, i := range []int{0, 1} {
			if _, err := r.ws[i].Create(ctx, v, CreateOptions{Mode: 0o777, UID: -1, GID: -1}); err != nil {
				t.Fatalf("warm-up Create on %s:%s (ws%d): %v", testServer, modelShares[k], i, err)
			}
		}
		for _, i := range []int{1, 0} {
			if err := r.ws[i].Delete(ctx, v); err != nil {
				t.Fatalf("warm-up Delete on %s:%s (ws%d): %v", testServer, modelShares[k], i, err)
			}
		}
	}
	return r
}

func (r *mround) close() {
	for i := range r.ws {
		r.fakes[i].ReleaseAll()
		r.ws[i].Close(context.Background())
	}
}

// local is the local path of a server path.
func (r *mround) local(sp string) string {
	return r.export + filepath.FromSlash(strings.TrimPrefix(sp, modelShares[0]))
}

// server is the server path of a local path inside the export.
func (r *mround) server(local string) string {
	return modelShares[0] + filepath.ToSlash(strings.TrimPrefix(local, r.export))
}

func (r *mround) nextSeq() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	return r.seq
}

func (r *mround) run(nops, batch int) {
	for done := 0; done < nops; {
		r.mu.Lock()
		r.batch++
		r.mu.Unlock()
		r.adminPhase()
		ops := r.plan(min(batch, nops-done))
		r.mu.Lock()
		r.mayVanish, r.mayRemove = map[string]bool{}, nil
		for _, o := range ops {
			if o.x != nil && (o.kind == kDelete || o.resume == kDelete) {
				r.mayVanish[o.x.name] = true
			}
			switch o.kind {
			case kDelete, kScrub, kSScrub, kSDelete:
				r.mayRemove = append(r.mayRemove, o)
			}
		}
		r.mu.Unlock()
		t0 := time.Now()
		r.runBatch(ops)
		t1 := time.Now()
		done += max(len(ops), 1)
		r.barrier(false)
		r.tCalls += t1.Sub(t0)
		r.tChecks += time.Since(t1)
	}
	time.Sleep(50 * time.Millisecond) // abandoned calls finish on a local disk
	r.barrier(true)
}

func (r *mround) runBatch(ops []*mop) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, o := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r.runOp(o)
		}()
	}
	close(start)
	wg.Wait()
}

// ---- planning (main goroutine) ----

func (r *mround) plan(n int) []*mop {
	type target struct {
		x  *mvol
		st *mstatic
		sn *msnap
	}
	var ts []target
	for _, x := range r.vols {
		ts = append(ts, target{x: x})
	}
	for _, st := range r.statics {
		ts = append(ts, target{st: st})
	}
	for _, sn := range r.snaps {
		ts = append(ts, target{sn: sn})
	}
	r.rng.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	res := map[string]bool{} // targets (and fenced paths) already used in this batch
	var ops []*mop
	for _, tg := range ts {
		if len(ops) >= n {
			break
		}
		var o *mop
		switch {
		case tg.x != nil:
			o = r.planVol(tg.x, res)
		case tg.st != nil:
			o = r.planStatic(tg.st, res)
		default:
			o = r.planSnapDelete(tg.sn, res)
		}
		if o != nil {
			ops = append(ops, o)
		}
	}
	return ops
}

func (r *mround) chance(p float64) bool { return r.rng.Float64() < p }

func (r *mround) planVol(x *mvol, res map[string]bool) *mop {
	if res["v:"+x.name] {
		return nil
	}
	o := &mop{x: x, retry: -1}
	roll := r.rng.Float64()
	switch x.state {
	case vAbsent:
		switch {
		case roll < 0.8 || !x.hasSpec:
			o.kind = kCreate
			o.sp, o.srcHeld = r.freshSpec(x, res), true
			if x.hasSpec && r.chance(0.25) && r.reserveSource(x.spec, res) {
				o.sp = x.spec // the same volume again, after it was deleted
			}
		case roll < 0.9:
			o.kind, o.sp = kDelete, x.spec // a late retry of a delete
		default:
			o.kind, o.sp = kScrub, x.spec
		}
	case vAlive:
		o.sp = x.spec
		switch {
		case roll < 0.26:
			o.kind = kWrite
		case roll < 0.38:
			o.kind = kCreate
		case roll < 0.48:
			o.kind, o.sp, o.mutated = kCreate, r.mutate(x.spec), true
		case roll < 0.66:
			o.kind = kDelete
		case roll < 0.80:
			o.kind = kScrub
		default:
			o.kind = kSnap
			var free []*msnap
			for _, sn := range r.snaps {
				if sn.exp == x.exp && !res["sn:"+sn.name] {
					free = append(free, sn)
				}
			}
			if len(free) == 0 {
				o.kind = kWrite
				break
			}
			o.sn = free[r.rng.Intn(len(free))]
			res["sn:"+o.sn.name] = true
		}
	case vUncertain:
		o.sp = x.spec
		switch {
		case roll < 0.5:
			o.kind = kCreate
		case roll < 0.85:
			o.kind = kDelete
		default:
			o.kind = kScrub
		}
	}
	if x.hasSpec {
		if _, f := r.fences[x.spec.path()]; f {
			if o.mutated {
				o.sp, o.mutated = x.spec, false
			}
			if o.kind == kWrite || o.kind == kSnap {
				o.kind = kCreate
			}
		}
	}
	if _, f := r.fences[o.sp.path()]; f && o.mutated {
		o.sp, o.mutated = x.spec, false
	}
	p := o.sp.path()
	if f, fenced := r.fences[p]; fenced {
		// Only a normal call on the workspace of the abandoned one: that workspace serializes them.
		if res["fence:"+p] {
			return nil
		}
		res["fence:"+p] = true
		o.ws = []int{f}
	} else {
		o.ws = []int{r.rng.Intn(2)}
		v := r.rng.Float64()
		copies := o.kind == kCreate && (o.sp.srcSnap != "" || o.sp.srcVol != nil)
		switch o.kind {
		case kCreate, kDelete, kScrub:
			switch {
			case v < 0.12:
				r.makeTiny(o)
			case v < 0.30 || copies && v < 0.55:
				// On both workspaces at once (two controllers); often for copies, whose long
				// window makes the race most likely.
				o.ws = []int{0, 1}
			case v < 0.45:
				o.retry = r.rng.Intn(2)
			}
		case kSnap:
			switch {
			case v < 0.08:
				r.makeTiny(o)
			case v < 0.2:
				o.retry = r.rng.Intn(2)
			}
		}
	}
	switch o.kind {
	case kWrite:
		o.writes = 1 + r.rng.Intn(3)
		if r.chance(0.15) {
			o.writes = 20 + r.rng.Intn(30) // enough entries for a scrub to be caught half way
		}
		o.nested = r.chance(0.2)
	case kCreate, kScrub, kDelete:
		if r.chance(0.7) {
			o.writes = 1 + r.rng.Intn(2)
			if r.chance(0.08) {
				o.writes = 20 + r.rng.Intn(20)
			}
			o.nested = r.chance(0.1)
		}
	}
	if !o.srcHeld && (o.sp.srcSnap != "" || o.sp.srcVol != nil) {
		o.srcHeld = r.reserveSource(o.sp, res)
	}
	res["v:"+x.name] = true
	return o
}

// reserveSource reserves the content source of sp for this batch (its content must not change while it
// is copied); false if another operation of the batch already uses it.
func (r *mround) reserveSource(sp mspec, res map[string]bool) bool {
	key := ""
	switch {
	case sp.srcSnap != "":
		key = "sn:" + sp.srcSnap
	case sp.srcVol != nil:
		key = "v:" + sp.srcVol.Name
	default:
		return true
	}
	if res[key] {
		return false
	}
	res[key] = true
	return true
}

func (r *mround) makeTiny(o *mop) {
	o.tiny = time.Duration(1 + r.rng.Int63n(int64(2*time.Millisecond)))
	if r.chance(0.3) {
		o.cancel, o.tiny = true, time.Duration(r.rng.Int63n(int64(300*time.Microsecond)))
	}
	if !r.chance(0.65) {
		return
	}
	switch o.kind {
	case kCreate:
		o.resume = kCreate
		if !o.mutated && r.chance(0.3) {
			o.resume = kDelete
		}
	case kDelete:
		o.resume = kDelete
		if r.chance(0.6) {
			o.resume = kCreate
		}
	case kScrub:
		o.resume = kScrub
		if r.chance(0.5) && o.x.hasSpec {
			o.resume = kCreate
		}
	case kSScrub:
		o.resume = kSScrub
	}
}

// freshSpec is what a new CreateVolume for x asks: usually a directory free in the model, sometimes
// any template result (nested, an export root, a directory the admin made), sometimes a content source.
func (r *mround) freshSpec(x *mvol, res map[string]bool) mspec {
	k := x.exp
	pool := modelPools[k]
	var free []string
	for _, sub := range pool {
		p := spath(k, sub)
		busy := rootProblem(k, p) != ""
		for _, y := range r.vols {
			if y.state != vAbsent && y.hasSpec && nestedPaths(y.spec.path(), p) {
				busy = true
			}
		}
		for _, c := range r.claims {
			if nestedPaths(c.path, p) {
				busy = true
			}
		}
		if _, f := r.fences[p]; f {
			busy = true
		}
		if !busy {
			free = append(free, sub)
		}
	}
	sub := pool[r.rng.Intn(len(pool))]
	if len(free) > 0 && r.chance(0.65) {
		sub = free[r.rng.Intn(len(free))]
	}
	sp := mspec{exp: k, subDir: sub, onDelete: modelOnDelete[r.rng.Intn(len(modelOnDelete))],
		mode: modelModes[r.rng.Intn(len(modelModes))], uid: -1}
	if r.chance(0.3) {
		sp.uid = os.Getuid()
	}
	if r.staticDirs[sp.path()] && r.chance(0.5) || r.chance(0.05) {
		sp.reuse = true
	}
	if !sp.reuse && r.chance(0.15) {
		var snaps []*msnap
		for _, sn := range r.snaps {
			if sn.exp == k && sn.state == sReady && !res["sn:"+sn.name] {
				snaps = append(snaps, sn)
			}
		}
		var srcs []*mvol
		for _, y := range r.vols {
			if _, f := r.fences[y.spec.path()]; y != x && y.exp == k && y.state == vAlive && !res["v:"+y.name] && !f {
				srcs = append(srcs, y)
			}
		}
		switch {
		case len(snaps) > 0 && (len(srcs) == 0 || r.chance(0.5)):
			sn := snaps[r.rng.Intn(len(snaps))]
			sp.srcSnap = sn.name
			res["sn:"+sn.name] = true
		case len(srcs) > 0:
			y := srcs[r.rng.Intn(len(srcs))]
			v := y.spec.vol(y.name)
			sp.srcVol = &v
			res["v:"+y.name] = true
		}
	}
	return sp
}

// mutate changes one field of the volume's identity: the Create must fail (ErrIncompatible).
func (r *mround) mutate(sp mspec) mspec {
	n := sp
	switch r.rng.Intn(5) {
	case 0:
		pool := modelPools[sp.exp]
		for n.subDir == sp.subDir {
			n.subDir = pool[r.rng.Intn(len(pool))]
		}
	case 1:
		for n.onDelete == sp.onDelete {
			n.onDelete = modelOnDelete[r.rng.Intn(len(modelOnDelete))]
		}
	case 2:
		for n.mode == sp.mode {
			n.mode = modelModes[r.rng.Intn(len(modelModes))]
		}
	case 3:
		if n.uid < 0 {
			n.uid = os.Getuid()
		} else {
			n.uid = -1
		}
	case 4:
		if n.srcSnap != "" || n.srcVol != nil {
			n.srcSnap, n.srcVol = "", nil
		} else {
			n.srcSnap = modelSnapNames[sp.exp][r.rng.Intn(len(modelSnapNames[sp.exp]))]
		}
	}
	return n
}

func (r *mround) planStatic(st *mstatic, res map[string]bool) *mop {
	key := "st:" + st.name
	if res[key] {
		return nil
	}
	p := st.path()
	f, fenced := r.fences[p]
	if !fenced && !r.chance(0.35) {
		return nil
	}
	o := &mop{st: st, retry: -1, kind: kSScrub}
	if fenced {
		if res["fence:"+p] {
			return nil
		}
		res["fence:"+p] = true
		o.ws = []int{f}
	} else {
		if r.chance(0.3) {
			o.kind, o.sp.onDelete = kSDelete, modelOnDelete[r.rng.Intn(len(modelOnDelete))]
		}
		o.ws = []int{r.rng.Intn(2)}
		switch v := r.rng.Float64(); {
		case v < 0.12:
			r.makeTiny(o)
		case v < 0.3:
			o.ws = []int{0, 1}
		case v < 0.4:
			o.retry = r.rng.Intn(2)
		}
	}
	res[key] = true
	return o
}

func (r *mround) planSnapDelete(sn *msnap, res map[string]bool) *mop {
	key := "sn:" + sn.name
	if res[key] || sn.state == sAbsent || !r.chance(0.3) {
		return nil
	}
	o := &mop{kind: kDelSnap, sn: sn, ws: []int{r.rng.Intn(2)}, retry: -1}
	switch v := r.rng.Float64(); {
	case v < 0.1:
		o.tiny = time.Duration(1 + r.rng.Int63n(int64(2*time.Millisecond)))
	case v < 0.25:
		o.retry = r.rng.Intn(2)
	}
	res[key] = true
	return o
}

// adminPhase: before the concurrent calls, the admin sometimes writes files into a directory no volume
// claims (a static PV's, a directory a class may adopt, a parent of volumes, the inner export's root).
func (r *mround) adminPhase() {
	if !r.chance(0.35) {
		return
	}
	r.mu.Lock()
	var cands []string
	for k := range modelPools {
		for _, sub := range modelPools[k] {
			if p := spath(k, sub); r.adminMay(p) {
				cands = append(cands, p)
			}
		}
	}
	r.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	p := cands[r.rng.Intn(len(cands))]
	n := 1 + r.rng.Intn(3)
	nested := r.chance(0.25)
	if err := os.MkdirAll(r.local(p), 0o755); err != nil {
		return
	}
	r.mu.Lock()
	r.staticDirs[p] = true
	r.mu.Unlock()
	r.writeFiles(p, n, nested, "static", nil, 0)
}

// adminMay: p is not in or at a volume (live, uncertain or claimed on disk) nor under an abandoned call.
func (r *mround) adminMay(p string) bool {
	for q := range r.fences {
		if under(p, q) {
			return false
		}
	}
	for _, x := range r.vols {
		if x.state != vAbsent && x.hasSpec && under(p, x.spec.path()) {
			return false
		}
	}
	for _, c := range r.claims {
		if under(p, c.path) {
			return false
		}
	}
	return true
}

// ---- execution (one goroutine per logical operation) ----

func (r *mround) runOp(o *mop) {
	switch o.kind {
	case kWrite:
		r.userWrite(o)
		return
	case kSnap, kDelSnap:
		errs := r.snapCall(o, o.ws, o.tiny, o.cancel, "")
		if o.retry >= 0 && errs[0] == nil {
			r.snapCall(o, []int{o.retry}, 0, false, " retry")
		}
		return
	}
	errs := r.volCall(o, o.kind, o.ws, o.tiny, o.cancel, "")
	anyOK := false
	for _, err := range errs {
		anyOK = anyOK || err == nil
	}
	switch {
	case o.tiny > 0 && o.resume != "":
		r.volCall(o, o.resume, o.ws[:1], 0, false, " resume")
	case o.retry >= 0 && anyOK:
		if rerrs := r.volCall(o, o.kind, []int{o.retry}, 0, false, " retry"); rerrs[0] != nil && !isTimeout(rerrs[0]) {
			r.counts.note(fmt.Sprintf("seed %d: %s returned OK, repeated on ws%d: %v", r.seed, r.callText(o, o.kind, false), o.retry, rerrs[0]))
		}
	}
	if o.writes > 0 && o.x != nil {
		r.userWrite(o)
	}
}

func (r *mround) callCtx(tiny time.Duration, cancel bool) (context.Context, context.CancelFunc) {
	switch {
	case cancel:
		ctx, stop := context.WithCancel(context.Background())
		tm := time.AfterFunc(tiny, stop)
		return ctx, func() { tm.Stop(); stop() }
	case tiny > 0:
		return context.WithTimeout(context.Background(), tiny)
	}
	return context.WithTimeout(context.Background(), time.Minute)
}

func (r *mround) callText(o *mop, kind opKind, tiny bool) string {
	var s string
	switch {
	case o.st != nil && kind == kSDelete:
		s = fmt.Sprintf("%s(%s %s %s)", kind, o.st.name, o.st.path(), o.sp.onDelete)
	case o.st != nil:
		s = fmt.Sprintf("%s(%s %s)", kind, o.st.name, o.st.path())
	case kind == kCreate:
		s = fmt.Sprintf("%s(%s %s)", kind, o.x.name, o.sp)
	case kind == kSnap:
		s = fmt.Sprintf("%s(%s of %s %s)", kind, o.sn.name, o.x.name, o.sp.path())
	case kind == kDelSnap:
		s = fmt.Sprintf("%s(%s on %s)", kind, o.sn.name, modelShares[o.sn.exp])
	default:
		s = fmt.Sprintf("%s(%s %s %s)", kind, o.x.name, o.sp.path(), o.sp.onDelete)
	}
	if tiny {
		if o.cancel {
			s += fmt.Sprintf(" cancelled after %v", o.tiny)
		} else {
			s += fmt.Sprintf(" deadline %v", o.tiny)
		}
	}
	return s
}

func outcome(errs []error) string {
	var parts []string
	for _, err := range errs {
		s := errClass(err)
		if err != nil {
			msg := err.Error()
			if len(msg) > 150 {
				msg = msg[:150] + "..."
			}
			s += " (" + msg + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

func (r *mround) volCall(o *mop, kind opKind, wss []int, tiny time.Duration, cancel bool, variant string) []error {
	s := r.nextSeq()
	errs := make([]error, len(wss))
	var wg sync.WaitGroup
	for i, w := range wss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, stop := r.callCtx(tiny, cancel)
			defer stop()
			errs[i] = r.do(ctx, o, kind, w)
		}()
	}
	wg.Wait()
	label := string(kind) + variant
	if len(wss) > 1 {
		label += " dup"
	}
	if tiny > 0 || cancel {
		label += " tiny"
	}
	for _, err := range errs {
		r.counts.add(label, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.applyVol(o, kind, wss, errs, tiny > 0 || cancel, s, r.seq, variant)
	return errs
}

func (r *mround) do(ctx context.Context, o *mop, kind opKind, w int) error {
	ws := r.ws[w]
	switch kind {
	case kCreate:
		_, err := ws.Create(ctx, o.sp.vol(o.x.name), o.sp.options())
		return err
	case kDelete:
		return ws.Delete(ctx, o.sp.vol(o.x.name))
	case kScrub:
		return ws.Scrub(ctx, o.sp.vol(o.x.name))
	case kSScrub:
		return ws.Scrub(ctx, o.st.vol(volume.OnDeleteRetain))
	case kSDelete:
		return ws.Delete(ctx, o.st.vol(o.sp.onDelete))
	}
	panic("unknown kind " + kind)
}

func (r *mround) logOp(o *mop, text string, paths ...string) {
	r.log = append(r.log, logEntry{batch: r.batch, paths: paths, text: text})
	if len(r.log) > 3000 {
		r.log = append([]logEntry(nil), r.log[1000:]...)
	}
	add := func(h *[]string) {
		*h = append(*h, text)
		if len(*h) > 40 {
			*h = append([]string(nil), (*h)[20:]...)
		}
	}
	switch {
	case o.st != nil:
		add(&o.st.hist)
	case o.x != nil:
		add(&o.x.hist)
	}
	if o.sn != nil {
		add(&o.sn.hist)
	}
}

// applyVol updates the model after one call, or concurrent identical calls, on a volume or static PV;
// s and e are seqs taken before the calls and after they all returned. Caller holds r.mu.
func (r *mround) applyVol(o *mop, kind opKind, wss []int, errs []error, tiny bool, s, e int64, variant string) {
	p := o.path()
	// acted: one of the calls failed in a way that is not a refusal before any change, so it may have
	// changed something (of concurrent identical calls, one may be refused while the other, say, left
	// a pending claim and returned ErrInProgress).
	ok, abandoned, acted, toWS := false, false, false, -1
	for i, err := range errs {
		switch {
		case err == nil:
			ok = true
		case isTimeout(err):
			abandoned, toWS = true, wss[i]
		}
		if err != nil && !refusal(err) {
			acted = true
		}
	}
	if f, fenced := r.fences[p]; fenced {
		for i, err := range errs {
			if wss[i] == f && !isTimeout(err) {
				delete(r.fences, p) // this call took the volume's lock after the abandoned one
			}
		}
	}
	if abandoned && !ok {
		r.fences[p] = toWS
	}
	desc := fmt.Sprintf("b%d ws%v %s%s -> %s", r.batch, wss, r.callText(o, kind, tiny), variant, outcome(errs))
	paths := []string{p}
	if o.sp.srcVol != nil && kind == kCreate {
		paths = append(paths, spath(o.sp.exp, o.sp.srcVol.SubDir))
	}
	r.logOp(o, desc, paths...)
	x := o.x
	switch kind {
	case kCreate:
		switch {
		case ok:
			r.createOK(x, o.sp, o.srcHeld, s, e)
		case (abandoned || acted) && x.state != vAlive:
			// Stopped half way (a pending claim may be left for a retry to complete).
			x.state, x.spec, x.hasSpec = vUncertain, o.sp, true
			r.uncertainUnder(p, x.name)
			if o.sp.srcSnap != "" || o.sp.srcVol != nil {
				r.murky[p] = true // part of a copy, which a retain delete leaves in place
			}
		}
		if !ok && len(errs) > 1 && !refusal(errs[0]) && !refusal(errs[1]) && !isTimeout(errs[0]) && !isTimeout(errs[1]) {
			r.counts.note(fmt.Sprintf("seed %d: identical concurrent Creates on both workspaces both failed: %s", r.seed, desc))
		}
	case kDelete:
		same := x.hasSpec && x.spec.path() == p
		switch {
		case ok && same && x.state == vAlive:
			switch o.sp.onDelete {
			case volume.OnDeleteRetain:
				for _, rc := range r.recsUnder(p) {
					if rc.kind == "vol" && rc.owner == x.name {
						rc.kind = "orphan"
					}
				}
				if x.loose {
					r.murky[p] = true // what the model does not know of it stays too
				}
			case volume.OnDeleteArchive:
				r.removeUnder(p, x.name, s, e, archiveArea(o.sp.exp), desc)
			default:
				r.removeUnder(p, x.name, s, e, trashArea(o.sp.exp), desc)
			}
			x.state = vAbsent
		case ok && same && x.state == vUncertain:
			r.uncertainUnder(p, x.name)
			if x.loose && o.sp.onDelete == volume.OnDeleteRetain {
				r.murky[p] = true
			}
			x.state = vAbsent
		case !ok && same && x.state != vAbsent && (abandoned || acted):
			x.state = vUncertain
			r.uncertainUnder(p, x.name)
		}
	case kScrub, kSScrub:
		self, k := "", 0
		if x != nil {
			self, k = x.name, x.exp
		} else {
			self, k = o.st.name, o.st.exp
		}
		switch {
		case ok:
			r.scrubOK(x, self, k, p, s, e, desc)
		case abandoned || acted:
			r.uncertainUnder(p, self)
		}
		if ok || abandoned || acted {
			// Scrub may claim the directory it emptied for the name it was given (a static PV's, or
			// a deleted volume's whose directory was retained): from then on Delete applies that
			// name's onDelete to it.
			if x != nil && x.state == vAbsent {
				x.state = vUncertain
			}
			if o.st != nil {
				o.st.scrubbed = true
			}
		}
	case kSDelete:
		// A static PV without a claim: whatever Delete returns, it must touch nothing. Once a Scrub
		// may have claimed its directory, Delete may apply its onDelete.
		if o.st.scrubbed && (ok || abandoned || acted) {
			r.uncertainUnder(p, o.st.name)
			if ok {
				o.st.scrubbed = false
			}
		}
	}
}

// createOK: a Create returned OK. Checks it against the state before the call and records the volume.
func (r *mround) createOK(x *mvol, sp mspec, srcHeld bool, s, e int64) {
	p := sp.path()
	if x.state == vAlive {
		if x.spec.identity() != sp.identity() {
			r.violate(violation{key: fmt.Sprintf("[create: incompatible arguments accepted] Create(%s, %s) returned OK, but volume %s exists as %s (want ErrIncompatible)",
				x.name, sp, x, x.spec.identity()), names: []string{x.name}, paths: []string{p, x.spec.path()}})
		}
		return
	}
	was := x.state
	bad := false
	for _, y := range r.vols {
		if y != x && r.stable(y, s) && nestedPaths(y.spec.path(), p) {
			r.violate(violation{key: fmt.Sprintf("[inv1 create: nested volumes] Create(%s, %s) returned OK although live volume %s is at %s",
				x.name, sp, y, y.spec.path()), names: []string{x.name, y.name}, paths: []string{p, y.spec.path()}})
			bad = true
		}
	}
	if why := rootProblem(sp.exp, p); why != "" {
		r.violate(violation{key: fmt.Sprintf("[inv2 create: export root] Create(%s, %s) returned OK: %s", x.name, sp, why),
			names: []string{x.name}, paths: []string{p}})
		bad = true
	}
	// A Delete or Scrub of another target at or above p in the same batch may have moved p's files
	// away before this call (then it made or adopted p afresh) or not: what p held is unknown.
	racing := false
	for _, o := range r.mayRemove {
		if o.x != x && under(p, o.path()) {
			racing = true
		}
	}
	if racing {
		for _, rc := range r.recsUnder(p) {
			if !r.heldByOtherLive(rc, x.name) || r.mayVanish[rc.owner] {
				rc.uncertain = true
			}
		}
	}
	if !sp.reuse && !racing {
		var there []string
		for _, rc := range r.recsUnder(p) {
			if rc.uncertain || rc.we >= s || rc.kind == "vol" && rc.owner == x.name || r.heldByOtherLive(rc, x.name) || r.mayVanish[rc.owner] {
				continue
			}
			there = append(there, rc.path)
		}
		if len(there) > 0 {
			sort.Strings(there)
			r.violate(violation{key: fmt.Sprintf("[create: took an existing directory] Create(%s, %s) without reuse returned OK on an existing directory holding %d files (%s), want ErrExists",
				x.name, sp, len(there), there[0]), names: []string{x.name}, paths: []string{p}})
			bad = true
		}
	}
	x.inc++
	x.spec, x.hasSpec, x.since, x.loose = sp, true, e, false
	if bad {
		x.state = vUncertain
		r.uncertainUnder(p, "")
		return
	}
	x.state = vAlive
	for q := range r.murky {
		// A murky directory at or inside p, or around p when p may have been adopted: p may hold
		// files the model does not know.
		if under(q, p) || sp.reuse && under(p, q) {
			x.loose = true
		}
	}
	for _, rc := range r.recsUnder(p) { // an adopted directory's files are the volume's now
		switch {
		case r.contested(rc, x.name, s):
			rc.uncertain = true
		case !r.heldByOtherLive(rc, x.name):
			rc.kind, rc.owner, rc.inc = "vol", x.name, x.inc
		}
	}
	// Without the source held, other calls of the batch may have changed it while it was copied.
	inexact := was == vUncertain || !srcHeld
	copied := func(rel string, content string, uncertain bool) {
		np := p + "/" + rel
		r.files[np] = &rec{path: np, content: content, kind: "vol", owner: x.name, inc: x.inc,
			uncertain: uncertain || inexact, ws: s, we: e, batch: r.batch}
	}
	switch {
	case sp.srcVol != nil:
		y := r.byName[sp.srcVol.Name]
		yp := spath(sp.exp, sp.srcVol.SubDir)
		live := y.state == vAlive && y.spec.path() == yp
		x.loose = x.loose || inexact || !live || y.loose
		if live {
			for _, rc := range r.recsUnder(yp) {
				copied(relUnder(rc.path, yp), rc.content, rc.uncertain)
			}
		}
	case sp.srcSnap != "":
		sn := r.snapByName[sp.srcSnap]
		x.loose = x.loose || inexact || sn.state != sReady || sn.loose
		if sn.state == sReady {
			for rel, f := range sn.content {
				copied(rel, f.content, f.uncertain)
			}
		}
	}
	if x.loose {
		// Files the model does not know stay in p until a Delete or Scrub moves them: a retain
		// Delete leaves them in place for the next volume that adopts p (or a directory around it).
		r.murky[p] = true
	}
}

// scrubOK: a Scrub of target self (a volume or a static PV) at p returned OK: p was emptied.
func (r *mround) scrubOK(x *mvol, self string, k int, p string, s, e int64, desc string) {
	for _, y := range r.vols {
		if y.name != self && r.stable(y, s) && under(y.spec.path(), p) {
			r.violate(violation{key: fmt.Sprintf("[scrub: emptied another volume] Scrub(%s at %s) returned OK although it holds live volume %s at %s",
				self, p, y, y.spec.path()), names: []string{y.name}, paths: []string{p, y.spec.path()}})
		}
	}
	if root := containsOtherRoot(k, p); root != "" {
		v := violation{key: fmt.Sprintf("[inv2 scrub: export root] Scrub(%s at %s) returned OK although %s is the root of export %s:%s (its metadata area, claims and volumes moved into %s's trash)",
			self, p, root, testServer, root, modelShares[k]), paths: []string{p, root}}
		for _, y := range r.vols {
			if modelShares[y.exp] == root || y.hasSpec && under(y.spec.path(), root) {
				v.names = append(v.names, y.name)
			}
		}
		r.violate(v)
	}
	if x != nil && x.state == vUncertain {
		r.uncertainUnder(p, self)
		return
	}
	r.removeUnder(p, self, s, e, trashArea(k), desc)
}

func (r *mround) violate(v violation) { r.pending = append(r.pending, v) }

// stable: y was alive before seq s and no call of the batch may delete it, so it was alive
// throughout a call that started at s.
func (r *mround) stable(y *mvol, s int64) bool {
	return y.state == vAlive && y.since < s && !r.mayVanish[y.name]
}

func (r *mround) recsUnder(p string) []*rec {
	var out []*rec
	for fp, rc := range r.files {
		if strings.HasPrefix(fp, p+"/") {
			out = append(out, rc)
		}
	}
	return out
}

// heldByOtherLive: rc is a file of a live volume other than self; no call on self may move it.
func (r *mround) heldByOtherLive(rc *rec, self string) bool {
	if rc.kind != "vol" || rc.owner == self {
		return false
	}
	y := r.byName[rc.owner]
	return y != nil && y.state == vAlive && y.inc == rc.inc
}

// contested: rc is a file of a live volume other than self, and whether a call on self that started
// at seq s ran before or after rc became that volume's, or before or after the volume is deleted, is
// unknown: a call of the batch may delete the volume, or it was created (rc adopted or copied into
// it) while the call on self ran. Files users wrote into it after it was created are not contested:
// no call on another target may touch them, whenever it started.
func (r *mround) contested(rc *rec, self string, s int64) bool {
	if !r.heldByOtherLive(rc, self) {
		return false
	}
	y := r.byName[rc.owner]
	return r.mayVanish[rc.owner] || y.since > s && rc.ws <= y.since
}

// uncertainUnder: a call on self at p may have moved anything below p, except the files of other
// live volumes (which no call on self may touch) unless the batch may delete them (then whether the
// call ran before or after that delete is unknown).
func (r *mround) uncertainUnder(p, self string) {
	for _, rc := range r.recsUnder(p) {
		if !r.heldByOtherLive(rc, self) || r.mayVanish[rc.owner] {
			rc.uncertain = true
		}
	}
}

// removeUnder: a Delete or Scrub of self at p succeeded; what was written below p before it started
// must be in area now, what was written while it ran may be anywhere.
func (r *mround) removeUnder(p, self string, s, e int64, area, desc string) {
	for q := range r.murky {
		if under(q, p) {
			delete(r.murky, q)
		}
	}
	for _, rc := range r.recsUnder(p) {
		if r.contested(rc, self, s) {
			rc.uncertain = true
			continue
		}
		if r.heldByOtherLive(rc, self) {
			continue // must not have moved: checked where it is
		}
		switch {
		case rc.uncertain:
			delete(r.files, rc.path)
		case rc.we < s:
			delete(r.files, rc.path)
			r.moved = append(r.moved, &movedRec{content: rc.content, rel: relUnder(rc.path, p), area: area,
				what: rc.String(), by: desc, batch: r.batch})
		case rc.ws < e:
			rc.uncertain = true
		}
	}
}

// userWrite: a user writes files into the live volume o.x through the export.
func (r *mround) userWrite(o *mop) {
	x := o.x
	r.mu.Lock()
	p, inc := x.spec.path(), x.inc
	_, fenced := r.fences[p]
	alive := x.state == vAlive && !fenced
	r.mu.Unlock()
	if !alive {
		return
	}
	r.writeFiles(p, o.writes, o.nested, "vol", x, inc)
}

// writeFiles writes n new files into the directory at server path p (one in a new subdirectory with
// nested) and records them. It never creates p itself.
func (r *mround) writeFiles(p string, n int, nested bool, kind string, x *mvol, inc int) {
	dir := r.local(p)
	sub := ""
	var names []string
	defer func() {
		if len(names) == 0 {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		text := fmt.Sprintf("b%d %s wrote %d files into %s: %s", r.batch, map[string]string{"vol": "user", "static": "admin"}[kind], len(names), p, names[0])
		if len(names) > 1 {
			text += ".." + names[len(names)-1]
		}
		o := &mop{x: x}
		r.logOp(o, text, p)
	}()
	for i := 0; i < n; i++ {
		ws := r.nextSeq()
		rel := fmt.Sprintf("f%d", ws)
		if nested && i == 0 {
			sub = fmt.Sprintf("d%d", ws)
			if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
				return
			}
		}
		if sub != "" && i%2 == 0 {
			rel = sub + "/" + rel
		}
		owner := "admin"
		if x != nil {
			owner = x.name
		}
		content := fmt.Sprintf("%s#%d:%s", owner, inc, rel)
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), []byte(content), 0o644); err != nil {
			return
		}
		r.mu.Lock()
		r.seq++
		rc := &rec{path: p + "/" + rel, content: content, kind: kind, inc: inc, ws: ws, we: r.seq, batch: r.batch}
		if x != nil {
			rc.owner = x.name
		}
		r.files[rc.path] = rc
		r.mu.Unlock()
		names = append(names, rel)
		r.counts.mu.Lock()
		r.counts.writes++
		r.counts.mu.Unlock()
	}
}

func (r *mround) snapCall(o *mop, wss []int, tiny time.Duration, cancel bool, variant string) []error {
	errs := make([]error, len(wss))
	for i, w := range wss {
		ctx, stop := r.callCtx(tiny, cancel)
		if o.kind == kSnap {
			_, errs[i] = r.ws[w].CreateSnapshot(ctx, o.sp.vol(o.x.name), o.sn.name)
		} else {
			errs[i] = r.ws[w].DeleteSnapshot(ctx, modelSnapshot(o.sn.exp, o.sn.name))
		}
		stop()
		label := string(o.kind) + variant
		if tiny > 0 || cancel {
			label += " tiny"
		}
		r.counts.add(label, errs[i])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	isTiny := tiny > 0 || cancel
	r.logOp(o, fmt.Sprintf("b%d ws%v %s%s -> %s", r.batch, wss, r.callText(o, o.kind, isTiny), variant, outcome(errs)), o.sp.path())
	sn, ok := o.sn, errs[0] == nil
	if o.kind == kDelSnap {
		if ok {
			sn.state, sn.content = sAbsent, nil
		} else {
			sn.state = sUnknown
		}
		return errs
	}
	srcID := o.sp.vol(o.x.name).ID()
	same := sn.state == sReady && sn.srcID == srcID
	switch {
	case same: // the existing snapshot, unchanged whatever this call returned
	case ok && sn.state == sReady:
		sn.state = sUnknown // accepted with another source: not a volume invariant, but its content is unknown
	case ok:
		prev := sn.state
		p := o.sp.path()
		sn.state, sn.srcID, sn.content = sReady, srcID, map[string]snapFile{}
		sn.loose = prev == sUnknown || o.x.loose || o.x.state != vAlive
		for _, rc := range r.recsUnder(p) {
			sn.content[relUnder(rc.path, p)] = snapFile{content: rc.content, uncertain: rc.uncertain || prev == sUnknown}
		}
	case errors.Is(errs[0], ErrIncompatible) || errors.Is(errs[0], ErrSourceNotFound):
		// Refused (another source, or no ready source) before anything was written: the snapshot
		// is as it was.
	default:
		sn.state = sUnknown // a failed attempt may leave an unfinished one
	}
	return errs
}

// ---- invariants (main goroutine, between batches) ----

func (r *mround) barrier(final bool) {
	r.mu.Lock()
	pend := r.pending
	r.pending = nil
	batch := r.batch
	r.mu.Unlock()
	for _, v := range pend {
		r.report(v)
	}
	checkMoved := final || batch%8 == 0
	vs, verified := r.check(final, checkMoved)
	r.mu.Lock()
	fresh := 0
	for _, v := range vs {
		if !r.seen[v.key] {
			fresh++
		}
	}
	r.mu.Unlock()
	if fresh > 0 {
		// Abandoned calls may still run: report only what is still broken a moment later.
		time.Sleep(100 * time.Millisecond)
		first := map[string]bool{}
		for _, v := range vs {
			first[v.key] = true
		}
		var vs2 []violation
		vs2, verified = r.check(final, checkMoved)
		vs = vs[:0]
		for _, v := range vs2 {
			if first[v.key] {
				vs = append(vs, v)
			}
		}
	}
	r.mu.Lock()
	done := map[*movedRec]bool{}
	for _, mv := range verified {
		done[mv] = true
	}
	kept := r.moved[:0]
	for _, mv := range r.moved {
		if !done[mv] {
			kept = append(kept, mv)
		}
	}
	r.moved = kept
	r.mu.Unlock()
	for _, v := range vs {
		r.report(v)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// walkVisible lists the regular files of the export outside metadata areas, and where the metadata
// areas are (server paths).
func (r *mround) walkVisible() (map[string]bool, []string) {
	files := map[string]bool{}
	var metas []string
	_ = filepath.WalkDir(r.export, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished under an abandoned call
		}
		if d.IsDir() && d.Name() == volume.MetaDir {
			metas = append(metas, r.server(p))
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			files[r.server(p)] = true
		}
		return nil
	})
	return files, metas
}

// index maps file names to the server paths of regular files below the given server paths.
func (r *mround) index(roots ...string) map[string][]string {
	idx := map[string][]string{}
	for _, root := range roots {
		_ = filepath.WalkDir(r.local(root), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				idx[d.Name()] = append(idx[d.Name()], r.server(p))
			}
			return nil
		})
	}
	return idx
}

func (r *mround) check(final, checkMoved bool) ([]violation, []*movedRec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []violation
	add := func(v violation) { out = append(out, v) }

	// 5. Nothing next to the export.
	if got := quietListing(r.outside); got != r.sentinel {
		add(violation{key: "[inv5 outside] the sentinel directory next to the export changed; now:\n" + got})
	}
	if got := strings.Join(dirNames(r.dir), " "); got != "export outside work0 work1" {
		add(violation{key: "[inv5 outside] the directory holding the export changed; entries: " + got})
	}

	// 1, 2. Claims on disk.
	var claims []dclaim
	for k := range modelShares {
		claims = append(claims, scanClaims(r.local(modelShares[k]), k)...)
	}
	r.claims = claims
	byPath := map[string][]dclaim{}
	byName := map[string][]dclaim{}
	for _, c := range claims {
		byPath[c.path] = append(byPath[c.path], c)
		byName[c.name] = append(byName[c.name], c)
	}
	paths := sortedKeys(byPath)
	for _, p := range paths {
		if cs := byPath[p]; len(cs) > 1 {
			v := violation{key: fmt.Sprintf("[inv1 one directory, several claims] %s is claimed %d times:", p, len(cs)), paths: []string{p}}
			for _, c := range cs {
				v.key += " " + c.String()
				v.names = append(v.names, c.name)
			}
			add(v)
		}
	}
	for _, n := range sortedKeys(byName) {
		if cs := byName[n]; len(cs) > 1 {
			v := violation{key: fmt.Sprintf("[inv1 one volume, several directories] volume %s claims %d directories:", n, len(cs)), names: []string{n}}
			for _, c := range cs {
				v.key += " " + c.String()
				v.paths = append(v.paths, c.path)
			}
			add(v)
		}
	}
	for i, p := range paths {
		for _, q := range paths[i+1:] {
			if nestedPaths(p, q) {
				a, b := byPath[p][0], byPath[q][0]
				add(violation{key: fmt.Sprintf("[inv1 nested claims] claimed volume directories nest: %s and %s", a, b),
					names: []string{a.name, b.name}, paths: []string{p, q}})
			}
		}
	}
	visible, metas := r.walkVisible()
	for _, c := range claims {
		if why := rootProblem(c.exp, c.path); why != "" {
			add(violation{key: fmt.Sprintf("[inv2 claim at an export root] %s: %s", c, why), names: []string{c.name}, paths: []string{c.path}})
			continue
		}
		for _, m := range metas {
			if under(m, c.path) || under(c.path, m) {
				add(violation{key: fmt.Sprintf("[inv2 claim around a metadata area] %s and the metadata area %s nest", c, m),
					names: []string{c.name}, paths: []string{c.path}})
			}
		}
	}

	// 3. Live volumes: claim, directory, exact files.
	for _, x := range r.vols {
		switch x.state {
		case vAbsent:
			for _, c := range byName[x.name] {
				add(violation{key: fmt.Sprintf("[stale claim] volume %s is absent (deleted, never created, or every Create of it was refused), yet %s",
					x.name, c), names: []string{x.name}, paths: []string{c.path}})
			}
		case vAlive:
			p := x.spec.path()
			mine := false
			var others []string
			for _, c := range byPath[p] {
				if c.name == x.name && c.exp == x.exp {
					mine = true
				} else {
					others = append(others, c.String())
				}
			}
			switch {
			case !mine && len(others) > 0:
				add(violation{key: fmt.Sprintf("[inv3 claim taken] live volume %s at %s: the claim there is now %s", x, p, strings.Join(others, ", ")),
					names: []string{x.name}, paths: []string{p}})
			case !mine:
				add(violation{key: fmt.Sprintf("[inv3 claim missing] live volume %s (%s): its claim is gone", x, x.spec), names: []string{x.name}, paths: []string{p}})
			}
			if fi, err := os.Lstat(r.local(p)); err != nil || !fi.IsDir() {
				add(violation{key: fmt.Sprintf("[inv3 directory missing] live volume %s: %s is not a directory (%v)", x, p, err),
					names: []string{x.name}, paths: []string{p}})
			}
		}
	}
	visList := sortedKeys(visible)
	for _, p := range visList {
		q := deepest(p, byPath)
		if q == "" {
			continue
		}
		if _, f := r.fences[q]; f {
			continue
		}
		for _, c := range byPath[q] {
			x := r.byName[c.name]
			if x == nil || x.state != vAlive || x.loose || x.exp != c.exp || x.spec.path() != q {
				continue
			}
			rc := r.files[p]
			if rc != nil && (rc.uncertain || rc.kind == "vol" && rc.owner == x.name && rc.inc == x.inc) {
				continue
			}
			what := "a file the model never wrote"
			if rc != nil {
				what = rc.String()
			}
			b, _ := os.ReadFile(r.local(p))
			add(violation{key: fmt.Sprintf("[inv3 foreign file] live volume %s (%s) holds %s, which is not its own: %s", x, q, p, what),
				info: fmt.Sprintf("content %q", b), names: []string{x.name}, paths: []string{p}})
		}
	}
	var lost []*rec
	for _, p := range sortedKeys(r.files) {
		rc := r.files[p]
		if rc.uncertain {
			continue
		}
		if !visible[p] {
			lost = append(lost, rc)
			continue
		}
		if final {
			if b, err := os.ReadFile(r.local(p)); err != nil || string(b) != rc.content {
				add(violation{key: fmt.Sprintf("[inv3 content changed] %s holds %q, want %q", rc, b, rc.content), paths: []string{p}})
			}
		}
	}
	if len(lost) > 0 {
		// One report per volume (or per kind of file without one): a bug usually loses a directory.
		idx := r.index(modelShares[0])
		groups := map[string][]*rec{}
		var order []string
		for _, rc := range lost {
			g := rc.kind + " " + rc.owner + "#" + fmt.Sprint(rc.inc)
			if groups[g] == nil {
				order = append(order, g)
			}
			groups[g] = append(groups[g], rc)
		}
		for _, g := range order {
			rcs := groups[g]
			rc := rcs[0]
			tag, what := "[static data lost]", "files the admin wrote into unclaimed directories"
			var names []string
			switch rc.kind {
			case "vol":
				tag, what = "[inv3 file lost]", fmt.Sprintf("files of live volume %s#%d (%s)", rc.owner, rc.inc, r.byName[rc.owner].spec.path())
				names = []string{rc.owner}
			case "orphan":
				tag, what = "[inv4 retained file lost]", fmt.Sprintf("files left in place by the retain delete of %s#%d", rc.owner, rc.inc)
			}
			v := violation{key: fmt.Sprintf("%s %s are gone, e.g. %s", tag, what, rc), names: names}
			v.info = fmt.Sprintf("%d files gone; where files of the first names are now:", len(rcs))
			for i, rc := range rcs {
				if i < 3 {
					v.info += fmt.Sprintf("\n    %s: %v", rc.path, idx[path.Base(rc.path)])
					v.paths = append(v.paths, rc.path)
				} else {
					v.quiet = append(v.quiet, rc.path)
				}
			}
			add(v)
		}
	}

	// 4. What successful deletes and scrubs moved is in the trash or archive.
	var verified []*movedRec
	if checkMoved && len(r.moved) > 0 {
		var areas []string
		for k := range modelShares {
			areas = append(areas, trashArea(k), archiveArea(k))
		}
		idx := r.index(areas...)
		var all map[string][]string
		groups := map[string][]*movedRec{}
		var order []string
		for _, mv := range r.moved {
			found := false
			for _, q := range idx[path.Base(mv.rel)] {
				// Anywhere in the area: a concurrent call may have moved part of the tree first.
				if under(q, mv.area) {
					if b, err := os.ReadFile(r.local(q)); err == nil && string(b) == mv.content {
						found = true
						break
					}
				}
			}
			if found {
				verified = append(verified, mv)
				continue
			}
			if groups[mv.by] == nil {
				order = append(order, mv.by)
			}
			groups[mv.by] = append(groups[mv.by], mv)
		}
		for _, by := range order {
			mvs := groups[by]
			if all == nil {
				all = r.index(modelShares[0])
			}
			v := violation{key: fmt.Sprintf("[inv4 not in trash/archive] %s returned OK, but what it moved is not in %s, e.g. %s",
				by, mvs[0].area, mvs[0].what)}
			v.info = fmt.Sprintf("%d files missing; where files of the first names are now:", len(mvs))
			for i, mv := range mvs {
				if i < 3 {
					v.info += fmt.Sprintf("\n    %s: %v", mv.rel, all[path.Base(mv.rel)])
				}
				v.dropped = append(v.dropped, mv)
			}
			add(v)
		}
	}
	return out, verified
}

// report records a violation once (by key), makes the model stop trusting what it involves, and prints
// the first ones of the round in detail.
func (r *mround) report(v violation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range v.names {
		if x := r.byName[n]; x != nil && x.state != vUncertain && x.hasSpec {
			x.state = vUncertain
			for _, rc := range r.files {
				if rc.kind == "vol" && rc.owner == n {
					rc.uncertain = true
				}
			}
		}
	}
	for _, p := range append(v.paths, v.quiet...) {
		if rc := r.files[p]; rc != nil {
			rc.uncertain = true
		}
		for _, rc := range r.recsUnder(p) {
			rc.uncertain = true
		}
	}
	gone := map[*movedRec]bool{}
	for _, mv := range v.dropped {
		gone[mv] = true
	}
	kept := r.moved[:0]
	for _, mv := range r.moved {
		drop := gone[mv]
		for _, p := range v.paths {
			drop = drop || under(mv.area, p)
		}
		if !drop {
			kept = append(kept, mv)
		}
	}
	r.moved = kept
	if r.seen[v.key] {
		return
	}
	if strings.HasPrefix(v.key, "[inv2 scrub: export root]") {
		r.wrecked[v.paths[1]] = true
	} else {
		for _, p := range v.paths {
			for root := range r.wrecked {
				if under(p, root) || len(v.dropped) > 0 && under(v.dropped[0].area, root) {
					r.seen[v.key] = true
					r.nwrecked++ // a consequence of the scrubbed export root, reported already
					return
				}
			}
		}
	}
	r.seen[v.key] = true
	r.nviol++
	r.counts.mu.Lock()
	r.counts.tags[tagOf(v.key)]++
	r.counts.mu.Unlock()
	if r.nviol > *modelReports {
		return
	}
	info := ""
	if v.info != "" {
		info = "  " + v.info + "\n"
	}
	r.t.Errorf("model violation (seed %d, round %d, batch %d):\n%s\n%s%s", r.seed, r.idx, r.batch, v.key, info, r.context(v))
}

// context is the history of the volumes a violation involves and the recent calls on its paths.
func (r *mround) context(v violation) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, n := range v.names {
		x := r.byName[n]
		if x == nil || seen[n] {
			continue
		}
		seen[n] = true
		fmt.Fprintf(&b, "  history of %s:\n", x.name)
		for _, h := range trimHist(x.hist, 10) {
			fmt.Fprintf(&b, "    %s\n", h)
		}
	}
	if len(v.paths) > 0 {
		var hits []string
		for _, le := range r.log {
			if le.batch < r.batch-6 {
				continue
			}
		match:
			for _, lp := range le.paths {
				for _, vp := range v.paths {
					if nestedPaths(lp, vp) {
						hits = append(hits, le.text)
						break match
					}
				}
			}
		}
		fmt.Fprintf(&b, "  recent calls on paths nested with %s:\n", strings.Join(v.paths, ", "))
		for _, h := range trimHist(hits, 16) {
			fmt.Fprintf(&b, "    %s\n", h)
		}
	}
	return b.String()
}
