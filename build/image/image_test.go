// Package image holds the package lists of Paddock's container image: packages (what the
// Dockerfile installs on debian:bookworm-slim) and base (what that base image provides and
// the image needs, which hack/image.sh adds when it builds the image from scratch). The tests
// keep the Dockerfile and hack/image.sh on these lists.
package image

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const root = "../.."

var pkgName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// readList parses a list: one package a line, # comments, blank lines.
func readList(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []string
	for _, l := range strings.Split(string(b), "\n") {
		l, _, _ = strings.Cut(l, "#")
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if !pkgName.MatchString(l) {
			t.Errorf("%s: %q is not a Debian package name", name, l)
		}
		pkgs = append(pkgs, l)
	}
	return pkgs
}

func TestLists(t *testing.T) {
	pkgs := readList(t, "packages")
	base := readList(t, "base")
	if len(pkgs) == 0 || len(base) == 0 {
		t.Fatalf("packages %q, base %q: want both non-empty", pkgs, base)
	}
	seen := map[string]string{}
	for _, l := range []struct {
		name string
		pkgs []string
	}{{"packages", pkgs}, {"base", base}} {
		for _, p := range l.pkgs {
			if prev, ok := seen[p]; ok {
				t.Errorf("%s is in %s and in %s", p, prev, l.name)
			}
			seen[p] = l.name
		}
	}
	for _, p := range []string{"nfs-common", "netbase"} {
		if seen[p] != "packages" {
			t.Errorf("%s is not in packages (the Dockerfile must install it)", p)
		}
	}
	if seen["mount"] != "base" {
		t.Error("mount (util-linux mount/umount) is not in base")
	}
}

// instructions returns the Dockerfile's instructions (continuation lines joined, comments
// dropped) as [keyword, rest] pairs.
func instructions(t *testing.T) [][2]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(l, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		kw, rest, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(rest)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDockerfileInstallsTheList checks that the Dockerfile's image stage copies
// build/image/packages in and installs exactly what it lists, nothing hard-coded: its install
// command is run with apt-get replaced by echo, on the real file.
func TestDockerfileInstallsTheList(t *testing.T) {
	ins := instructions(t)
	last := -1
	for i, in := range ins {
		if in[0] == "FROM" {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("no FROM in the Dockerfile")
	}
	if from := strings.Fields(ins[last][1]); len(from) == 0 || from[0] != "debian:bookworm-slim" {
		t.Errorf("the image stage is FROM %q; build/image/base assumes debian:bookworm-slim", ins[last][1])
	}
	dst := ""
	var install []string
	for _, in := range ins[last+1:] {
		switch in[0] {
		case "COPY":
			if f := strings.Fields(in[1]); len(f) == 2 && f[0] == "build/image/packages" {
				dst = f[1]
			}
		case "RUN":
			for _, cmd := range regexp.MustCompile(`&&|;|\|\|`).Split(in[1], -1) {
				if regexp.MustCompile(`\bapt(-get)?\s+install\b`).MatchString(cmd) {
					install = append(install, strings.TrimSpace(cmd))
				}
			}
		}
	}
	if dst == "" {
		t.Fatal("the image stage does not COPY build/image/packages")
	}
	if len(install) != 1 {
		t.Fatalf("want one apt-get install in the image stage, found %q", install)
	}
	if !strings.Contains(install[0], dst) {
		t.Fatalf("the install command %q does not read %s (the copied list)", install[0], dst)
	}
	// Run it on the real list with apt-get replaced by echo: it must name exactly the list.
	cmd := strings.ReplaceAll(install[0], dst, "build/image/packages")
	cmd = regexp.MustCompile(`\bapt(-get)?\s+install\b`).ReplaceAllString(cmd, "echo")
	c := exec.Command("sh", "-c", cmd)
	c.Dir = root
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	var named []string
	for _, w := range strings.Fields(string(out)) {
		if !strings.HasPrefix(w, "-") {
			named = append(named, w)
		}
	}
	if want := readList(t, "packages"); !reflect.DeepEqual(named, want) {
		t.Errorf("the Dockerfile installs %q, build/image/packages lists %q", named, want)
	}
}

// TestImageScriptReadsTheLists checks that hack/image.sh builds the paddock image from the
// same two lists, parsed the same way.
func TestImageScriptReadsTheLists(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "hack/image.sh"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"read_list build/image/packages", "read_list build/image/base"} {
		if !strings.Contains(s, want) {
			t.Errorf("hack/image.sh does not %s", want)
		}
	}
	fn := regexp.MustCompile(`(?m)^read_list\(\) \{.*\}$`).FindString(s)
	if fn == "" {
		t.Fatal("hack/image.sh has no one-line read_list function")
	}
	for _, list := range []string{"packages", "base"} {
		c := exec.Command("bash", "-c", fn+"\nread_list build/image/"+list)
		c.Dir = root
		out, err := c.Output()
		if err != nil {
			t.Fatalf("read_list %s: %v", list, err)
		}
		if got, want := strings.Fields(string(out)), readList(t, list); !reflect.DeepEqual(got, want) {
			t.Errorf("hack/image.sh reads %s as %q, want %q", list, got, want)
		}
	}
}

// stages splits the Dockerfile's instructions by FROM: each stage's FROM arguments and the
// instructions after it.
type stage struct {
	from []string // FROM's words: [--platform=...] image [AS name]
	ins  [][2]string
}

func stages(t *testing.T) []stage {
	t.Helper()
	var out []stage
	for _, in := range instructions(t) {
		if in[0] == "FROM" {
			out = append(out, stage{from: strings.Fields(in[1])})
			continue
		}
		if len(out) == 0 {
			continue // ARGs before the first FROM
		}
		out[len(out)-1].ins = append(out[len(out)-1].ins, in)
	}
	if len(out) == 0 {
		t.Fatal("no FROM in the Dockerfile")
	}
	return out
}

// goBuild is the build stage's go build command, with the instructions that declare its ARGs.
func goBuild(t *testing.T, s stage) (cmd string, args []string) {
	t.Helper()
	for _, in := range s.ins {
		switch in[0] {
		case "ARG":
			for _, a := range strings.Fields(in[1]) {
				name, _, _ := strings.Cut(a, "=")
				args = append(args, name)
			}
		case "RUN":
			if strings.Contains(in[1], "go build") {
				if cmd != "" {
					t.Fatalf("two go build commands in the build stage: %q and %q", cmd, in[1])
				}
				cmd = in[1]
			}
		}
	}
	if cmd == "" {
		t.Fatal("the build stage runs no go build")
	}
	return cmd, args
}

// TestDockerfileIsMultiArch: the build stage runs on the builder's platform
// (--platform=$BUILDPLATFORM: the compiler is never emulated) and cross-compiles a static binary for
// the target's TARGETOS/TARGETARCH, which it declares (BuildKit's platform ARGs are not seen in a
// stage that does not), and the image stage, on the target's platform, copies it in.
func TestDockerfileIsMultiArch(t *testing.T) {
	st := stages(t)
	if len(st) != 2 {
		t.Fatalf("%d stages, want 2 (build, image)", len(st))
	}
	build, img := st[0], st[1]
	if len(build.from) != 4 || build.from[0] != "--platform=$BUILDPLATFORM" || !strings.HasPrefix(build.from[1], "golang:") ||
		!strings.EqualFold(build.from[2], "AS") {
		t.Fatalf("build stage FROM %q, want FROM --platform=$BUILDPLATFORM golang:... AS <name>", build.from)
	}
	for _, w := range img.from {
		if strings.HasPrefix(w, "--platform") {
			t.Errorf("image stage FROM %q: it must be the target's platform (no --platform)", img.from)
		}
	}
	cmd, args := goBuild(t, build)
	for _, a := range []string{"TARGETOS", "TARGETARCH"} {
		if !slices.Contains(args, a) {
			t.Errorf("the build stage does not declare ARG %s, so $%s is empty in it", a, a)
		}
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`\bCGO_ENABLED=0\b`),
		regexp.MustCompile(`\bGOOS=\$\{?TARGETOS\}?\s`),
		regexp.MustCompile(`\bGOARCH=\$\{?TARGETARCH\}?\s`),
	} {
		if !want.MatchString(cmd) {
			t.Errorf("the go build command %q does not set %s", cmd, want)
		}
	}
	copied := false
	for _, in := range img.ins {
		if in[0] == "COPY" && strings.HasPrefix(in[1], "--from="+build.from[3]+" ") {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the image stage copies nothing --from=%s", build.from[3])
	}
}

// crossArches are the architectures TestDockerfileCrossCompiles builds for besides the host's:
// a cold cross build compiles every dependency again (minutes on two cores), so the unit tier
// builds the host's alone and make test-cross, which make test runs last (with that build warmed
// up in the background), all of them: PADDOCK_CROSS=all.
var crossArches = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// TestDockerfileCrossCompiles runs the build stage's go build command itself, as BuildKit would for
// linux/amd64 and linux/arm64 (TARGETOS and TARGETARCH set, VERSION unset), and checks what it
// makes: a static ELF for that machine; the host's one, run here, prints the VERSION file's
// release. (No container engine runs here: the image stages themselves are not built by this test.)
func TestDockerfileCrossCompiles(t *testing.T) {
	cmd, declared := goBuild(t, stages(t)[0])
	version, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		goarch  string
		machine elf.Machine
	}
	targets := []target{{runtime.GOARCH, crossArches[runtime.GOARCH]}}
	if os.Getenv("PADDOCK_CROSS") == "all" {
		for _, a := range []string{"amd64", "arm64"} {
			if a != runtime.GOARCH {
				targets = append(targets, target{a, crossArches[a]})
			}
		}
	} else {
		t.Logf("building for %s only; make test-cross builds for amd64 and arm64", runtime.GOARCH)
	}
	for _, arch := range targets {
		t.Run(arch.goarch, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "paddock")
			// The command as the Dockerfile has it, writing to a temp file instead of /out.
			c := exec.Command("sh", "-c", strings.ReplaceAll(cmd, "/out/paddock", out))
			c.Dir = root
			// BuildKit hands the stage the platform ARGs it declares, as environment variables.
			c.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
				return strings.HasPrefix(kv, "VERSION=") || strings.HasPrefix(kv, "GOOS=") || strings.HasPrefix(kv, "GOARCH=") ||
					strings.HasPrefix(kv, "TARGETOS=") || strings.HasPrefix(kv, "TARGETARCH=")
			})
			for k, v := range map[string]string{"TARGETOS": "linux", "TARGETARCH": arch.goarch} {
				if slices.Contains(declared, k) {
					c.Env = append(c.Env, k+"="+v)
				}
			}
			if b, err := c.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", c, err, b)
			}
			f, err := elf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != arch.machine || f.Class != elf.ELFCLASS64 {
				t.Errorf("built for %v (%v), want %v", f.Machine, f.Class, arch.machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("the binary is dynamically linked (%v): the image has no Go toolchain's libc", p.Type)
				}
			}
			if arch.goarch != runtime.GOARCH {
				return
			}
			b, err := exec.Command(out, "--version").CombinedOutput()
			if got, want := strings.TrimSpace(string(b)), "paddock "+strings.TrimSpace(string(version)); err != nil || got != want {
				t.Errorf("paddock --version: %q (%v), want %q", got, err, want)
			}
		})
	}
}
