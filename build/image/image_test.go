// Package image holds the package lists of Paddock's container image: packages (what the
// Dockerfile installs on debian:bookworm-slim) and base (what that base image provides and
// the image needs, which hack/image.sh adds when it builds the image from scratch). The tests
// keep the Dockerfile and hack/image.sh on these lists.
package image

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
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
