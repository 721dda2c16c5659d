package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	mountutils "k8s.io/mount-utils"

	"github.com/paddock-csi/paddock/pkg/mount"
)

// mountSet remembers the staging and target paths this process mounted, so NodeGetStorageHealth can
// tell Paddock's NFS mounts from the node's others.
type mountSet struct {
	mu sync.Mutex
	m  map[string]struct{}
	// probing holds the servers whose last probe is still stuck in the kernel: a dead server is not
	// probed again (one more goroutine each call) until that probe returns.
	probing map[string]bool
}

func newMountSet() *mountSet {
	return &mountSet{m: map[string]struct{}{}, probing: map[string]bool{}}
}

func (s *mountSet) add(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[filepath.Clean(p)] = struct{}{}
}

func (s *mountSet) remove(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, filepath.Clean(p))
}

func (s *mountSet) has(p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[filepath.Clean(p)]
	return ok
}

// verdict is NodeGetStorageHealth's finding about one server.
type verdict struct {
	server, reason, msg string
	status              csi.StorageHealthErrorType
}

// probe statfs-es target, one of server's mounts, within --fs-timeout and one of the server's slots
// of the node's limiter, and says what is wrong with the server (nil: nothing). The server stays
// marked as probing until the statfs really returns, or at once if it never started.
func (n *node) probe(ctx context.Context, server, target string) *verdict {
	tctx, cancel := context.WithTimeout(ctx, n.d.opts.FSTimeout)
	defer cancel()
	doneProbing := func() {
		n.d.mounts.mu.Lock()
		delete(n.d.mounts.probing, server)
		n.d.mounts.mu.Unlock()
	}
	var err error
	slot, aerr := n.d.limiter.Acquire(tctx, server)
	if aerr != nil {
		doneProbing()
		err = fmt.Errorf("statfs %s: %w", target, aerr)
		if !errors.Is(aerr, mount.ErrBusy) {
			err = fmt.Errorf("statfs %s: %w after %v: %w", target, mount.ErrTimeout, n.d.opts.FSTimeout, aerr)
		}
	} else {
		done := make(chan error, 1)
		go func() {
			_, err := n.d.fs.statfs(target) // may hang on a dead server: bounded below, not here
			slot.Release()
			doneProbing()
			done <- err
		}()
		select {
		case err = <-done:
		case <-tctx.Done():
			slot.Overran()
			err = fmt.Errorf("statfs %s: %w after %v", target, mount.ErrTimeout, n.d.opts.FSTimeout)
		}
	}
	switch {
	case err == nil, mount.IsStale(err), errors.Is(err, os.ErrNotExist):
		return nil
	case errors.Is(err, mount.ErrTimeout), errors.Is(err, mount.ErrBusy):
		return &verdict{server, "ServerNotResponding", server + ": " + err.Error(), csi.StorageHealthErrorType_STORAGE_UNREACHABLE}
	default:
		return &verdict{server, "StatfsFailed", server + ": " + err.Error(), csi.StorageHealthErrorType_STORAGE_DEGRADED}
	}
}

// mountInfoPath is read by NodeGetStorageHealth; tests point it at a file of their own.
var mountInfoPath = "/proc/self/mountinfo"

// paddockMounts lists the NFS mounts on this node that belong to this driver, grouped by server: the
// ones this process made, and those under kubelet's CSI directories for this driver (which survive a
// restart of the plugin): .../plugins/kubernetes.io/csi/<driver>/... for staging paths.
func (n *node) paddockMounts() (map[string][]string, error) {
	infos, err := mountutils.ParseMountInfo(mountInfoPath)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	kubelet := "/kubernetes.io/csi/" + n.d.opts.Name + "/"
	byServer := map[string][]string{}
	for _, mi := range infos {
		if !strings.HasPrefix(mi.FsType, "nfs") {
			continue
		}
		if !n.d.mounts.has(mi.MountPoint) && !strings.Contains(mi.MountPoint, kubelet) {
			continue
		}
		server, _, ok := strings.Cut(mi.Source, ":/")
		if !ok || server == "" {
			continue
		}
		byServer[server] = append(byServer[server], mi.MountPoint)
	}
	return byServer, nil
}

// NodeGetStorageHealth reports, from this node, the health of the NFS servers its Paddock volumes are
// mounted from. Each server is probed with one statfs of one of its mounts within --fs-timeout, all
// servers at once: a server that does not answer is STORAGE_UNREACHABLE (ServerNotResponding), one
// whose mount answers with an error other than a stale handle is STORAGE_DEGRADED (StatfsFailed). A
// stale handle concerns one volume, not the server, and is reported by NodeGetVolumeHealth instead; so
// is a server reachable through some mounts only. One entry per (status, reason), naming the servers;
// no entries means every server answered. A node with no Paddock mounts has nothing to report.
func (n *node) NodeGetStorageHealth(ctx context.Context, _ *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	byServer, err := n.paddockMounts()
	if err != nil {
		return nil, toStatus("", err)
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		bad []verdict
	)
	add := func(v verdict) {
		mu.Lock()
		defer mu.Unlock()
		bad = append(bad, v)
	}
	for server, mps := range byServer {
		sort.Strings(mps)
		target := mps[0]
		n.d.mounts.mu.Lock()
		busy := n.d.mounts.probing[server]
		if !busy {
			n.d.mounts.probing[server] = true
		}
		n.d.mounts.mu.Unlock()
		if busy {
			// Probes of other servers started above may be adding their verdicts already.
			add(verdict{server, "ServerNotResponding", fmt.Sprintf("%s: an earlier probe of %s has not returned (%d calls to this server stuck past their deadline)",
				server, target, n.d.limiter.Stuck(server)), csi.StorageHealthErrorType_STORAGE_UNREACHABLE})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v := n.probe(ctx, server, target); v != nil {
				add(*v)
			}
		}()
	}
	wg.Wait()
	// One entry per (status, reason), as the spec asks, naming every server concerned.
	sort.Slice(bad, func(i, j int) bool { return bad[i].server < bad[j].server })
	resp := &csi.NodeGetStorageHealthResponse{}
	index := map[string]*csi.NodeGetStorageHealthResponse_StorageBackendHealth{}
	for _, b := range bad {
		key := b.status.String() + "/" + b.reason
		if e, ok := index[key]; ok {
			e.Message += "; " + b.msg
			continue
		}
		e := &csi.NodeGetStorageHealthResponse_StorageBackendHealth{Status: b.status, Reason: b.reason, Message: b.msg}
		index[key] = e
		resp.BackendHealth = append(resp.BackendHealth, e)
	}
	slices.SortFunc(resp.BackendHealth, func(a, b *csi.NodeGetStorageHealthResponse_StorageBackendHealth) int {
		return strings.Compare(a.Reason, b.Reason)
	})
	return resp, nil
}
