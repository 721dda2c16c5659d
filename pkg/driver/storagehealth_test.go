package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// Several servers probed at once, some of them hung: verdicts from the parallel probes and from the
// servers whose earlier probe is still stuck are gathered without a data race (this fails under -race
// when the stuck-probe branch appends without the lock), a hung server stays unreachable until it
// answers again, and the others are reported as they are.
func TestNodeGetStorageHealthHungServers(t *testing.T) {
	n, _, hfs := testNode(t, 100*time.Millisecond, 4)
	dir := t.TempDir()
	hung := []string{"hung-1", "hung-2", "hung-3"}
	failing := []string{"eio-1", "eio-2", "eio-3"}
	healthy := []string{"ok-1", "ok-2"}
	var table strings.Builder
	for i, s := range append(append(append([]string{}, hung...), failing...), healthy...) {
		mp := filepath.Join(dir, s, "staging")
		if err := os.MkdirAll(mp, 0o755); err != nil {
			t.Fatal(err)
		}
		n.d.mounts.add(mp)
		fmt.Fprintf(&table, "%d 1 0:%d / %s rw,relatime shared:1 - nfs4 %s:/export/pvc-%d rw,vers=4.2\n", 40+i, 40+i, mp, s, i)
		switch {
		case strings.HasPrefix(s, "hung"):
			hfs.hung = append(hfs.hung, mp)
		case strings.HasPrefix(s, "eio"):
			hfs.failing[mp] = syscall.EIO
		}
	}
	p := filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(p, []byte(table.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	old := mountInfoPath
	mountInfoPath = p
	t.Cleanup(func() { mountInfoPath = old })

	check := func(round string, wantUnreachable bool) {
		t.Helper()
		resp, err := n.NodeGetStorageHealth(context.Background(), &csi.NodeGetStorageHealthRequest{})
		if err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		var unreachable, degraded string
		for _, e := range resp.GetBackendHealth() {
			switch {
			case e.GetStatus() == csi.StorageHealthErrorType_STORAGE_UNREACHABLE && e.GetReason() == "ServerNotResponding":
				unreachable = e.GetMessage()
			case e.GetStatus() == csi.StorageHealthErrorType_STORAGE_DEGRADED && e.GetReason() == "StatfsFailed":
				degraded = e.GetMessage()
			default:
				t.Errorf("%s: unexpected entry %v", round, e)
			}
		}
		if len(resp.GetBackendHealth()) != map[bool]int{true: 2, false: 1}[wantUnreachable] {
			t.Errorf("%s: %d entries, want one per (status, reason): %v", round, len(resp.GetBackendHealth()), resp)
		}
		for _, s := range hung {
			if strings.Contains(unreachable, s+":") != wantUnreachable {
				t.Errorf("%s: unreachable entry %q, %s in it: want %v", round, unreachable, s, wantUnreachable)
			}
		}
		for _, s := range failing {
			if !strings.Contains(degraded, s+":") {
				t.Errorf("%s: degraded entry %q does not name %s", round, degraded, s)
			}
		}
		for _, s := range healthy {
			if strings.Contains(unreachable+degraded, s+":") {
				t.Errorf("%s: healthy server %s reported: %v", round, s, resp)
			}
		}
	}
	// The first round's probes of the hung servers time out and stay stuck; the later rounds find them
	// still probing while the failing servers' probes report in parallel.
	for i := range 6 {
		check(fmt.Sprintf("round %d", i), true)
	}
	if got := n.d.limiter.Stuck("hung-1"); got != 1 {
		t.Errorf("Stuck(hung-1) = %d, want 1 (one probe per server at a time)", got)
	}

	// The servers answer again: once their probes have returned, nothing is unreachable.
	hfs.unhang()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.d.mounts.mu.Lock()
		probing := len(n.d.mounts.probing)
		n.d.mounts.mu.Unlock()
		if probing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d probes still marked stuck after the servers came back", probing)
		}
		time.Sleep(time.Millisecond)
	}
	check("after recovery", false)
}
