package driver

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

// TestCallLogNeverShowsSecrets: at the verbosity that logs whole requests, the secrets a request
// carries are stripped, while the rest of the request is still there to debug with.
func TestCallLogNeverShowsSecrets(t *testing.T) {
	const secret = "hunter2-do-not-log"
	secrets := map[string]string{"password": secret, "krb5.keytab": secret}
	cases := []struct {
		method string
		req    any
		keep   string // a field that must still be logged
	}{
		{"/csi.v1.Controller/CreateVolume", &csi.CreateVolumeRequest{Name: "pvc-1", Secrets: secrets}, "pvc-1"},
		{"/csi.v1.Controller/DeleteVolume", &csi.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: secrets}, "vol-1"},
		{"/csi.v1.Controller/CreateSnapshot", &csi.CreateSnapshotRequest{SourceVolumeId: "vol-2", Name: "snap-1", Secrets: secrets}, "snap-1"},
		{"/csi.v1.Node/NodeStageVolume", &csi.NodeStageVolumeRequest{VolumeId: "vol-3", StagingTargetPath: "/stage", Secrets: secrets}, "/stage"},
		{"/csi.v1.Node/NodePublishVolume", &csi.NodePublishVolumeRequest{VolumeId: "vol-4", TargetPath: "/target", Secrets: secrets}, "/target"},
	}
	for _, c := range cases {
		t.Run(c.method, func(t *testing.T) {
			var mu sync.Mutex
			var out strings.Builder
			logger := funcr.New(func(prefix, args string) {
				mu.Lock()
				defer mu.Unlock()
				out.WriteString(prefix + " " + args + "\n")
			}, funcr.Options{Verbosity: 10})
			ctx := klog.NewContext(context.Background(), logger)
			handler := func(ctx context.Context, req any) (any, error) { return nil, nil }
			if _, err := instrument(ctx, c.req, &grpc.UnaryServerInfo{FullMethod: c.method}, handler); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			log := out.String()
			mu.Unlock()
			if strings.Contains(log, secret) {
				t.Errorf("the log shows a secret:\n%s", log)
			}
			if !strings.Contains(log, `"Call"`) || !strings.Contains(log, c.keep) {
				t.Errorf("the request is not logged at verbosity 5 (want %q in it):\n%s", c.keep, log)
			}
		})
	}
}
