//go:build e2e

package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/volume"
)

var (
	nestSeed    = flag.Int64("nest.seed", 0, "TestTwoControllersNeverNest: seed of the operation mix (0: from the clock)")
	nestOps     = flag.Int("nest.ops", 400, "TestTwoControllersNeverNest: operations to send")
	nestWorkers = flag.Int("nest.workers", 8, "TestTwoControllersNeverNest: goroutines sending them")
	nestDump    = flag.String("nest.dump", "", "TestTwoControllersNeverNest: directory to copy the whole operation history and both controllers' logs into when it fails (e.g. /host/nest)")
)

// hungServer is the guest's second address of its own NFS server; nfs-server-stop --hang drops every
// packet to it (test/vm/README.md).
const hungServer = "192.0.2.1"

// TestTwoControllersNeverNest protects the tree invariant across controllers: two `paddock
// --mode=controller` processes share export a, and many goroutines send them randomized CreateVolume
// calls whose subDir templates nest and overlap (a, a/b, a/b/c, team, team/x, templated paths that
// expand to the same directories, and the test's root itself), DeleteVolume, the same call sent to
// both controllers at once (a lost reply retried elsewhere), repeats, the same name with other
// parameters, late deletes of IDs whose directory another volume owns now, and calls with deadlines
// of a few milliseconds, retried as a CO would. Names use two server addresses of the one NFS server,
// so the controllers' calls also go through two NFS client caches. After each call, at barriers and
// at the end the server's own view is judged:
//
//   - no two claimed volume directories are ancestor and descendant, every claimed volume has its
//     pins below each ancestor, and no pin or pin directory is left dangling;
//   - every volume the test believes alive (CreateVolume OK, not deleted) has its claim and still its
//     original directory (same inode), holding exactly the files written to it; every other file
//     below the test's root is an error;
//   - every DeleteVolume that returned OK left no directory in place: the volume's directory (its
//     inode) is gone from its path and sits, with exactly its files, in the trash (onDelete=delete) or
//     the archive (onDelete=archive);
//   - a late DeleteVolume of an ID whose directory now belongs to another volume returns OK and
//     changes nothing of that volume;
//   - every answer is one a CO can act on: CreateVolume OK (its directory then exists and is
//     claimed by it), FailedPrecondition (the path nests with, or is, another volume's),
//     AlreadyExists (the same name with other parameters) or Aborted (retried); DeleteVolume OK or
//     Aborted; anything else (Internal) is a failure, except after a deadline of milliseconds.
//
// The seed fixes the operation mix, not the interleaving: -nest.seed=N repeats the mix.
func TestTwoControllersNeverNest(t *testing.T) {
	guardExport(t, exportA)
	seed := *nestSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000
	}
	t.Logf("seed %d (rerun the same operation mix with -nest.seed=%d)", seed, seed)
	// A long trash grace keeps the reaper off the trash, so each delete's directory can be found there.
	x := &nestRun{t: t, seed: seed, root: uniq("nest"), start: time.Now(), codes: map[string]int{}, ops: map[string]int{}}
	x.ctl[0] = startPaddock(t, "controller", "--trash-grace=1h")
	x.ctl[1] = startPaddock(t, "controller", "--trash-grace=1h")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("seed %d; last operations:\n%s", seed, x.historyTail(120))
		if d := *nestDump; d != "" {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Logf("dump: %v", err)
				return
			}
			_ = os.WriteFile(filepath.Join(d, "history.txt"), []byte(x.historyTail(1<<30)+"\n"), 0o644)
			for i, p := range x.ctl {
				if b, err := os.ReadFile(p.LogPath); err == nil {
					_ = os.WriteFile(filepath.Join(d, fmt.Sprintf("controller-c%d.log", i)), b, 0o644)
				}
			}
			t.Logf("history and controller logs copied to %s", d)
		}
	})
	x.makeVolumes(rand.New(rand.NewSource(seed)))

	ops, workers := *nestOps, *nestWorkers
	const phases = 4
	for ph := 0; ph < phases; ph++ {
		n := ops / phases
		if ph == phases-1 {
			n = ops - (phases-1)*(ops/phases)
		}
		x.phase(ph, n, workers)
		x.settle()
		x.checkServer(fmt.Sprintf("barrier %d", ph+1))
		// Go on after a violation (the next ones may differ), unless they pile up.
		if n := x.failures.Load(); n > 25 {
			t.Fatalf("seed %d: %d violations; stopping at barrier %d", seed, n, ph+1)
		}
	}
	// The end: delete every volume not known to be gone (a CO deletes a claim's volume whatever
	// CreateVolume last said), then nothing of the test may remain below its root.
	for i, v := range x.vols {
		v.mu.Lock()
		if v.state != nAbsent {
			x.deleteOnce(-1, v, i%2, longDeadline)
		}
		v.mu.Unlock()
	}
	x.settle()
	x.checkServer("end")
	var alive int
	for _, v := range x.vols {
		if v.state != nAbsent {
			alive++
		}
	}
	if alive > 0 {
		t.Errorf("%d volumes are not deleted at the end", alive)
	}
	if files := x.filesBelowRoot(); len(files) > 0 {
		t.Errorf("files left below %s after every volume was deleted: %v", x.root, files)
	}
	summary := func(m map[string]int) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out []string
		for _, k := range keys {
			out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
		}
		return strings.Join(out, " ")
	}
	cross, same, crossFailed := x.races()
	t.Logf("seed %d: %d operations (%d CSI calls) by %d goroutines on 2 controllers in %v; max volumes alive at once %d",
		seed, x.opsDone.Load(), x.calls.Load(), workers, time.Since(x.start).Round(time.Millisecond), x.maxAlive)
	t.Logf("operations: %s", summary(x.ops))
	t.Logf("CSI results: %s", summary(x.codes))
	t.Logf("CreateVolume calls of different names on equal or nested paths overlapping in time: %d across the two controllers (%d of them both refused), %d on one controller",
		cross, crossFailed, same)
	t.Logf("server checks: %d barriers, %d claims judged, most at once %d; stale deletes onto another volume's directory checked: %d",
		x.barriers, x.claimsSeen, x.maxClaims, x.staleOnOther.Load())
}

type nestState int

const (
	nAbsent   nestState = iota
	nAlive              // CreateVolume returned OK; not deleted since
	nCreating           // a CreateVolume failed without a final answer: retried on the same controller
	nDeleting           // a DeleteVolume did: retried on the same controller
)

func (s nestState) String() string {
	return [...]string{"absent", "alive", "creating?", "deleting?"}[s]
}

const longDeadline = 30 * time.Second

// nestVol is one CSI volume name. Its class is fixed, so every CreateVolume of it is the same call
// and its ID never changes. Every field but name, params, id, sub, od and siblings is guarded by mu,
// which a goroutine holds for the whole operation on the volume (the CO never sends two operations on
// one volume at once, except the deliberate duplicates below).
type nestVol struct {
	mu       sync.Mutex
	name     string
	params   map[string]string
	id       string
	sub      string // the subDir the class gives it, relative to the export
	od       volume.OnDelete
	siblings []*nestVol // other names whose class gives the same subDir

	state nestState
	ctl   int    // controller of the call that left the state unsure
	ino   uint64 // inode of its directory on the server while alive
	files map[string]string
	inc   int // incarnation, in file names
	nfile int
	log   []string
	// lastRetry is the last unexpected answer to a retry, reported once however often it repeats.
	lastRetry string
}

type nestRun struct {
	t     *testing.T
	seed  int64
	root  string // relative to the export
	start time.Time
	ctl   [2]*Paddock
	vols  []*nestVol

	opsDone, calls, staleOnOther, failures atomic.Int64

	mu       sync.Mutex // guards the fields below
	codes    map[string]int
	ops      map[string]int
	creates  []createRec
	history  []string
	maxAlive int
	alive    int

	barriers, claimsSeen, maxClaims int
}

// makeVolumes gives the names their classes: each shape twice or more, with other attributes drawn
// from the seed. The shapes nest and overlap on purpose; some expand a template to a path another
// shape names literally.
func (x *nestRun) makeVolumes(r *rand.Rand) {
	t := x.t
	shapes := []struct {
		tmpl string
		kv   []string
	}{
		{"a", nil},
		{"a/b", nil},
		{"a/b/c", nil},
		{"team", nil},
		{"team/x", nil},
		{"team/y", nil},
		{"a/${pvc.metadata.name}", []string{volume.CSIPVCName, "b"}},                                                         // a/b
		{"${pvc.metadata.namespace}/${pvc.metadata.name}", []string{volume.CSIPVCNamespace, "team", volume.CSIPVCName, "x"}}, // team/x
		{"team/${pv.metadata.name}", nil},                              // below team, one per name
		{"a/b/${pvc.metadata.name}", []string{volume.CSIPVCName, "c"}}, // a/b/c
		{"", nil}, // the root itself: above everything
	}
	const perShape = 2
	for i := 0; i < perShape*len(shapes)-1; i++ { // the root once
		sh := shapes[i%len(shapes)]
		tmpl := x.root
		if sh.tmpl != "" {
			tmpl += "/" + sh.tmpl
		}
		name := fmt.Sprintf("%s-v%02d", x.root, i)
		kv := append([]string{"subDir", tmpl, "reuseExisting", "true"}, sh.kv...)
		if r.Intn(3) == 0 {
			kv = append(kv, "server", hungServer) // the same server and export through another client
		}
		od := volume.OnDeleteDelete
		if r.Intn(4) == 0 {
			od = volume.OnDeleteArchive
			kv = append(kv, "onDelete", string(od))
		}
		if r.Intn(4) == 0 {
			kv = append(kv, "uid", "1000", "gid", "1000") // a claim that is pending until chown
		}
		params := class(exportA, kv...)
		p, err := volume.ParseParams(params)
		if err != nil {
			t.Fatalf("class of %s: %v", name, err)
		}
		vv, err := p.Volume(name, volume.TemplateVars{})
		if err != nil {
			t.Fatalf("volume %s: %v", name, err)
		}
		x.vols = append(x.vols, &nestVol{name: name, params: params, id: vv.ID(), sub: vv.SubDir, od: od})
	}
	for _, v := range x.vols {
		for _, w := range x.vols {
			if w != v && w.sub == v.sub {
				v.siblings = append(v.siblings, w)
			}
		}
		owner := "unchanged"
		if v.params["uid"] != "" {
			owner = v.params["uid"] + ":" + v.params["gid"]
		}
		x.t.Logf("volume %s: subDir %s (template %s), server %s, onDelete %s, owner %s", v.name, v.sub, v.params["subDir"], v.params["server"], v.od, owner)
	}
}

// phase runs n operations from workers goroutines.
func (x *nestRun) phase(ph, n, workers int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(x.seed*1000 + int64(ph*100+w)))
			for next.Add(1) <= int64(n) {
				v := x.vols[r.Intn(len(x.vols))]
				v.mu.Lock()
				x.step(w, r, v)
				v.mu.Unlock()
				x.opsDone.Add(1)
			}
		}(w)
	}
	wg.Wait()
}

// step does one operation on v, chosen by its state. v.mu is held.
func (x *nestRun) step(w int, r *rand.Rand, v *nestVol) {
	c := r.Intn(2)
	deadline := longDeadline
	if r.Intn(8) == 0 {
		deadline = time.Duration(1+r.Intn(40)) * time.Millisecond
	}
	sh := map[bool]string{true: "", false: "-short-deadline"}[deadline == longDeadline]
	switch v.state {
	case nCreating, nDeleting:
		x.op("retry-unsure")
		x.retry(w, v)
	case nAbsent:
		switch k := r.Intn(10); {
		case k < 6:
			if r.Intn(5) == 0 && deadline == longDeadline {
				x.op("create-on-both")
				x.createBoth(w, v)
			} else {
				x.op("create" + sh)
				x.createOnce(w, v, c, deadline)
			}
		case k < 8:
			x.op("late-delete")
			x.staleDelete(w, v, c)
		default:
			x.op("get-deleted")
			x.getVolume(w, v, c)
		}
	case nAlive:
		switch k := r.Intn(20); {
		case k < 7:
			x.op("write")
			x.write(w, r, v)
		case k < 13:
			if r.Intn(5) == 0 && deadline == longDeadline {
				x.op("delete-on-both")
				x.deleteBoth(w, v)
			} else {
				x.op("delete" + sh)
				x.deleteOnce(w, v, c, deadline)
			}
		case k < 16:
			x.op("repeat-create")
			x.createOnce(w, v, c, longDeadline) // a repeat: OK, same volume, nothing changes
		case k < 18:
			x.op("other-parameters")
			x.otherParams(w, r, v, c)
		default:
			x.op("get-live")
			x.getVolume(w, v, c)
		}
	}
}

// createRec is one CreateVolume call, for the count of races between nested paths.
type createRec struct {
	start, end time.Time
	c          int
	name, sub  string
	ok         bool
}

func (x *nestRun) op(kind string) {
	x.mu.Lock()
	x.ops[kind]++
	x.mu.Unlock()
}

// races counts CreateVolume calls of different names on equal or nested paths that overlapped in
// time, on different controllers and on the same one.
func (x *nestRun) races() (cross, same, crossBothFailed int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, a := range x.creates {
		for _, b := range x.creates[i+1:] {
			if a.name == b.name || !a.start.Before(b.end) || !b.start.Before(a.end) {
				continue
			}
			if a.sub != b.sub && !strings.HasPrefix(a.sub, b.sub+"/") && !strings.HasPrefix(b.sub, a.sub+"/") {
				continue
			}
			if a.c != b.c {
				cross++
				if !a.ok && !b.ok {
					crossBothFailed++
				}
			} else {
				same++
			}
		}
	}
	return cross, same, crossBothFailed
}

func (x *nestRun) note(w int, v *nestVol, format string, a ...any) {
	s := fmt.Sprintf("%7.3fs w%d %s [%s]: ", time.Since(x.start).Seconds(), w, v.name, v.state) + fmt.Sprintf(format, a...)
	v.log = append(v.log, s)
	x.mu.Lock()
	x.history = append(x.history, s)
	x.mu.Unlock()
}

func (x *nestRun) count(what string, err error) {
	x.calls.Add(1)
	x.mu.Lock()
	x.codes[what+":"+status.Code(err).String()]++
	x.mu.Unlock()
}

func (x *nestRun) historyTail(n int) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.history
	if len(h) > n {
		h = h[len(h)-n:]
	}
	return strings.Join(h, "\n")
}

// fail reports a violation with the volume's own history.
func (x *nestRun) fail(v *nestVol, format string, a ...any) {
	x.t.Helper()
	msg := fmt.Sprintf(format, a...)
	if v != nil {
		h := v.log
		if len(h) > 30 {
			h = h[len(h)-30:]
		}
		msg += fmt.Sprintf("\n  history of %s (subDir %s):\n    %s", v.name, v.sub, strings.Join(h, "\n    "))
	}
	x.failures.Add(1)
	x.t.Errorf("seed %d: %s", x.seed, msg)
}

func (x *nestRun) setState(v *nestVol, s nestState) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if v.state == nAlive && s != nAlive {
		x.alive--
	}
	if v.state != nAlive && s == nAlive {
		x.alive++
		if x.alive > x.maxAlive {
			x.maxAlive = x.alive
		}
	}
	if v.state != s {
		v.lastRetry = ""
	}
	v.state = s
}

func (x *nestRun) createReq(v *nestVol, params map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: v.name, Parameters: params,
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)}, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}}
}

// callCreate sends CreateVolume to controller c. With the long deadline it repeats the call on
// Aborted (another call on the volume is in progress: CSI's "retry later"), as a CO does, so the
// caller sees a final answer.
func (x *nestRun) callCreate(c int, v *nestVol, params map[string]string, d time.Duration) (*csi.Volume, error, time.Duration) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t0 := time.Now()
		resp, err := x.ctl[c].Controller.CreateVolume(ctx, x.createReq(v, params))
		cancel()
		x.count("create", err)
		x.mu.Lock()
		x.creates = append(x.creates, createRec{t0, time.Now(), c, v.name, v.sub, err == nil})
		x.mu.Unlock()
		if status.Code(err) != codes.Aborted || d < longDeadline || attempt == 200 {
			return resp.GetVolume(), err, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// callDelete sends DeleteVolume to controller c, repeating it on Aborted like callCreate.
func (x *nestRun) callDelete(c int, id string, d time.Duration) (error, time.Duration) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		_, err := x.ctl[c].Controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
		cancel()
		x.count("delete", err)
		if status.Code(err) != codes.Aborted || d < longDeadline || attempt == 200 {
			return err, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func short(err error) string {
	if err == nil {
		return "OK"
	}
	st, _ := status.FromError(err)
	m := st.Message()
	if len(m) > 400 {
		m = m[:400] + "..."
	}
	return st.Code().String() + " (" + m + ")"
}

// createOnce sends CreateVolume to controller c. A final answer (OK, or FailedPrecondition: the path
// nests with another volume) sets the state; anything else after a short deadline leaves it unsure,
// to be retried on the same controller, which holds the volume's lock until the abandoned work stops.
func (x *nestRun) createOnce(w int, v *nestVol, c int, d time.Duration) {
	was := v.state
	vol, err, took := x.callCreate(c, v, v.params, d)
	x.note(w, v, "CreateVolume on c%d, deadline %v: %s after %v", c, d, short(err), took.Round(time.Millisecond))
	switch code := status.Code(err); {
	case err == nil:
		x.created(v, vol, was == nAlive)
	case d < longDeadline:
		if was == nAlive {
			// A repeat on a live volume: whatever it did, the volume must still be there (checked
			// by the next operation or barrier); its state stays alive.
			return
		}
		v.ctl = c
		x.setState(v, nCreating)
	case code == codes.FailedPrecondition && was != nAlive:
		x.absentHere(v, "after a refused CreateVolume")
		x.setState(v, nAbsent)
	default:
		x.fail(v, "CreateVolume %s on c%d (state %s): %s, want OK%s", v.name, c, was, short(err),
			map[bool]string{true: "", false: " or FailedPrecondition"}[was == nAlive])
		if was != nAlive {
			v.ctl = c
			x.setState(v, nCreating)
		}
	}
}

// createBoth sends the same CreateVolume to both controllers at once: the CO's retry of a call whose
// reply was lost, landing on the other controller while the first still runs.
func (x *nestRun) createBoth(w int, v *nestVol) {
	var vols [2]*csi.Volume
	var errs [2]error
	var took [2]time.Duration
	var wg sync.WaitGroup
	for c := 0; c < 2; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			vols[c], errs[c], took[c] = x.callCreate(c, v, v.params, longDeadline)
		}(c)
	}
	wg.Wait()
	x.note(w, v, "CreateVolume on both: c0 %s after %v; c1 %s after %v", short(errs[0]), took[0].Round(time.Millisecond),
		short(errs[1]), took[1].Round(time.Millisecond))
	var ok *csi.Volume
	for c := 0; c < 2; c++ {
		switch status.Code(errs[c]) {
		case codes.OK:
			ok = vols[c]
		case codes.FailedPrecondition:
		default:
			x.fail(v, "CreateVolume %s on c%d (sent to both): %s, want OK or FailedPrecondition", v.name, c, short(errs[c]))
		}
	}
	if ok != nil {
		x.created(v, ok, false)
		return
	}
	x.absentHere(v, "after CreateVolume refused by both controllers")
	x.setState(v, nAbsent)
}

// created judges a CreateVolume that returned OK: the ID and subDir are the class's, the directory is
// on the server and claimed by this name; a volume that was alive keeps its directory and files, and
// a new one holds no file at all (a deleted volume's data never comes back).
func (x *nestRun) created(v *nestVol, vol *csi.Volume, repeat bool) {
	if vol.GetVolumeId() != v.id {
		x.fail(v, "CreateVolume %s returned ID %q, want %q", v.name, vol.GetVolumeId(), v.id)
	}
	if s := vol.GetVolumeContext()["subDir"]; s != v.sub {
		x.fail(v, "CreateVolume %s returned subDir %q, want %q", v.name, s, v.sub)
	}
	dir := filepath.Join(exportA, v.sub)
	rec := claimBytesOnServer(v.sub)
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		x.fail(v, "server: CreateVolume %s returned OK, but %s is not a directory: %v; its claim: %q", v.name, dir, err, rec)
		// What an operator would do with a volume that has no directory: delete it, so the rest of
		// the run judges the next calls, not this one's consequences.
		err, _ := x.callDelete(0, v.id, longDeadline)
		x.note(-1, v, "deleted it again after a CreateVolume OK without a directory: %s", short(err))
		if err != nil {
			x.fail(v, "DeleteVolume %s (a volume without its directory): %s, want OK", v.name, short(err))
		}
		x.setState(v, nAbsent)
		return
	}
	if c := parseRecord(rec); c.name != v.name {
		x.fail(v, "server: after CreateVolume %s OK, the claim of %s is %q, want this volume's", v.name, v.sub, rec)
	} else if c.adopted && !repeat && v.state != nAlive {
		x.op("(created by adopting an existing directory)")
	}
	if repeat || v.state == nAlive {
		if st.Ino != v.ino {
			x.fail(v, "server: a repeated CreateVolume %s replaced its directory: inode %d, was %d", v.name, st.Ino, v.ino)
		}
		x.checkFiles(v, "after a repeated CreateVolume")
		return
	}
	v.ino, v.files, v.nfile = st.Ino, map[string]string{}, 0
	v.inc++
	if got := regularFiles(dir); len(got) > 0 {
		x.fail(v, "server: new volume %s at %s already holds files it was never given: %v", v.name, v.sub, keysOf(got))
	}
	x.setState(v, nAlive)
}

// absentHere checks, after a final refusal, that no claim of this name sits at its path.
func (x *nestRun) absentHere(v *nestVol, when string) {
	if c, err := readClaimOnServer(v.sub); err == nil && c.name == v.name {
		x.fail(v, "server: %s, %s is still claimed by it: %+v", when, v.sub, c)
	}
}

// write adds a file to a live volume through the server's own path. Some land in subdirectories named
// like the nested templates' paths (a/b, team/x): tenant data that no CreateVolume may take.
func (x *nestRun) write(w int, r *rand.Rand, v *nestVol) {
	v.nfile++
	rel := fmt.Sprintf("%s-i%d-f%d", v.name, v.inc, v.nfile)
	if d := []string{"", "", "b", "x", "c", "b/c"}[r.Intn(6)]; d != "" {
		rel = d + "/" + rel
	}
	content := fmt.Sprintf("%s incarnation %d file %d seed %d\n", v.name, v.inc, v.nfile, x.seed)
	p := filepath.Join(exportA, v.sub, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		x.fail(v, "server: writing into live volume %s: %v", v.name, err)
		return
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		x.fail(v, "server: writing into live volume %s: %v", v.name, err)
		return
	}
	v.files[rel] = content
	x.note(w, v, "wrote %s", rel)
}

// deleteOnce sends DeleteVolume to controller c (w < 0: the final cleanup).
func (x *nestRun) deleteOnce(w int, v *nestVol, c int, d time.Duration) {
	err, took := x.callDelete(c, v.id, d)
	x.note(w, v, "DeleteVolume on c%d, deadline %v: %s after %v", c, d, short(err), took.Round(time.Millisecond))
	switch {
	case err == nil:
		x.deleted(v)
	case d < longDeadline:
		v.ctl = c
		x.setState(v, nDeleting)
	default:
		x.fail(v, "DeleteVolume %s on c%d: %s, want OK", v.name, c, short(err))
		v.ctl = c
		x.setState(v, nDeleting)
	}
}

// deleteBoth sends the same DeleteVolume to both controllers at once; both must say OK.
func (x *nestRun) deleteBoth(w int, v *nestVol) {
	var errs [2]error
	var took [2]time.Duration
	var wg sync.WaitGroup
	for c := 0; c < 2; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			errs[c], took[c] = x.callDelete(c, v.id, longDeadline)
		}(c)
	}
	wg.Wait()
	x.note(w, v, "DeleteVolume on both: c0 %s after %v; c1 %s after %v", short(errs[0]), took[0].Round(time.Millisecond),
		short(errs[1]), took[1].Round(time.Millisecond))
	for c := 0; c < 2; c++ {
		if errs[c] != nil {
			x.fail(v, "DeleteVolume %s on c%d (sent to both): %s, want OK", v.name, c, short(errs[c]))
		}
	}
	if errs[0] == nil || errs[1] == nil {
		x.deleted(v)
	} else {
		v.ctl = 0
		x.setState(v, nDeleting)
	}
}

// deleted judges a DeleteVolume that returned OK: the volume's directory (its inode) left its path,
// no file of it remains there, and it sits, with exactly its files, in the trash or the archive.
func (x *nestRun) deleted(v *nestVol) {
	dir := filepath.Join(exportA, v.sub)
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err == nil && st.Ino == v.ino && v.ino != 0 {
		x.fail(v, "server: DeleteVolume %s (onDelete %s) returned OK but its directory %s (inode %d) is still in place, holding %v",
			v.name, v.od, v.sub, v.ino, keysOf(regularFiles(dir)))
	}
	for rel := range v.files {
		if _, err := os.Lstat(filepath.Join(dir, rel)); err == nil {
			x.fail(v, "server: DeleteVolume %s returned OK but its file %s is still at %s", v.name, rel, v.sub)
		}
	}
	if v.ino != 0 {
		area := map[volume.OnDelete]string{volume.OnDeleteDelete: "trash", volume.OnDeleteArchive: "archive"}[v.od]
		where := findInode(v.ino)
		switch {
		case where == "":
			x.fail(v, "server: DeleteVolume %s (onDelete %s) returned OK but its directory (inode %d) is neither in the trash nor in the archive",
				v.name, v.od, v.ino)
		case !strings.HasPrefix(where, filepath.Join(exportA, ".paddock", area)+"/"):
			x.fail(v, "server: DeleteVolume %s (onDelete %s): its directory went to %s", v.name, v.od, where)
		default:
			if got := regularFiles(where); !sameFiles(got, v.files) {
				x.fail(v, "server: %s's directory in the %s (%s) holds %v, want exactly %v", v.name, area, where, keysOf(got), keysOf(v.files))
			}
		}
	}
	v.ino, v.files = 0, nil
	x.setState(v, nAbsent)
}

// staleDelete sends DeleteVolume of this (absent) volume's ID again: a late retry after the volume
// was deleted, when its path may belong to another volume now. It must return OK and touch nothing;
// when every other name of the same path can be locked at once, the owner's claim, directory and
// files are compared before and after.
func (x *nestRun) staleDelete(w int, v *nestVol, c int) {
	var locked []*nestVol
	all := true
	for _, s := range v.siblings {
		if s.mu.TryLock() {
			locked = append(locked, s)
		} else {
			all = false
		}
	}
	defer func() {
		for _, s := range locked {
			s.mu.Unlock()
		}
	}()
	var owner *nestVol
	var before string
	if all {
		for _, s := range v.siblings {
			if s.state == nAlive {
				owner = s
			}
		}
		if owner != nil {
			before = claimBytesOnServer(owner.sub)
		}
	}
	err, took := x.callDelete(c, v.id, longDeadline)
	desc := "nobody's"
	if owner != nil {
		desc = owner.name + "'s"
	}
	x.note(w, v, "late DeleteVolume on c%d (path now %s): %s after %v", c, desc, short(err), took.Round(time.Millisecond))
	if err != nil {
		x.fail(v, "late DeleteVolume %s on c%d: %s, want OK", v.name, c, short(err))
	}
	x.absentHere(v, "after a late DeleteVolume")
	if owner != nil {
		x.staleOnOther.Add(1)
		if after := claimBytesOnServer(owner.sub); after != before {
			x.fail(owner, "server: a late DeleteVolume of %s changed the claim of %s, which owns %s now: %q => %q", v.name, owner.name, owner.sub, before, after)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(exportA, owner.sub), &st); err != nil || st.Ino != owner.ino {
			x.fail(owner, "server: a late DeleteVolume of %s took the directory of %s (%s): %v", v.name, owner.name, owner.sub, err)
		} else {
			x.checkFiles(owner, "after a late DeleteVolume of "+v.name)
		}
	}
}

// otherParams sends CreateVolume of a live volume's name with another mode or onDelete: AlreadyExists,
// and nothing changes.
func (x *nestRun) otherParams(w int, r *rand.Rand, v *nestVol, c int) {
	params := map[string]string{}
	for k, val := range v.params {
		params[k] = val
	}
	what := "mode 0700"
	if r.Intn(2) == 0 {
		params["mode"] = "0700"
	} else if v.od == volume.OnDeleteArchive {
		delete(params, "onDelete")
		what = "onDelete delete"
	} else {
		params["onDelete"] = "archive"
		what = "onDelete archive"
	}
	before := claimBytesOnServer(v.sub)
	_, err, took := x.callCreate(c, v, params, longDeadline)
	x.note(w, v, "CreateVolume with %s on c%d: %s after %v", what, c, short(err), took.Round(time.Millisecond))
	if status.Code(err) != codes.AlreadyExists {
		x.fail(v, "CreateVolume %s with other parameters (%s) on c%d: %s, want AlreadyExists", v.name, what, c, short(err))
	}
	if after := claimBytesOnServer(v.sub); after != before {
		x.fail(v, "server: CreateVolume %s with other parameters changed its claim: %q => %q", v.name, before, after)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(exportA, v.sub), &st); err != nil || st.Ino != v.ino {
		x.fail(v, "server: CreateVolume %s with other parameters replaced its directory: %v", v.name, err)
	}
}

// getVolume: ControllerGetVolume is OK for a live volume and NotFound for a deleted one, even when
// its path belongs to another volume now.
func (x *nestRun) getVolume(w int, v *nestVol, c int) {
	ctx, cancel := context.WithTimeout(context.Background(), longDeadline)
	defer cancel()
	resp, err := x.ctl[c].Controller.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: v.id})
	x.count("get", err)
	x.note(w, v, "ControllerGetVolume on c%d: %s", c, short(err))
	switch v.state {
	case nAlive:
		if err != nil || resp.GetVolume().GetVolumeContext()["subDir"] != v.sub {
			x.fail(v, "ControllerGetVolume of live %s on c%d: %s %v", v.name, c, short(err), resp.GetVolume().GetVolumeContext())
		}
	case nAbsent:
		if status.Code(err) != codes.NotFound {
			x.fail(v, "ControllerGetVolume of deleted %s on c%d: %s, want NotFound", v.name, c, short(err))
		}
	}
}

// retry repeats an unsure call on the controller that got it, with a long deadline, as the CO does
// until it has a final answer. Aborted (the abandoned call still runs there) stays unsure.
func (x *nestRun) retry(w int, v *nestVol) {
	c := v.ctl
	if v.state == nCreating {
		vol, err, took := x.callCreate(c, v, v.params, longDeadline)
		x.note(w, v, "retried CreateVolume on c%d: %s after %v", c, short(err), took.Round(time.Millisecond))
		switch status.Code(err) {
		case codes.OK:
			x.created(v, vol, false)
		case codes.FailedPrecondition:
			x.absentHere(v, "after a retried CreateVolume was refused")
			x.setState(v, nAbsent)
		case codes.Aborted:
		default:
			if short(err) != v.lastRetry {
				x.fail(v, "retried CreateVolume %s on c%d: %s, want OK, FailedPrecondition or Aborted", v.name, c, short(err))
			}
			v.lastRetry = short(err)
		}
		return
	}
	err, took := x.callDelete(c, v.id, longDeadline)
	x.note(w, v, "retried DeleteVolume on c%d: %s after %v", c, short(err), took.Round(time.Millisecond))
	switch status.Code(err) {
	case codes.OK:
		x.deleted(v)
	case codes.Aborted:
	default:
		if short(err) != v.lastRetry {
			x.fail(v, "retried DeleteVolume %s on c%d: %s, want OK or Aborted", v.name, c, short(err))
		}
		v.lastRetry = short(err)
	}
}

// settle retries every unsure call until it has a final answer, so the server is at rest.
func (x *nestRun) settle() {
	const rounds = 10
	for round := 0; round < rounds; round++ {
		unsure := 0
		for _, v := range x.vols {
			v.mu.Lock()
			if v.state == nCreating || v.state == nDeleting {
				x.retry(-1, v)
				if v.state == nCreating || v.state == nDeleting {
					unsure++
				}
			}
			v.mu.Unlock()
		}
		if unsure == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, v := range x.vols {
		if v.state == nCreating || v.state == nDeleting {
			x.fail(v, "%s has no final answer after %d retries", v.name, rounds)
		}
	}
}

// ---------- the server's view ----------

// serverClaim is what the test reads of a claim on the server (pkg/share/claim.go's record).
type serverClaim struct {
	name, sub, state, token, export string
	adopted                         bool
}

func claimHash(sub string) string {
	sum := sha256.Sum256([]byte(sub))
	return hex.EncodeToString(sum[:])
}

func claimsPath() string { return filepath.Join(exportA, ".paddock", "claims") }

func parseRecord(b string) serverClaim {
	var c serverClaim
	for _, l := range strings.Split(b, "\n") {
		k, val, _ := strings.Cut(l, "=")
		switch k {
		case "name":
			c.name = val
		case "subdir":
			c.sub = val
		case "state":
			c.state = val
		case "token":
			c.token = val
		case "export":
			c.export = val
		case "adopted":
			c.adopted = val == "true"
		}
	}
	return c
}

// claimBytesOnServer is the raw claim at sub: its record, "pins" for a pin directory, "" for none.
func claimBytesOnServer(sub string) string {
	p := filepath.Join(claimsPath(), claimHash(sub))
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		return ""
	case fi.IsDir():
		return "pins"
	case fi.Mode()&fs.ModeSymlink != 0:
		s, _ := os.Readlink(p)
		return s
	default:
		b, _ := os.ReadFile(p)
		return string(b)
	}
}

func readClaimOnServer(sub string) (serverClaim, error) {
	b := claimBytesOnServer(sub)
	switch b {
	case "":
		return serverClaim{}, fs.ErrNotExist
	case "pins":
		return serverClaim{}, errors.New("a pin directory: volumes lie below it")
	}
	return parseRecord(b), nil
}

// checkServer judges the whole claims area and everything below the test's root, at rest.
func (x *nestRun) checkServer(when string) {
	t := x.t
	x.barriers++
	byName := map[string]*nestVol{}
	for _, v := range x.vols {
		byName[v.name] = v
	}
	es, err := os.ReadDir(claimsPath())
	if err != nil {
		t.Fatalf("%s: reading the claims area: %v", when, err)
	}
	claims := map[string]serverClaim{} // subDir -> claim
	type pin struct{ dir, file string }
	var pins []pin
	pinDirs := map[string]int{} // hash -> pins in it
	for _, e := range es {
		p := filepath.Join(claimsPath(), e.Name())
		if strings.HasSuffix(e.Name(), ".tmp") || strings.HasSuffix(e.Name(), ".op") {
			x.fail(nil, "%s: server: claims area holds a leftover %s at rest", when, e.Name())
			continue
		}
		fi, err := os.Lstat(p)
		if err != nil {
			x.fail(nil, "%s: server: %v", when, err)
			continue
		}
		if fi.IsDir() {
			ps, _ := os.ReadDir(p)
			pinDirs[e.Name()] = len(ps)
			for _, q := range ps {
				pins = append(pins, pin{e.Name(), q.Name()})
			}
			continue
		}
		var rec string
		if fi.Mode()&fs.ModeSymlink != 0 {
			rec, _ = os.Readlink(p)
		} else {
			b, _ := os.ReadFile(p)
			rec = string(b)
		}
		c := parseRecord(rec)
		if claimHash(c.sub) != e.Name() {
			x.fail(nil, "%s: server: claim %s records subdir %q, whose hash is %s", when, e.Name(), c.sub, claimHash(c.sub))
			continue
		}
		claims[c.sub] = c
	}
	x.claimsSeen += len(claims)
	if len(claims) > x.maxClaims {
		x.maxClaims = len(claims)
	}

	// 1. The tree invariant: no claimed directory is an ancestor or a descendant of another.
	subs := make([]string, 0, len(claims))
	for s := range claims {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	for i, a := range subs {
		for _, b := range subs[i+1:] {
			if strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/") {
				x.fail(byName[claims[a].name], "%s: server: TREE INVARIANT BROKEN: %q (%s) and %q (%s) are both claimed and nest",
					when, a, claims[a].name, b, claims[b].name)
				if vb := byName[claims[b].name]; vb != nil {
					x.fail(vb, "(the other volume of the violation above)")
				}
			}
		}
	}
	// 2. Pins: every claimed volume is pinned below each ancestor; every pin names a claimed volume
	// below its directory with that claim's token; no pin directory is empty.
	for _, p := range pins {
		target, _ := os.Readlink(filepath.Join(claimsPath(), p.dir, p.file))
		pc := parseRecord(target)
		c, ok := claims[pc.sub]
		hash, token, _ := strings.Cut(p.file, ".")
		under := false
		for _, q := range prefixesOf(pc.sub) {
			if claimHash(q) == p.dir {
				under = true
			}
		}
		switch {
		case !ok:
			x.fail(byName[pc.name], "%s: server: dangling pin %s/%s names %q (%s), which has no claim: it blocks a volume at its ancestor for ever",
				when, p.dir, p.file, pc.sub, pc.name)
		case hash != claimHash(pc.sub) || token != c.token:
			x.fail(byName[pc.name], "%s: server: pin %s/%s (of %q) does not match the claim's token %q", when, p.dir, p.file, pc.sub, c.token)
		case !under:
			x.fail(byName[pc.name], "%s: server: pin of %q sits in %s, which is not one of its ancestors", when, pc.sub, p.dir)
		}
	}
	for d, n := range pinDirs {
		if n == 0 {
			x.fail(nil, "%s: server: empty pin directory %s in the claims area: no volume can ever be created at its path", when, d)
		}
	}
	for _, s := range subs {
		c := claims[s]
		if c.export != "" || c.token == "" {
			continue
		}
		for _, q := range prefixesOf(s) {
			pp := filepath.Join(claimsPath(), claimHash(q), claimHash(s)+"."+c.token)
			if _, err := os.Lstat(pp); err != nil {
				x.fail(byName[c.name], "%s: server: %q (%s) is not pinned below its ancestor %q: %v", when, s, c.name, q, err)
			}
		}
	}
	// 3. Each claim below the root is a live volume's, ready, with its directory; each live volume
	// has its claim, its original directory and exactly its files.
	for _, s := range subs {
		c := claims[s]
		if s != x.root && !strings.HasPrefix(s, x.root+"/") {
			continue
		}
		v := byName[c.name]
		switch {
		case v == nil:
			x.fail(nil, "%s: server: claim of %q by %q, a name this test never used", when, s, c.name)
		case v.state != nAlive:
			x.fail(v, "%s: server: %q is claimed by %s, which the test believes %s", when, s, v.name, v.state)
		case c.state != "ready":
			x.fail(v, "%s: server: the claim of live %s is %q, not ready", when, v.name, c.state)
		}
	}
	for _, v := range x.vols {
		if v.state != nAlive {
			continue
		}
		c, ok := claims[v.sub]
		if !ok || c.name != v.name {
			x.fail(v, "%s: server: live volume %s has no claim at %q (found %+v)", when, v.name, v.sub, c)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(exportA, v.sub), &st); err != nil || st.Ino != v.ino {
			x.fail(v, "%s: server: live volume %s lost its directory %q (inode %d): %v (inode now %d)", when, v.name, v.sub, v.ino, err, st.Ino)
			continue
		}
		x.checkFiles(v, when)
	}
	// 4. Every file below the root is a live volume's and in its place.
	for rel := range x.filesBelowRoot() {
		var owner *nestVol
		for _, v := range x.vols {
			if v.state == nAlive && strings.HasPrefix(rel, v.sub+"/") {
				owner = v
			}
		}
		if owner == nil {
			x.fail(nil, "%s: server: file %s is in no live volume", when, rel)
			continue
		}
		if _, ok := owner.files[strings.TrimPrefix(rel, owner.sub+"/")]; !ok {
			x.fail(owner, "%s: server: file %s inside %s was never written to it", when, rel, owner.name)
		}
	}
	var alive []string
	for _, v := range x.vols {
		if v.state == nAlive {
			alive = append(alive, fmt.Sprintf("%s(%d files)", strings.TrimPrefix(v.sub, x.root), len(v.files)))
		}
	}
	t.Logf("%s after %d operations (%v): %d claims on the export, %d pins; live volumes: %v", when, x.opsDone.Load(),
		time.Since(x.start).Round(time.Millisecond), len(claims), len(pins), alive)
}

func (x *nestRun) checkFiles(v *nestVol, when string) {
	got := regularFiles(filepath.Join(exportA, v.sub))
	if !sameFiles(got, v.files) {
		var d []string
		for k, c := range got {
			if w, ok := v.files[k]; !ok {
				d = append(d, "+ "+k)
			} else if w != c {
				d = append(d, "~ "+k)
			}
		}
		for k := range v.files {
			if _, ok := got[k]; !ok {
				d = append(d, "- "+k)
			}
		}
		sort.Strings(d)
		x.fail(v, "%s: server: live volume %s at %s does not hold exactly its files: %v", when, v.name, v.sub, d)
	}
}

// filesBelowRoot lists every non-directory below the test's root, relative to the export.
func (x *nestRun) filesBelowRoot() map[string]bool {
	out := map[string]bool{}
	root := filepath.Join(exportA, x.root)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(exportA, p)
			out[rel] = true
		}
		return nil
	})
	return out
}

// regularFiles maps every regular file below dir (relative to it) to its content.
func regularFiles(dir string) map[string]string {
	out := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil || !d.Type().IsRegular() {
			out[rel] = fmt.Sprintf("<%v %v>", d.Type(), err)
			return nil
		}
		out[rel] = string(b)
		return nil
	})
	return out
}

func sameFiles(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keysOf(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// findInode finds the trash or archive entry that is directory inode ino, or "".
func findInode(ino uint64) string {
	for _, area := range []string{"trash", "archive"} {
		d := filepath.Join(exportA, ".paddock", area)
		for _, n := range names(d) {
			var st syscall.Stat_t
			if syscall.Lstat(filepath.Join(d, n), &st) == nil && st.Ino == ino {
				return filepath.Join(d, n)
			}
		}
	}
	return ""
}

// prefixesOf are the proper ancestors of sub ("a/b/c": "a", "a/b").
func prefixesOf(sub string) []string {
	var out []string
	for i := 0; i < len(sub); i++ {
		if sub[i] == '/' {
			out = append(out, sub[:i])
		}
	}
	return out
}
