// Command mkimage writes a container image archive (the `docker save` format, which
// `ctr images import` and `docker load` read) from a root filesystem directory, with no
// registry and no container engine: one layer holding the directory's tree, every entry
// owned by 0:0 with a fixed modification time, so the same tree gives the same image.
//
//	mkimage -rootfs DIR -tag registry.paddock.test/paddock:e2e -out paddock.tar \
//	    -entrypoint '["/paddock"]' -env PATH=/usr/sbin:/usr/bin:/sbin:/bin
//
// hack/image.sh assembles the directories (Debian packages, the paddock binary) and calls it.
package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// Options describe one image.
type Options struct {
	Rootfs     string   // directory whose tree becomes the image's only layer
	Tag        string   // e.g. registry.paddock.test/paddock:e2e
	Out        string   // archive to write
	Entrypoint []string // nil: unset
	Cmd        []string // nil: unset
	Env        []string
	User       string
	WorkingDir string
	Created    time.Time // image creation time and every entry's mtime
	GzipLevel  int
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var o Options
	var entrypoint, cmd string
	var env stringList
	var epoch int64
	flag.StringVar(&o.Rootfs, "rootfs", "", "root filesystem directory")
	flag.StringVar(&o.Tag, "tag", "", "image name with tag")
	flag.StringVar(&o.Out, "out", "", "archive to write")
	flag.StringVar(&entrypoint, "entrypoint", "", `entrypoint as a JSON array ("" leaves it unset)`)
	flag.StringVar(&cmd, "cmd", "", `command as a JSON array ("" leaves it unset)`)
	flag.Var(&env, "env", "KEY=VALUE (repeatable)")
	flag.StringVar(&o.User, "user", "", "user[:group] the image runs as")
	flag.StringVar(&o.WorkingDir, "workdir", "", "working directory")
	flag.Int64Var(&epoch, "epoch", 0, "creation time and mtime of every entry, in seconds since 1970")
	flag.IntVar(&o.GzipLevel, "gzip", gzip.DefaultCompression, "gzip level of the layer")
	flag.Parse()
	if o.Rootfs == "" || o.Tag == "" || o.Out == "" || flag.NArg() != 0 {
		log.Fatal("mkimage: -rootfs, -tag and -out are required (and nothing else)")
	}
	var err error
	if o.Entrypoint, err = jsonArgs(entrypoint); err != nil {
		log.Fatalf("mkimage: -entrypoint: %v", err)
	}
	if o.Cmd, err = jsonArgs(cmd); err != nil {
		log.Fatalf("mkimage: -cmd: %v", err)
	}
	o.Env = env
	o.Created = time.Unix(epoch, 0).UTC()
	if err := Build(o); err != nil {
		log.Fatalf("mkimage: %v", err)
	}
}

func jsonArgs(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, err
	}
	if len(a) == 0 {
		return nil, errors.New("an empty array: leave the flag out instead")
	}
	return a, nil
}

// Build writes the archive described by o.
func Build(o Options) error {
	tag, err := name.NewTag(o.Tag, name.StrictValidation)
	if err != nil {
		return err
	}
	if st, err := os.Stat(o.Rootfs); err != nil {
		return err
	} else if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", o.Rootfs)
	}
	// The layer goes next to the archive (same filesystem, removed at the end).
	lf, err := os.CreateTemp(filepath.Dir(o.Out), ".layer-*.tar.gz")
	if err != nil {
		return err
	}
	defer os.Remove(lf.Name())
	if err := writeLayer(lf, o.Rootfs, o.Created, o.GzipLevel); err != nil {
		lf.Close()
		return err
	}
	if err := lf.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromFile(lf.Name())
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint: o.Entrypoint,
		Cmd:        o.Cmd,
		Env:        o.Env,
		User:       o.User,
		WorkingDir: o.WorkingDir,
	}
	cf.History = []v1.History{{Created: cf.Created, CreatedBy: "hack/mkimage -rootfs " + filepath.Base(o.Rootfs)}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	tmp := o.Out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, o.Out)
}

// writeLayer writes root's tree as a gzip'd tar: entries in lexical order, owned by 0:0,
// mtime t, hard links kept as links, no device nodes, sockets or fifos.
func writeLayer(w io.Writer, root string, t time.Time, level int) error {
	zw, err := gzip.NewWriterLevel(w, level)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	links := map[[2]uint64]string{} // dev, inode -> first name
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{
			Name:    rel,
			Mode:    tarMode(fi.Mode()),
			ModTime: t,
			Uname:   "root",
			Gname:   "root",
		}
		switch m := fi.Mode(); {
		case m.IsDir():
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case m&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case m.IsRegular():
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				id := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := links[id]; ok {
					h.Typeflag = tar.TypeLink
					h.Linkname = first
					return tw.WriteHeader(h)
				}
				links[id] = rel
			}
			h.Typeflag = tar.TypeReg
			h.Size = fi.Size()
		default:
			return fmt.Errorf("%s: unsupported file type %s", rel, m.Type())
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, f)
		if err == nil && n != h.Size {
			err = fmt.Errorf("%s changed while being read", rel)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// tarMode is the tar header mode of m: permission bits plus setuid, setgid and sticky.
func tarMode(m fs.FileMode) int64 { return int64(volume.Octal(m)) }
