package driver

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/share"
)

const (
	testServer = "nfs.example"
	testShare  = "/export"
)

// harness runs the real gRPC server (Serve on a unix socket) with a share workspace and a node
// mounter that are fakes over local directories.
type harness struct {
	t        *testing.T
	export   string // the local directory standing in for nfs.example:/export
	outside  string // a directory beside the export that nothing may touch
	podDir   string // where node targets go
	ctrlFake *mounttest.Fake
	nodeFake *mounttest.Fake
	ws       *share.Workspace
	drv      *Driver
	sock     string
	cancel   context.CancelFunc
	served   chan error
	conn     *grpc.ClientConn
	ident    csi.IdentityClient
	ctrl     csi.ControllerClient
	node     csi.NodeClient
}

type harnessOpts struct {
	mode       Mode
	grace      time.Duration
	nodes      NodeDirectory
	maxVolumes int64
	topology   map[string]string
	quotas     QuotaAgents
}

func start(t *testing.T, ho harnessOpts) *harness {
	t.Helper()
	if ho.mode == "" {
		ho.mode = ModeAll
	}
	if ho.grace == 0 {
		ho.grace = 10 * time.Second
	}
	base := t.TempDir()
	// A short socket path: unix socket paths are limited to 108 bytes.
	sockDir, err := os.MkdirTemp("", "pd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	h := &harness{t: t, export: filepath.Join(base, "export"), outside: filepath.Join(base, "outside"),
		podDir: filepath.Join(base, "pods"), ctrlFake: mounttest.New(), nodeFake: mounttest.New(),
		sock: filepath.Join(sockDir, "csi.sock"), served: make(chan error, 1)}
	for _, d := range []string{h.export, h.outside, h.podDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(h.outside, "host-file"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.ctrlFake.AddExport(testServer+":"+testShare, h.export)
	h.nodeFake.AddExport(testServer+":"+testShare, h.export)
	var ws *share.Workspace
	if ho.mode != ModeNode {
		ws, err = share.New(share.Config{WorkDir: filepath.Join(base, "work"), FSTimeout: 5 * time.Second, Mounter: h.ctrlFake})
		if err != nil {
			t.Fatal(err)
		}
		h.ws = ws
	}
	d, err := New(Options{Name: DefaultName, Version: "v9.9.9-test", Mode: ho.mode, NodeID: "node-1",
		Endpoint: "unix://" + h.sock, FSTimeout: 5 * time.Second, Nodes: ho.nodes, MaxVolumesPerNode: ho.maxVolumes,
		Topology: ho.topology, QuotaAgents: ho.quotas}, ws, h.nodeFake)
	if err != nil {
		t.Fatal(err)
	}
	h.drv = d
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.served <- d.Serve(ctx, ho.grace) }()
	deadline := time.Now().Add(10 * time.Second)
	// The socket file appears at bind(2), a moment before listen(2): wait until a dial is accepted, or
	// the first call can be refused ("connection refused").
	for {
		if c, err := net.Dial("unix", h.sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socket never accepted a connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.conn, err = grpc.NewClient("unix://"+h.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h.ident, h.ctrl, h.node = csi.NewIdentityClient(h.conn), csi.NewControllerClient(h.conn), csi.NewNodeClient(h.conn)
	t.Cleanup(func() {
		h.ctrlFake.ReleaseAll()
		h.nodeFake.ReleaseAll()
		h.conn.Close()
		h.cancel()
		<-h.served
		if ws != nil {
			ws.Close(context.Background())
		}
	})
	return h
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func params(kv ...string) map[string]string {
	m := map[string]string{"server": testServer, "share": testShare}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var rwx = mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)

func (h *harness) createVolume(name string, p map[string]string) *csi.Volume {
	h.t.Helper()
	resp, err := h.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: name, Parameters: p,
		VolumeCapabilities: []*csi.VolumeCapability{rwx}})
	if err != nil {
		h.t.Fatalf("CreateVolume(%s) = %v", name, err)
	}
	return resp.GetVolume()
}

// wantCode fails unless err is a gRPC status with code c (and, if given, mentions every string).
func wantCode(t *testing.T, err error, c codes.Code, mention ...string) {
	t.Helper()
	if status.Code(err) != c {
		t.Fatalf("got %v (code %v), want code %v", err, status.Code(err), c)
	}
	for _, m := range mention {
		if !strings.Contains(status.Convert(err).Message(), m) {
			t.Errorf("message %q does not mention %q", status.Convert(err).Message(), m)
		}
	}
}

// listing describes every entry below dir so a test can assert that a call changed nothing.
func listing(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			line += " -> " + target
		} else if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (h *harness) d() *Driver { return h.drv }
