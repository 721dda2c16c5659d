package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// NodeGetStorageHealth probes the servers of Paddock's own NFS mounts only: a mount the plugin made,
// or one under kubelet's directory for this driver; the node's other NFS mounts are not its business.
func TestNodeGetStorageHealth(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	dir := t.TempDir()
	mine := filepath.Join(dir, "staging")
	kubelet := filepath.Join(dir, "plugins", "kubernetes.io", "csi", DefaultName, "abc", "globalmount")
	foreign := filepath.Join(dir, "not-ours")
	broken := filepath.Join(dir, "broken")
	for _, d := range []string{mine, kubelet, foreign} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A "mount" whose path is a dangling symlink loop: statfs fails with ELOOP, a server-side
	// problem in this picture (degraded), unlike a stale handle.
	if err := os.Symlink(broken, broken); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(dir, "mountinfo")
	line := func(n int, mp, src string) string {
		return fmt.Sprintf("%d 1 0:%d / %s rw,relatime shared:1 - nfs4 %s rw,vers=4.2\n", n, n, mp, src)
	}
	write := func(s string) {
		if err := os.WriteFile(table, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := mountInfoPath
	mountInfoPath = table
	t.Cleanup(func() { mountInfoPath = old })

	h.d().mounts.add(mine)
	write(line(40, mine, "nfs1:/a/pvc-1") + line(41, kubelet, "nfs2:/b/pvc-2") + line(42, foreign, "nfs3:/c"))
	resp, err := h.node.NodeGetStorageHealth(ctx, &csi.NodeGetStorageHealthRequest{})
	if err != nil || len(resp.GetBackendHealth()) != 0 {
		t.Fatalf("healthy servers: %v, %v", resp, err)
	}
	h.d().mounts.add(broken)
	write(line(40, mine, "nfs1:/a/pvc-1") + line(43, broken, "nfs4:/d/pvc-4") + line(42, foreign, "nfs3:/c"))
	resp, err = h.node.NodeGetStorageHealth(ctx, &csi.NodeGetStorageHealthRequest{})
	if err != nil || len(resp.GetBackendHealth()) != 1 {
		t.Fatalf("one degraded server: %v, %v", resp, err)
	}
	e := resp.GetBackendHealth()[0]
	if e.GetStatus() != csi.StorageHealthErrorType_STORAGE_DEGRADED || e.GetReason() != "StatfsFailed" {
		t.Errorf("entry %v", e)
	}
	// A server with an earlier probe still stuck is unreachable at once.
	h.d().mounts.mu.Lock()
	h.d().mounts.probing["nfs1"] = true
	h.d().mounts.mu.Unlock()
	resp, err = h.node.NodeGetStorageHealth(ctx, &csi.NodeGetStorageHealthRequest{})
	if err != nil || len(resp.GetBackendHealth()) != 2 || resp.GetBackendHealth()[0].GetReason() != "ServerNotResponding" ||
		resp.GetBackendHealth()[0].GetStatus() != csi.StorageHealthErrorType_STORAGE_UNREACHABLE {
		t.Fatalf("stuck probe: %v, %v", resp, err)
	}
}
