package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuild builds an archive from a small tree and reads it back as containerd would.
func TestBuild(t *testing.T) {
	root := t.TempDir()
	mk := func(p string, mode os.FileMode, data string) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	mk("usr/bin/tool", 0o755, "#!/bin/sh\necho tool\n")
	mk("etc/conf", 0o644, "key=value\n")
	mk("etc/secret", 0o600, "s3cret\n")
	mk("usr/lib/libx.so.1", 0o644, "ELF?")
	if err := os.Link(filepath.Join(root, "usr/lib/libx.so.1"), filepath.Join(root, "usr/lib/libx-hard.so.1")); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{"bin", "usr/bin"}, {"usr/lib/libx.so", "libx.so.1"}, {"etc/mtab", "/proc/self/mounts"}} {
		if err := os.Symlink(l[1], filepath.Join(root, l[0])); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	// Files owned by someone else on the host must still be 0:0 in the image.
	if os.Geteuid() == 0 {
		if err := os.Lchown(filepath.Join(root, "etc/conf"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
	}

	out := filepath.Join(t.TempDir(), "img.tar")
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	o := Options{
		Rootfs:     root,
		Tag:        "registry.paddock.test/test:e2e",
		Out:        out,
		Entrypoint: []string{"/usr/bin/tool"},
		Cmd:        []string{"--flag"},
		Env:        []string{"PATH=/usr/bin:/bin"},
		Created:    created,
		GzipLevel:  gzip.BestSpeed,
	}
	if err := Build(o); err != nil {
		t.Fatal(err)
	}

	tag, err := name.NewTag(o.Tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("the archive has no image tagged %s: %v", o.Tag, err)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !reflect.DeepEqual(m[0].RepoTags, []string{o.Tag}) {
		t.Errorf("manifest.json: %+v, want one image tagged %s", m, o.Tag)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, o.Entrypoint) || !reflect.DeepEqual(cf.Config.Cmd, o.Cmd) ||
		!reflect.DeepEqual(cf.Config.Env, o.Env) {
		t.Errorf("config: entrypoint %q cmd %q env %q", cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Env)
	}
	if cf.OS != "linux" || cf.Architecture == "" || !cf.Created.Time.Equal(created) {
		t.Errorf("config: os %q arch %q created %v", cf.OS, cf.Architecture, cf.Created)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 || len(cf.RootFS.DiffIDs) != 1 {
		t.Fatalf("%d layers, %d diff IDs; want 1", len(layers), len(cf.RootFS.DiffIDs))
	}
	if d, _ := layers[0].DiffID(); d != cf.RootFS.DiffIDs[0] {
		t.Errorf("layer diff ID %v, config says %v", d, cf.RootFS.DiffIDs[0])
	}

	type ent struct {
		typ  byte
		mode int64
		link string
		data string
	}
	want := map[string]ent{
		"bin":                    {tar.TypeSymlink, 0o777, "usr/bin", ""},
		"etc/":                   {tar.TypeDir, 0o755, "", ""},
		"etc/conf":               {tar.TypeReg, 0o644, "", "key=value\n"},
		"etc/mtab":               {tar.TypeSymlink, 0o777, "/proc/self/mounts", ""},
		"etc/secret":             {tar.TypeReg, 0o600, "", "s3cret\n"},
		"tmp/":                   {tar.TypeDir, 0o1777, "", ""},
		"usr/":                   {tar.TypeDir, 0o755, "", ""},
		"usr/bin/":               {tar.TypeDir, 0o755, "", ""},
		"usr/bin/tool":           {tar.TypeReg, 0o755, "", "#!/bin/sh\necho tool\n"},
		"usr/lib/":               {tar.TypeDir, 0o755, "", ""},
		"usr/lib/libx-hard.so.1": {tar.TypeReg, 0o644, "", "ELF?"},
		"usr/lib/libx.so":        {tar.TypeSymlink, 0o777, "libx.so.1", ""},
		"usr/lib/libx.so.1":      {tar.TypeLink, 0o644, "usr/lib/libx-hard.so.1", ""},
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	got := map[string]ent{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || (h.Uname != "" && h.Uname != "root") || (h.Gname != "" && h.Gname != "root") {
			t.Errorf("%s owned by %d(%s):%d(%s), want 0:0", h.Name, h.Uid, h.Uname, h.Gid, h.Gname)
		}
		if !h.ModTime.Equal(created) {
			t.Errorf("%s mtime %v, want %v", h.Name, h.ModTime, created)
		}
		var b bytes.Buffer
		if _, err := io.Copy(&b, tr); err != nil {
			t.Fatal(err)
		}
		if _, dup := got[h.Name]; dup {
			t.Errorf("%s twice in the layer", h.Name)
		}
		mode := h.Mode
		if h.Typeflag == tar.TypeSymlink {
			mode = 0o777
		}
		got[h.Name] = ent{h.Typeflag, mode, h.Linkname, b.String()}
	}
	for n, w := range want {
		g, ok := got[n]
		if !ok {
			t.Errorf("%s missing from the layer", n)
			continue
		}
		if g != w {
			t.Errorf("%s: got type %c mode %o link %q data %q, want type %c mode %o link %q data %q",
				n, g.typ, g.mode, g.link, g.data, w.typ, w.mode, w.link, w.data)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			t.Errorf("unexpected %s in the layer", n)
		}
	}
	if t.Failed() {
		return
	}

	// The same tree gives the same archive, byte for byte.
	out2 := filepath.Join(t.TempDir(), "img.tar")
	o.Out = out2
	if err := Build(o); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same tree differ")
	}
}

func TestBuildUnsetEntrypoint(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "sh"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := Build(Options{Rootfs: root, Tag: "registry.paddock.test/busybox:e2e", Out: out, Cmd: []string{"sh"}, GzipLevel: gzip.BestSpeed}); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Entrypoint != nil || !reflect.DeepEqual(cf.Config.Cmd, []string{"sh"}) {
		t.Errorf("entrypoint %q cmd %q, want none and [sh]", cf.Config.Entrypoint, cf.Config.Cmd)
	}
}

func TestBuildRefusesBadInput(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := Build(Options{Rootfs: root, Tag: "no tag at all!", Out: out}); err == nil {
		t.Error("a malformed tag was accepted")
	}
	if err := Build(Options{Rootfs: filepath.Join(root, "missing"), Tag: "registry.paddock.test/x:e2e", Out: out}); err == nil {
		t.Error("a missing rootfs was accepted")
	}
	if _, err := jsonArgs(`"/paddock"`); err == nil {
		t.Error("a non-array entrypoint was accepted")
	}
	if a, err := jsonArgs(`["/paddock","--mode=node"]`); err != nil || !reflect.DeepEqual(a, []string{"/paddock", "--mode=node"}) {
		t.Errorf("jsonArgs: %q %v", a, err)
	}
}
