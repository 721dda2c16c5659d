package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	"sigs.k8s.io/yaml"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/registration"
)

func TestRegistrationFlags(t *testing.T) {
	const kubeletPath = "/var/lib/kubelet/plugins/nfs.paddock.dev/csi.sock"
	for _, tc := range []struct {
		name, args string
		want       *registration.Config // nil: registration off
		err        string
	}{
		{name: "off by default", args: "--mode=node"},
		{name: "off in controller mode", args: "--mode=controller"},
		{name: "node, endpoint's path by default",
			args: "--mode=node --registration-dir=/registration --endpoint=unix:///var/lib/kubelet/plugins/x/csi.sock",
			want: &registration.Config{DriverName: "nfs.paddock.dev", Dir: "/registration", Endpoint: "/var/lib/kubelet/plugins/x/csi.sock"}},
		{name: "node, as in deploy/kubernetes/node.yaml",
			args: "--mode=node --driver-name=example.dev --registration-dir=/registration --endpoint=unix:///csi/csi.sock --kubelet-registration-path=" + kubeletPath,
			want: &registration.Config{DriverName: "example.dev", Dir: "/registration", Endpoint: kubeletPath}},
		{name: "all mode serves the node service too",
			args: "--mode=all --registration-dir=/registration --kubelet-registration-path=" + kubeletPath,
			want: &registration.Config{DriverName: "nfs.paddock.dev", Dir: "/registration", Endpoint: kubeletPath}},
		{name: "controller mode", args: "--mode=controller --registration-dir=/registration",
			err: "--registration-dir registers the node plugin with kubelet: it needs --mode=node or --mode=all"},
		{name: "kubelet path without a dir", args: "--mode=node --kubelet-registration-path=" + kubeletPath,
			err: "--kubelet-registration-path=\"" + kubeletPath + "\" needs --registration-dir"},
		{name: "kubelet path without a dir in controller mode", args: "--mode=controller --kubelet-registration-path=" + kubeletPath,
			err: "needs --registration-dir"},
		{name: "tcp endpoint", args: "--mode=node --registration-dir=/registration --endpoint=tcp://127.0.0.1:10000",
			err: "--registration-dir needs a unix:// --endpoint"},
		{name: "tcp endpoint with a kubelet path", args: "--mode=node --registration-dir=/registration --endpoint=tcp://127.0.0.1:10000 --kubelet-registration-path=" + kubeletPath,
			err: "--registration-dir needs a unix:// --endpoint"},
		{name: "relative dir", args: "--mode=node --registration-dir=registration",
			err: "--registration-dir=\"registration\" must be an absolute path"},
		{name: "relative endpoint as the default", args: "--mode=node --registration-dir=/registration --endpoint=unix://csi/csi.sock",
			err: "--kubelet-registration-path=\"csi/csi.sock\" must be an absolute path"},
		{name: "relative kubelet path", args: "--mode=node --registration-dir=/registration --kubelet-registration-path=csi.sock",
			err: "--kubelet-registration-path=\"csi.sock\" must be an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFlags(strings.Fields(tc.args))
			if err != nil {
				t.Fatal(err)
			}
			got, err := registrationConfig(f)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == nil && got != nil:
				t.Errorf("registration %+v, want off", *got)
			case tc.want != nil && (got == nil || *got != *tc.want):
				t.Errorf("registration %v, want %+v", got, *tc.want)
			}
		})
	}
}

// TestManifestArgs: every paddock container in deploy/ (the base and the overlays' patches) passes
// flags paddock has, and a registration setup it accepts. The flags and the manifests live in two
// packages; a renamed flag would otherwise only show as a crash-looping pod.
func TestManifestArgs(t *testing.T) {
	var files []string
	for _, dir := range []string{"../../deploy/kubernetes", "../../deploy/overlays"} {
		err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && strings.HasSuffix(p, ".yaml") {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	type containers struct {
		Name  string   `json:"name"`
		Image string   `json:"image"`
		Args  []string `json:"args"`
	}
	var workload struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Template struct {
				Spec struct {
					Containers []containers `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	seen := map[string]bool{} // mode of each checked container
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			workload.Spec.Template.Spec.Containers = nil
			if err := yaml.Unmarshal(doc, &workload); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, c := range workload.Spec.Template.Spec.Containers {
				// A patch may name the container without its image.
				if c.Name != "paddock" && !strings.HasPrefix(c.Image, "ghcr.io/paddock-csi/paddock") {
					continue
				}
				where := file + ": " + workload.Kind + " " + workload.Metadata.Name + ", container " + c.Name
				if c.Args == nil {
					continue // a patch that leaves the arguments alone
				}
				args := strings.NewReplacer("$(NODE_NAME)", "node-1").Replace(strings.Join(c.Args, "\x00"))
				f, err := parseFlags(strings.Split(args, "\x00"))
				if err != nil {
					t.Errorf("%s: paddock refuses its args: %v", where, err)
					continue
				}
				if _, err := registrationConfig(f); err != nil {
					t.Errorf("%s: %v", where, err)
				}
				seen[f.mode] = true
			}
		}
	}
	if !seen["node"] || !seen["controller"] {
		t.Errorf("checked paddock containers in modes %v, want node and controller", seen)
	}
}

// shortTempDir: socket paths must fit in 107 bytes, which t.TempDir() under a long test name may not.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "paddock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func dial(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestRegisterAfterListening plays kubelet against the node plugin as run wires it: the registration
// socket appears only once the CSI socket accepts connections, GetInfo leads to the CSI socket,
// /healthz follows kubelet's verdict, and both sockets are gone after the stop.
func TestRegisterAfterListening(t *testing.T) {
	dir := shortTempDir(t)
	regDir := filepath.Join(dir, "plugins_registry")
	if err := os.Mkdir(regDir, 0o700); err != nil {
		t.Fatal(err)
	}
	csiSock := filepath.Join(dir, "csi.sock")
	f, err := parseFlags([]string{"--mode=node", "--node-id=node-1", "--endpoint=unix://" + csiSock, "--registration-dir=" + regDir})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := registrationConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registration.New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := driver.Options{Name: f.driverName, Mode: driver.ModeNode, NodeID: f.nodeID, Endpoint: f.endpoint, FSTimeout: 5 * time.Second}
	wait := registerAfterListening(ctx, &opts, reg, cancel)
	hook := opts.OnListening
	hookErr := make(chan error, 1)
	opts.OnListening = func() {
		var err error
		if _, serr := os.Lstat(reg.SocketPath()); serr == nil {
			err = errors.New("the registration socket exists before the CSI socket listens")
		} else if c, derr := net.Dial("unix", csiSock); derr != nil {
			err = derr
		} else {
			c.Close()
		}
		hookErr <- err
		hook()
	}
	d, err := driver.New(opts, nil, mounttest.New())
	if err != nil {
		t.Fatal(err)
	}
	health := httptest.NewServer(metrics.Handler(d.Ready, reg.Healthy))
	defer health.Close()
	healthz := func() (int, string) {
		t.Helper()
		resp, err := http.Get(health.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := healthz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "not served yet") {
		t.Errorf("/healthz before the CSI socket: %d %q", code, body)
	}

	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, time.Second) }()
	if err := <-hookErr; err != nil {
		t.Fatalf("when the CSI endpoint listens: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for reg.Healthy() != nil && strings.Contains(reg.Healthy().Error(), "not served yet") {
		if time.Now().After(deadline) {
			t.Fatal("the registration socket was never served")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// What kubelet's plugin watcher does: GetInfo, NodeGetInfo on the endpoint, NotifyRegistrationStatus.
	kubelet := registerapi.NewRegistrationClient(dial(t, reg.SocketPath()))
	info, err := kubelet.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != driver.DefaultName || info.Endpoint != csiSock {
		t.Errorf("GetInfo = %+v, want CSIPlugin %s at %s", info, driver.DefaultName, csiSock)
	}
	nodeInfo, err := csi.NewNodeClient(dial(t, info.Endpoint)).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || nodeInfo.NodeId != "node-1" {
		t.Fatalf("NodeGetInfo through the registered endpoint: %v, %v", nodeInfo, err)
	}
	if code, body := healthz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "kubelet has not confirmed registration yet") {
		t.Errorf("/healthz before kubelet's verdict: %d %q", code, body)
	}
	if _, err := kubelet.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if code, body := healthz(); code != http.StatusOK {
		t.Errorf("/healthz once registered: %d %q", code, body)
	}

	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := wait(); err != nil {
		t.Errorf("registration: %v", err)
	}
	for _, p := range []string{csiSock, reg.SocketPath()} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s after the stop: %v, want it removed", p, err)
		}
	}
}

// TestRegistrationFailureStops: a registration socket that cannot be made stops the process.
func TestRegistrationFailureStops(t *testing.T) {
	dir := shortTempDir(t)
	reg, err := registration.New(registration.Config{DriverName: driver.DefaultName, Dir: filepath.Join(dir, "missing"), Endpoint: filepath.Join(dir, "csi.sock")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := driver.Options{Name: driver.DefaultName, Mode: driver.ModeNode, NodeID: "node-1", Endpoint: "unix://" + filepath.Join(dir, "csi.sock"), FSTimeout: 5 * time.Second}
	wait := registerAfterListening(ctx, &opts, reg, cancel)
	d, err := driver.New(opts, nil, mounttest.New())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, time.Second) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop after the registration failed")
	}
	if err := wait(); err == nil || !strings.Contains(err.Error(), "--registration-dir") {
		t.Errorf("registration error %v, want one naming --registration-dir", err)
	}
}

// TestRegistrationNeverListening: when the CSI endpoint never listens, registration never starts
// and wait returns once the context ends.
func TestRegistrationNeverListening(t *testing.T) {
	dir := shortTempDir(t)
	reg, err := registration.New(registration.Config{DriverName: driver.DefaultName, Dir: dir, Endpoint: "/x/csi.sock"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts := driver.Options{}
	wait := registerAfterListening(ctx, &opts, reg, cancel)
	cancel()
	if err := wait(); err != nil {
		t.Errorf("wait: %v", err)
	}
	if _, err := os.Lstat(reg.SocketPath()); !os.IsNotExist(err) {
		t.Errorf("registration socket: %v, want none", err)
	}
}
