package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Floor kinds: the raw filesystem and mount work a CSI NFS driver's RPCs are
// built from, measured without the driver.
const (
	FloorMkdirChmod       = "mkdir-chmod"
	FloorRename           = "rename"
	FloorMountMkdirUmount = "mount-mkdir-umount"
	FloorMountUmount      = "mount-umount"
	FloorMakeTree         = "make-tree"
	FloorRmRf             = "rm-rf"
)

// FloorKinds lists the floor kinds in the order the usage text shows them.
var FloorKinds = []string{FloorMkdirChmod, FloorRename, FloorMountMkdirUmount, FloorMountUmount, FloorMakeTree, FloorRmRf}

// FloorOptions configure a floor measurement.
type FloorOptions struct {
	Kind      string
	Dir       string // mkdir-chmod, rename, make-tree, rm-rf: where to work
	N         int    // iterations
	Workers   int
	Prefix    string // names of everything the floor creates start with it
	Source    string // mount kinds: server:/export
	TargetDir string // mount-umount: mount targets; mount-mkdir-umount: temporary mount points (default os.TempDir())
	MountType string // mount -t; "nfs" unless a test mounts something else
	MountOpts string // mount -o
	Files     int    // make-tree, rm-rf: files in the tree
	// BuildDir (rm-rf only, optional) is where the trees are built: the
	// server-local path of the directory Dir mounts (e.g. the export on the
	// NFS server), so building 2×Files files does not go through NFS and the
	// client has nothing cached when rm -rf starts. Removal always goes
	// through Dir.
	BuildDir string
	Timeout  time.Duration
	Keep     bool // leave what the floor created instead of cleaning up (untimed)
	Log      io.Writer
}

func (o *FloorOptions) config() Config {
	c := Config{
		Workers:  o.Workers,
		Prefix:   o.Prefix,
		Dir:      o.Dir,
		TimeoutS: o.Timeout.Seconds(),
	}
	// Record only what shaped this kind, so the JSON does not carry
	// defaults that played no part.
	switch o.Kind {
	case FloorMakeTree, FloorRmRf:
		c.Files = o.Files
		if o.Kind == FloorRmRf {
			c.BuildDir = o.BuildDir
		}
	default:
		c.N = o.N
	}
	if o.Kind == FloorMountMkdirUmount || o.Kind == FloorMountUmount {
		c.Source, c.TargetDir, c.MountType, c.MountOpts = o.Source, o.TargetDir, o.MountType, o.MountOpts
	}
	return c
}

func (o *FloorOptions) validate() error {
	if o.Prefix == "" || strings.ContainsAny(o.Prefix, "/\x00") {
		return fmt.Errorf("-prefix %q: must be non-empty without '/' or NUL", o.Prefix)
	}
	needDir := func() error {
		if o.Dir == "" {
			return fmt.Errorf("floor %s needs -dir", o.Kind)
		}
		return nil
	}
	needN := func() error {
		if o.N < 1 {
			return fmt.Errorf("floor %s needs -n >= 1", o.Kind)
		}
		return nil
	}
	needSource := func() error {
		if o.Source == "" {
			return fmt.Errorf("floor %s needs -source server:/export", o.Kind)
		}
		return nil
	}
	needFiles := func() error {
		if o.Files < 1 {
			return fmt.Errorf("floor %s needs -files >= 1", o.Kind)
		}
		return nil
	}
	switch o.Kind {
	case FloorMkdirChmod, FloorRename:
		return errors.Join(needDir(), needN())
	case FloorMountMkdirUmount:
		return errors.Join(needSource(), needN())
	case FloorMountUmount:
		var td error
		if o.TargetDir == "" {
			td = fmt.Errorf("floor %s needs -target-dir", o.Kind)
		}
		return errors.Join(needSource(), needN(), td)
	case FloorMakeTree, FloorRmRf:
		return errors.Join(needDir(), needFiles())
	}
	return fmt.Errorf("unknown floor kind %q (want one of %s)", o.Kind, strings.Join(FloorKinds, ", "))
}

type floorRun struct {
	o   *FloorOptions
	rep *Report
	log io.Writer
}

func (f *floorRun) warnf(format string, args ...any) {
	fmt.Fprintf(f.log, "csiload: warning: "+format+"\n", args...)
}

// RunFloor runs one floor measurement. As with RunCSI, failed ops are
// counted in the report; an error means the measurement could not be set up.
func RunFloor(ctx context.Context, o FloorOptions) (*Report, error) {
	if o.MountType == "" {
		o.MountType = "nfs"
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	f := &floorRun{o: &o, rep: newReport("floor", o.Kind, o.config()), log: o.Log}
	if f.log == nil {
		f.log = io.Discard
	}
	start := time.Now()
	var err error
	switch o.Kind {
	case FloorMkdirChmod:
		err = f.mkdirChmod(ctx)
	case FloorRename:
		err = f.rename(ctx)
	case FloorMountMkdirUmount:
		err = f.mountMkdirUmount(ctx)
	case FloorMountUmount:
		err = f.mountUmount(ctx)
	case FloorMakeTree:
		err = f.makeTree(ctx)
	case FloorRmRf:
		err = f.rmRf(ctx)
	}
	f.rep.WallS = time.Since(start).Seconds()
	return f.rep, err
}

func (f *floorRun) name(i int) string { return fmt.Sprintf("%s-%d", f.o.Prefix, i) }

// removeDirs removes the (empty) directories a floor made. os.Remove, never
// RemoveAll: the floors run on real exports and must not delete anything
// they did not create.
func (f *floorRun) removeDirs(paths []string) {
	if f.o.Keep {
		return
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.warnf("leaving %s: %v", p, err)
		}
	}
}

// mkdirChmod is the controller's CreateVolume on an already-mounted export:
// mkdir, then chmod because mkdir's mode is cut by the umask.
func (f *floorRun) mkdirChmod(ctx context.Context) error {
	paths := make([]string, f.o.N)
	for i := range paths {
		paths[i] = filepath.Join(f.o.Dir, f.name(i))
	}
	st := RunOps(ctx, "mkdir+chmod", f.o.N, f.o.Workers, func(ctx context.Context, i int) error {
		if err := os.Mkdir(paths[i], 0o755); err != nil {
			return err
		}
		return os.Chmod(paths[i], 0o777)
	})
	f.rep.Ops = append(f.rep.Ops, st)
	f.removeDirs(paths)
	return nil
}

// rename is DeleteVolume's move into the export's trash.
func (f *floorRun) rename(ctx context.Context) error {
	trash := filepath.Join(f.o.Dir, ".trash-"+f.o.Prefix)
	if err := os.Mkdir(trash, 0o700); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	src := make([]string, f.o.N)
	dst := make([]string, f.o.N)
	for i := range src {
		src[i] = filepath.Join(f.o.Dir, f.name(i))
		dst[i] = filepath.Join(trash, f.name(i))
		if err := os.Mkdir(src[i], 0o755); err != nil {
			f.removeDirs(append(src[:i], trash))
			return fmt.Errorf("rename setup: %w", err)
		}
	}
	st := RunOps(ctx, "rename", f.o.N, f.o.Workers, func(ctx context.Context, i int) error {
		return os.Rename(src[i], dst[i])
	})
	f.rep.Ops = append(f.rep.Ops, st)
	f.removeDirs(append(append(dst, src...), trash))
	return nil
}

// run execs a command with the timeout and folds its output into the error,
// because mount's reason for failing is only in its output.
func (f *floorRun) run(ctx context.Context, name string, args ...string) error {
	if f.o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.o.Timeout)
		defer cancel()
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if msg == "" {
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return nil
}

func (f *floorRun) mount(ctx context.Context, target string) error {
	args := []string{"-t", f.o.MountType}
	if f.o.MountOpts != "" {
		args = append(args, "-o", f.o.MountOpts)
	}
	return f.run(ctx, "mount", append(args, f.o.Source, target)...)
}

func (f *floorRun) umount(ctx context.Context, target string) error {
	return f.run(ctx, "umount", target)
}

// makeMountpoints creates n empty directories under base (untimed).
func (f *floorRun) makeMountpoints(base, tag string, n int) ([]string, error) {
	pts := make([]string, n)
	for i := range pts {
		pts[i] = filepath.Join(base, fmt.Sprintf("%s-%s-%d", f.o.Prefix, tag, i))
		if err := os.MkdirAll(pts[i], 0o750); err != nil {
			f.removeMountpoints(pts[:i])
			return nil, err
		}
	}
	return pts, nil
}

// removeMountpoints always runs, -keep or not: empty mount points are
// scaffolding, and os.Remove cannot take a mounted one with it.
func (f *floorRun) removeMountpoints(pts []string) {
	for _, p := range pts {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.warnf("leaving %s: %v", p, err)
		}
	}
}

// mountMkdirUmount is what a driver that mounts the export per call pays for
// every CreateVolume.
func (f *floorRun) mountMkdirUmount(ctx context.Context) error {
	base := f.o.TargetDir
	if base == "" {
		base = os.TempDir()
	}
	pts, err := f.makeMountpoints(base, "mnt", f.o.N)
	if err != nil {
		return fmt.Errorf("%s setup: %w", f.o.Kind, err)
	}
	defer f.removeMountpoints(pts)

	mnt, mk, um, total := NewRecorder("mount"), NewRecorder("mkdir"), NewRecorder("umount"), NewRecorder("mount+mkdir+umount")
	made := make([]bool, f.o.N)
	wall := Parallel(ctx, f.o.N, f.o.Workers, func(ctx context.Context, i int) {
		_ = total.Time(func() error {
			if err := mnt.Time(func() error { return f.mount(ctx, pts[i]) }); err != nil {
				return err
			}
			mkErr := mk.Time(func() error { return os.Mkdir(filepath.Join(pts[i], f.name(i)), 0o755) })
			made[i] = mkErr == nil
			if err := um.Time(func() error { return f.umount(ctx, pts[i]) }); err != nil {
				return err
			}
			return mkErr
		})
	})
	for _, r := range []*Recorder{mnt, mk, um, total} {
		r.SetWall(wall)
		f.rep.Ops = append(f.rep.Ops, r.Stats())
	}

	// Remove what the iterations made on the export, through one more
	// (untimed) mount.
	var created []string
	for i, ok := range made {
		if ok {
			created = append(created, f.name(i))
		}
	}
	if f.o.Keep || len(created) == 0 {
		return nil
	}
	if err := f.mount(ctx, pts[0]); err != nil {
		f.warnf("cleanup mount: %v; leaving %d directories on %s", err, len(created), f.o.Source)
		return nil
	}
	for _, c := range created {
		if err := os.Remove(filepath.Join(pts[0], c)); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.warnf("leaving %s on %s: %v", c, f.o.Source, err)
		}
	}
	if err := f.umount(ctx, pts[0]); err != nil {
		f.warnf("cleanup umount: %v", err)
	}
	return nil
}

// mountUmount is the floor of NodePublishVolume/NodeUnpublishVolume: mount
// the volume's subdirectory to N targets, then unmount them all.
func (f *floorRun) mountUmount(ctx context.Context) error {
	pts, err := f.makeMountpoints(f.o.TargetDir, "tgt", f.o.N)
	if err != nil {
		return fmt.Errorf("%s setup: %w", f.o.Kind, err)
	}
	defer f.removeMountpoints(pts)
	mounted := make([]bool, f.o.N)
	st := RunOps(ctx, "mount", f.o.N, f.o.Workers, func(ctx context.Context, i int) error {
		err := f.mount(ctx, pts[i])
		mounted[i] = err == nil
		return err
	})
	f.rep.Ops = append(f.rep.Ops, st)
	var ok []string
	for i, m := range mounted {
		if m {
			ok = append(ok, pts[i])
		}
	}
	st = RunOps(ctx, "umount", len(ok), f.o.Workers, func(ctx context.Context, i int) error {
		return f.umount(ctx, ok[i])
	})
	f.rep.Ops = append(f.rep.Ops, st)
	return nil
}

// TreeFanout is how many files make-tree puts in one directory, and how many
// subdirectories one directory has at most.
const TreeFanout = 100

// treeLayout returns the leaf directories (relative, e.g. "d03" or
// "d01/d17") of a tree holding files files, TreeFanout per leaf, and the
// total number of directories including intermediate ones.
func treeLayout(files int) (leaves []string, dirs int) {
	nLeaves := (files + TreeFanout - 1) / TreeFanout
	depth := 1
	for c := TreeFanout; c < nLeaves; c *= TreeFanout {
		depth++
	}
	all := map[string]bool{}
	leaves = make([]string, nLeaves)
	for j := range leaves {
		parts := make([]string, depth)
		v := j
		for d := depth - 1; d >= 0; d-- {
			parts[d] = fmt.Sprintf("d%02d", v%TreeFanout)
			v /= TreeFanout
		}
		for d := 1; d <= depth; d++ {
			all[filepath.Join(parts[:d]...)] = true
		}
		leaves[j] = filepath.Join(parts...)
	}
	return leaves, len(all)
}

// treeFile is the small payload of every file: big enough to be a real
// write, small enough that the numbers measure metadata.
var treeFile = bytes.Repeat([]byte("paddock\n"), 16)

// buildTree creates root (which may exist) holding files files. It returns
// the stats of the "mkdir" and "create" phases and the item count (files +
// directories made).
func (f *floorRun) buildTree(ctx context.Context, root string, files int) (mkdir, create OpStats, items int, err error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return mkdir, create, 0, err
	}
	leaves, dirs := treeLayout(files)
	// MkdirAll per leaf: concurrent MkdirAll of a shared parent is safe (it
	// tolerates EEXIST), so the leaves can be made in parallel.
	mkdir = RunOps(ctx, "mkdir", len(leaves), f.o.Workers, func(ctx context.Context, j int) error {
		return os.MkdirAll(filepath.Join(root, leaves[j]), 0o755)
	})
	create = RunOps(ctx, "create", files, f.o.Workers, func(ctx context.Context, i int) error {
		p := filepath.Join(root, leaves[i/TreeFanout], fmt.Sprintf("f%02d", i%TreeFanout))
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		_, werr := fh.Write(treeFile)
		return errors.Join(werr, fh.Close())
	})
	return mkdir, create, files + dirs, nil
}

// makeTree builds a tree of small files in -dir (a setup helper for scrub,
// recycle and rm-rf measurements, timed as well).
func (f *floorRun) makeTree(ctx context.Context) error {
	start := time.Now()
	mkdir, create, items, err := f.buildTree(ctx, f.o.Dir, f.o.Files)
	if err != nil {
		return fmt.Errorf("make-tree: %w", err)
	}
	whole := NewRecorder("make-tree")
	var werr error
	if mkdir.Errors+create.Errors > 0 {
		werr = fmt.Errorf("%d mkdir and %d create errors", mkdir.Errors, create.Errors)
	}
	whole.Observe(time.Since(start), werr)
	whole.SetWall(time.Since(start))
	whole.SetItems(items)
	f.rep.Ops = append(f.rep.Ops, mkdir, create, whole.Stats())
	return nil
}

// waitVisible makes sure a tree built through BuildDir is seen through Dir
// before it is timed, or the removal would time nothing. Opening the parent
// makes an NFS client revalidate it (close-to-open); the poll covers the
// attribute cache of clients that do not.
func (f *floorRun) waitVisible(ctx context.Context, t string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if d, err := os.Open(filepath.Dir(t)); err == nil {
			d.Close()
		}
		_, err := os.Lstat(filepath.Join(t, "d00"))
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not visible as %s: %w", t, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rmRf times removing a tree both ways a driver might: os.RemoveAll in
// process and exec'ing rm -rf. It builds the two identical trees itself
// (untimed) under -dir and only ever removes those, so it can be pointed at
// a real export without risk to anything else there.
func (f *floorRun) rmRf(ctx context.Context) error {
	goTree := filepath.Join(f.o.Dir, f.o.Prefix+"-removeall")
	rmTree := filepath.Join(f.o.Dir, f.o.Prefix+"-rmrf")
	build := func(t string) string { return t }
	if f.o.BuildDir != "" {
		build = func(t string) string { return filepath.Join(f.o.BuildDir, filepath.Base(t)) }
	}
	for _, t := range []string{goTree, rmTree} {
		// Only the build path is checked: a lookup through an NFS Dir would
		// leave a negative dentry that hides the tree built beside it.
		if _, err := os.Lstat(build(t)); err == nil {
			return fmt.Errorf("rm-rf: %s exists; pick another -prefix", build(t))
		}
	}
	var items int
	for _, t := range []string{goTree, rmTree} {
		mk, cr, n, err := f.buildTree(ctx, build(t), f.o.Files)
		if err == nil && mk.Errors+cr.Errors > 0 {
			err = fmt.Errorf("%s: %s", mk.FirstError, cr.FirstError)
		}
		if err != nil {
			return fmt.Errorf("rm-rf setup: %w", err)
		}
		items = n + 1 // the root too
		if err := f.waitVisible(ctx, t); err != nil {
			return fmt.Errorf("rm-rf setup: tree built in %s: %w", build(t), err)
		}
	}
	for _, m := range []struct {
		op   string
		root string
		rm   func(ctx context.Context, root string) error
	}{
		{"os.RemoveAll", goTree, func(_ context.Context, root string) error { return os.RemoveAll(root) }},
		{"rm -rf", rmTree, func(ctx context.Context, root string) error { return f.run(ctx, "rm", "-rf", "--", root) }},
	} {
		r := NewRecorder(m.op)
		start := time.Now()
		_ = r.Time(func() error { return m.rm(ctx, m.root) })
		r.SetWall(time.Since(start))
		r.SetItems(items)
		f.rep.Ops = append(f.rep.Ops, r.Stats())
	}
	return nil
}
