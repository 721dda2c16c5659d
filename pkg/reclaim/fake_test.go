package reclaim

import (
	"context"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/share"
)

const (
	testServer = "nfs.example.com"
	testShare  = "/srv/nfs"
)

// newWorkspace returns a workspace whose export testServer:testShare is the returned local directory.
func newWorkspace(t *testing.T) (*share.Workspace, string) {
	t.Helper()
	export := t.TempDir()
	m := mounttest.New()
	m.AddExport(mount.Source(testServer, testShare), export)
	ws, err := share.New(share.Config{WorkDir: t.TempDir(), FSTimeout: 5 * time.Second, IdleTimeout: time.Hour,
		TrashGrace: time.Hour, Mounter: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close(context.Background()) })
	return ws, export
}
