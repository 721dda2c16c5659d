package registration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const (
	driverName = "nfs.paddock.dev"
	endpoint   = "/var/lib/kubelet/plugins/nfs.paddock.dev/csi.sock"
)

// shortTempDir is a temporary directory with a short path: t.TempDir() under a long test name can
// exceed the 107 bytes a socket path may have.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestValidate(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"valid", Config{driverName, "/registration", endpoint}, ""},
		{"no driver", Config{"", "/registration", endpoint}, "--driver-name is empty"},
		{"driver with slash", Config{"a/b", "/registration", endpoint}, "--driver-name"},
		{"no dir", Config{driverName, "", endpoint}, "--registration-dir is empty"},
		{"relative dir", Config{driverName, "registration", endpoint}, "--registration-dir=\"registration\" must be an absolute path"},
		{"no endpoint", Config{driverName, "/registration", ""}, "--kubelet-registration-path is empty"},
		{"relative endpoint", Config{driverName, "/registration", "csi.sock"}, "--kubelet-registration-path=\"csi.sock\" must be an absolute path"},
		{"socket path too long", Config{driverName, long, endpoint}, "longer than the 107 bytes"},
		{"endpoint too long", Config{driverName, "/registration", long + "/csi.sock"}, "--kubelet-registration-path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("New: err %v, want one containing %q", err, tc.want)
			}
		})
	}
	if got, want := (Config{driverName, "/registration", endpoint}).SocketPath(), "/registration/nfs.paddock.dev-reg.sock"; got != want {
		t.Errorf("SocketPath = %q, want %q", got, want)
	}
}

// start runs a server in dir until the test ends and returns it with a Registration client, as
// kubelet's plugin watcher would dial it.
func start(t *testing.T, dir string) (*Server, registerapi.RegistrationClient, func() error) {
	t.Helper()
	s, err := New(Config{DriverName: driverName, Dir: dir, Endpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// The socket appears at bind(2), a moment before listen(2): wait for an accepted dial.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", s.SocketPath())
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("registration socket never accepted a connection: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+s.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		conn.Close()
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return s, registerapi.NewRegistrationClient(conn), stop
}

func wantHealth(t *testing.T, s *Server, want string) {
	t.Helper()
	err := s.Healthy()
	switch {
	case want == "" && err != nil:
		t.Errorf("Healthy: %v, want nil", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("Healthy: %v, want an error containing %q", err, want)
	}
}

func TestRegistration(t *testing.T) {
	dir := shortTempDir(t)
	s, err := New(Config{DriverName: driverName, Dir: dir, Endpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	wantHealth(t, s, "not served yet")

	s, client, stop := start(t, dir)
	ctx := context.Background()
	fi, err := os.Lstat(filepath.Join(dir, driverName+"-reg.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("registration socket mode %v, want a socket with 0600", fi.Mode())
	}

	info, err := client.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != driverName || info.Endpoint != endpoint ||
		len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Errorf("GetInfo = %+v", info)
	}

	// kubelet's verdicts, in the order a slow start can produce them; the last one counts.
	wantHealth(t, s, "kubelet has not confirmed registration yet")
	for _, step := range []struct {
		status *registerapi.RegistrationStatus
		want   string
	}{
		{&registerapi.RegistrationStatus{PluginRegistered: false, Error: "NodeGetInfo: connection refused"},
			"kubelet refused registration: NodeGetInfo: connection refused"},
		{&registerapi.RegistrationStatus{PluginRegistered: true}, ""},
		{&registerapi.RegistrationStatus{PluginRegistered: false, Error: "version 0.3 not supported"},
			"kubelet refused registration: version 0.3 not supported"},
		{&registerapi.RegistrationStatus{PluginRegistered: true}, ""},
	} {
		if _, err := client.NotifyRegistrationStatus(ctx, step.status); err != nil {
			t.Fatal(err)
		}
		wantHealth(t, s, step.want)
	}

	if err := os.Remove(s.SocketPath()); err != nil {
		t.Fatal(err)
	}
	wantHealth(t, s, "registration socket "+s.SocketPath()+" is gone")

	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	wantHealth(t, s, "no longer served")
}

func TestStopRemovesOwnSocketOnly(t *testing.T) {
	dir := shortTempDir(t)
	s, _, stop := start(t, dir)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.SocketPath()); !os.IsNotExist(err) {
		t.Errorf("socket after stop: %v, want it removed", err)
	}

	// A socket that replaced ours (another instance took over) is left to its owner.
	s, _, stop = start(t, dir)
	// Made beside ours and renamed over it, so it cannot get our socket's inode number.
	tmp := filepath.Join(dir, "other.sock")
	listenStale(t, tmp)
	if err := os.Rename(tmp, s.SocketPath()); err != nil {
		t.Fatal(err)
	}
	other, err := os.Lstat(s.SocketPath()) // after the rename, which changes its ctime
	if err != nil {
		t.Fatal(err)
	}
	wantHealth(t, s, "was replaced by another file")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(s.SocketPath()); err != nil || !sameFile(fi, other) {
		t.Errorf("the other socket after stop: %v, want it kept", err)
	}
}

// listenStale leaves a socket file at path with nothing listening, as a killed process would.
func listenStale(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

func TestStartReplacesStaleSocket(t *testing.T) {
	dir := shortTempDir(t)
	listenStale(t, filepath.Join(dir, driverName+"-reg.sock"))
	// Nothing listens on the stale socket: an answer proves it was replaced.
	_, client, _ := start(t, dir)
	if _, err := client.GetInfo(context.Background(), &registerapi.InfoRequest{}); err != nil {
		t.Errorf("GetInfo through the new socket: %v", err)
	}
}

func TestRunRefuses(t *testing.T) {
	dir := shortTempDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notSocketDir := filepath.Join(dir, "d")
	if err := os.Mkdir(notSocketDir, 0o700); err != nil {
		t.Fatal(err)
	}
	notSocket := filepath.Join(notSocketDir, driverName+"-reg.sock")
	if err := os.WriteFile(notSocket, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"missing dir", filepath.Join(dir, "missing"), "--registration-dir"},
		{"dir is a file", file, "is not a directory"},
		{"a regular file at the socket path", notSocketDir, "is not a socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{DriverName: driverName, Dir: tc.dir, Endpoint: endpoint})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v, want an error containing %q", err, tc.want)
			}
			wantHealth(t, s, "not served yet")
		})
	}
	if b, err := os.ReadFile(notSocket); err != nil || string(b) != "keep me" {
		t.Errorf("the regular file at the socket path: %q, %v; want it untouched", b, err)
	}
}
