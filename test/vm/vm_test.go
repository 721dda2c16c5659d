//go:build vm

package vm

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// One guest for all tests in this file: booting costs seconds under TCG.
var guest *Guest

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	share, err := os.MkdirTemp("", "paddock-vm-share-")
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(share, "hello"), []byte("from host\n"), 0o644); err != nil {
		panic(err)
	}
	t0 := time.Now()
	guest, err = Start(ctx, Options{ShareDir: share, Forward: []int{8080}})
	cancel()
	if err != nil {
		os.Stderr.WriteString("vm: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Stderr.WriteString("vm: guest ready in " + time.Since(t0).Round(time.Millisecond).String() + ", serial log " + guest.LogPath() + "\n")
	code := m.Run()
	if err := guest.Stop(); err != nil {
		os.Stderr.WriteString("vm: stop: " + err.Error() + "\n")
	}
	os.RemoveAll(share)
	os.Exit(code)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sh runs a dash script in the guest as root and fails the test on a
// non-zero exit.
func sh(t *testing.T, script string) string {
	t.Helper()
	res, err := guest.Exec(ctxT(t, 2*time.Minute), "sh", "-ec", script)
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("%q: exit %d\nstdout: %s\nstderr: %s", script, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

func mountNFS(t *testing.T, opts, export, target string) {
	mountFrom(t, "127.0.0.1", opts, export, target)
}

func mountFrom(t *testing.T, server, opts, export, target string) {
	t.Helper()
	sh(t, "mkdir -p "+target+" && mount -t nfs -o "+opts+" "+server+":"+export+" "+target)
	t.Cleanup(func() {
		guest.Exec(context.Background(), "umount", "-f", "-l", target)
	})
}

func TestExecBasics(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	res, err := guest.ExecOpts(ctx, ExecRequest{
		Argv: []string{"sh", "-c", `pwd; echo "$FOO"; cat; echo oops >&2; exit 3`},
		Env:  []string{"FOO=bar"}, Dir: "/srv", Stdin: "piped\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "/srv\nbar\npiped\n" || res.Stderr != "oops\n" || res.ExitCode != 3 {
		t.Fatalf("got %+v", res)
	}
	res, err = guest.Exec(ctx, "/no/such/binary")
	if err != nil || res.ExitCode != 127 {
		t.Fatalf("missing binary: got %+v, %v; want exit 127", res, err)
	}
	res, err = guest.ExecOpts(ctx, ExecRequest{Argv: []string{"sleep", "30"}, Timeout: 500 * time.Millisecond})
	if err != nil || !res.TimedOut || res.ExitCode != 128+int(syscall.SIGKILL) {
		t.Fatalf("timeout: got %+v, %v", res, err)
	}
	uid := 1000
	res, err = guest.ExecOpts(ctx, ExecRequest{Argv: []string{"id", "-u"}, UID: &uid, GID: &uid})
	if err != nil || strings.TrimSpace(res.Stdout) != "1000" {
		t.Fatalf("id as 1000: got %+v, %v", res, err)
	}
	if got := sh(t, "cat /host/hello"); got != "from host\n" {
		t.Fatalf("9p share: got %q", got)
	}
	// /bin/sh must not be busybox (its builtin mount bypasses mount.nfs) and
	// mount must be util-linux's.
	if got := sh(t, "readlink -f /bin/sh; mount --version"); !strings.Contains(got, "/usr/bin/dash") || !strings.Contains(got, "util-linux") {
		t.Fatalf("shell/mount: %q", got)
	}
}

func TestSpawnKillAndForward(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	// A tiny HTTP server inside the guest, reached through Forward.
	sh(t, "mkdir -p /tmp/www && echo guest-web > /tmp/www/index.html")
	if err := guest.Spawn(ctx, "httpd", []string{"httpd", "-f", "-p", "8080", "-h", "/tmp/www"}, nil); err != nil {
		t.Fatal(err)
	}
	port := guest.HostPort(8080)
	if port == 0 {
		t.Fatal("port 8080 not forwarded")
	}
	var body string
	for i := 0; i < 100; i++ {
		resp, err := http.Get("http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/")
		if err == nil {
			b := make([]byte, 100)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			body = string(b[:n])
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if body != "guest-web\n" {
		t.Fatalf("forwarded port: got %q", body)
	}
	if err := guest.Kill(ctx, "httpd", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		running, code, err := guest.SpawnStatus(ctx, "httpd")
		if err != nil {
			t.Fatal(err)
		}
		if !running {
			if code != 128+int(syscall.SIGTERM) {
				t.Fatalf("httpd exit code %d, want %d", code, 128+int(syscall.SIGTERM))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("httpd still running 10s after SIGTERM")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := guest.Spawn(ctx, "echo", []string{"sh", "-c", "echo spawned-output"}, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if out := sh(t, "cat /tmp/spawn/echo.log"); out == "spawned-output\n" {
			break
		} else if i > 50 {
			t.Fatalf("spawn log: %q", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNFSVersions(t *testing.T) {
	for _, vers := range []string{"3", "4.1", "4.2"} {
		t.Run("vers="+vers, func(t *testing.T) {
			mnt := "/mnt/vers-" + vers
			mountNFS(t, "vers="+vers, "/srv/nfs/a", mnt)
			// The kernel really mounted NFS with that version.
			if got := sh(t, "findmnt -n -o FSTYPE,OPTIONS "+mnt); !strings.HasPrefix(got, "nfs") || !strings.Contains(got, "vers="+vers) {
				t.Fatalf("findmnt: %q", got)
			}
			name := "written-via-v" + vers
			sh(t, "echo payload-"+vers+" > "+mnt+"/"+name+" && sync")
			if got := sh(t, "cat /srv/nfs/a/"+name); got != "payload-"+vers+"\n" {
				t.Fatalf("file on the export: %q", got)
			}
			sh(t, "rm "+mnt+"/"+name+" && test ! -e /srv/nfs/a/"+name)
		})
	}
}

func TestDefaultMountNegotiatesV4(t *testing.T) {
	// Without vers=, mount.nfs negotiates like on a node (v4.2 with this kernel).
	mountNFS(t, "soft", "/srv/nfs/b", "/mnt/negotiate")
	if got := sh(t, "findmnt -n -o FSTYPE,OPTIONS /mnt/negotiate"); !strings.HasPrefix(got, "nfs4") || !strings.Contains(got, "vers=4.2") {
		t.Fatalf("findmnt: %q", got)
	}
}

func TestRootSquash(t *testing.T) {
	mountNFS(t, "vers=4.1", "/srv/nfs/squash", "/mnt/squash")
	// Root is squashed to nobody: on a 0755 root-owned dir the write is
	// refused; on a world-writable dir the file belongs to 65534.
	res, err := guest.Exec(ctxT(t, time.Minute), "sh", "-c", "echo x > /mnt/squash/denied")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode == 0 {
		t.Fatalf("root write to a 0755 root-owned dir on a root_squash export succeeded")
	}
	if !strings.Contains(res.Stderr, "ermission denied") {
		t.Fatalf("unexpected error: %q", res.Stderr)
	}
	sh(t, "mkdir -p /srv/nfs/squash/open && chmod 1777 /srv/nfs/squash/open")
	sh(t, "echo x > /mnt/squash/open/by-root")
	if got := sh(t, "stat -c %u:%g /srv/nfs/squash/open/by-root"); got != "65534:65534\n" {
		t.Fatalf("owner of a squashed root write: %q, want 65534:65534", got)
	}
}

func TestNonRootWrite(t *testing.T) {
	for _, vers := range []string{"3", "4.1"} {
		t.Run("vers="+vers, func(t *testing.T) {
			mnt := "/mnt/user-" + vers
			dir := "/srv/nfs/a/user-" + vers
			sh(t, "mkdir -p "+dir+" && chown 1000:1000 "+dir+" && chmod 0755 "+dir)
			mountNFS(t, "vers="+vers, "/srv/nfs/a", mnt)
			uid := 1000
			ctx := ctxT(t, time.Minute)
			res, err := guest.ExecOpts(ctx, ExecRequest{Argv: []string{"sh", "-c", "echo mine > " + mnt + "/user-" + vers + "/f"}, UID: &uid, GID: &uid})
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("write as 1000: %+v %v", res, err)
			}
			if got := sh(t, "stat -c %u:%g "+dir+"/f"); got != "1000:1000\n" {
				t.Fatalf("owner: %q", got)
			}
			// And uid 1000 cannot write where only root can.
			res, err = guest.ExecOpts(ctx, ExecRequest{Argv: []string{"sh", "-c", "echo no > " + mnt + "/not-mine"}, UID: &uid, GID: &uid})
			if err != nil || res.ExitCode == 0 {
				t.Fatalf("write as 1000 into a root dir: %+v %v", res, err)
			}
		})
	}
}

func TestFlock(t *testing.T) {
	for _, vers := range []string{"3", "4.1"} {
		t.Run("vers="+vers, func(t *testing.T) {
			mnt := "/mnt/flock-" + vers
			mountNFS(t, "vers="+vers, "/srv/nfs/a", mnt)
			lock := mnt + "/lock-" + vers
			sh(t, "touch "+lock)
			ctx := ctxT(t, time.Minute)
			// Hold the lock in the background; a second non-blocking flock
			// must fail while it is held and succeed after.
			if err := guest.Spawn(ctx, "holder-"+vers, []string{"flock", lock, "sleep", "30"}, nil); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { guest.Kill(context.Background(), "holder-"+vers, syscall.SIGKILL) })
			held := false
			for i := 0; i < 100 && !held; i++ {
				res, err := guest.Exec(ctx, "flock", "-n", lock, "true")
				if err != nil {
					t.Fatal(err)
				}
				held = res.ExitCode != 0
				if !held {
					time.Sleep(100 * time.Millisecond)
				}
			}
			if !held {
				t.Fatal("flock -n succeeded while another process holds the lock")
			}
			if err := guest.Kill(ctx, "holder-"+vers, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			res, err := guest.Exec(ctx, "flock", "-w", "20", lock, "true")
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("flock after release: %+v %v", res, err)
			}
		})
	}
}

func TestServerStopStart(t *testing.T) {
	// Runs last among the NFS tests in this file (go test runs them in
	// source order) because it takes the server away.
	ctx := ctxT(t, 3*time.Minute)
	sh(t, "mkdir -p /mnt/dead")
	t.Cleanup(func() {
		guest.Exec(context.Background(), "/usr/local/bin/nfs-server-start")
		guest.Exec(context.Background(), "umount", "-f", "-l", "/mnt/dead")
	})
	sh(t, "/usr/local/bin/nfs-server-stop")
	start := time.Now()
	res, err := guest.ExecOpts(ctx, ExecRequest{
		Argv:    []string{"mount", "-t", "nfs", "-o", "vers=4.1,timeo=10,retrans=1,soft,retry=0", "127.0.0.1:/srv/nfs/a", "/mnt/dead"},
		Timeout: 90 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode == 0 {
		t.Fatal("mount succeeded against a stopped server")
	}
	if res.TimedOut {
		t.Fatalf("mount against a stopped server hung for %v instead of failing", time.Since(start))
	}
	t.Logf("mount against stopped server failed after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(res.Stderr))
	sh(t, "/usr/local/bin/nfs-server-start")
	for _, vers := range []string{"3", "4.1"} {
		sh(t, "mount -t nfs -o vers="+vers+",timeo=10,retrans=1,soft,retry=0 127.0.0.1:/srv/nfs/a /mnt/dead && echo back > /mnt/dead/after-restart && umount /mnt/dead")
		if got := sh(t, "cat /srv/nfs/a/after-restart"); got != "back\n" {
			t.Fatalf("after restart (vers=%s): %q", vers, got)
		}
	}
}

func TestServerHang(t *testing.T) {
	// nfs-server-stop --hang drops packets to ServerIP: a hard mount of
	// that address hangs and recovers after nfs-server-start.
	ctx := ctxT(t, 5*time.Minute)
	mountFrom(t, ServerIP, "vers=4.1,hard", "/srv/nfs/b", "/mnt/hang")
	t.Cleanup(func() { guest.Exec(context.Background(), "/usr/local/bin/nfs-server-start") })
	sh(t, "echo before > /mnt/hang/probe")
	sh(t, "/usr/local/bin/nfs-server-stop --hang")
	res, err := guest.ExecOpts(ctx, ExecRequest{Argv: []string{"cat", "/mnt/hang/probe-uncached"}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut {
		t.Fatalf("access to a hung server did not hang: %+v", res)
	}
	sh(t, "/usr/local/bin/nfs-server-start")
	start := time.Now()
	res, err = guest.ExecOpts(ctx, ExecRequest{Argv: []string{"cat", "/mnt/hang/probe"}, Timeout: 3 * time.Minute})
	if err != nil || res.ExitCode != 0 || res.Stdout != "before\n" {
		t.Fatalf("after nfs-server-start: %+v %v", res, err)
	}
	t.Logf("hard mount recovered %v after nfs-server-start", time.Since(start).Round(time.Millisecond))
}
