//go:build e2e

package node

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// csi-sanity v5.6.0 ships its ListVolumes pagination-under-change spec disabled (XIt: "fragile" for
// index-based tokens), so it is its one pending spec. Paddock's tokens are the last volume ID of a
// page, so the scenario is well defined here and this test runs it against the real export: list a
// page, delete every volume on it, create a new one, continue from the token. The rest of the listing
// must come back without error, with no duplicate and no deleted volume, and with every volume that
// existed throughout and sorts after the token.
func TestListVolumesPaginationAcrossChanges(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	var mine []string
	for i := 0; i < 5; i++ {
		mine = append(mine, createVolume(t, p.Controller, uniq(fmt.Sprintf("page%d", i)), class(exportA)).GetVolumeId())
	}
	t.Cleanup(func() {
		for _, id := range mine {
			_, _ = p.Controller.DeleteVolume(ctxT(t, time.Minute), &csi.DeleteVolumeRequest{VolumeId: id})
		}
	})
	all := listAll(t, p.Controller)
	for _, id := range mine {
		if !all[id] {
			t.Fatalf("ListVolumes without a limit lacks %s", id)
		}
	}

	first, err := p.Controller.ListVolumes(ctxT(t, time.Minute), &csi.ListVolumesRequest{MaxEntries: 2})
	if err != nil {
		t.Fatalf("ListVolumes page 1: %v", err)
	}
	if len(first.GetEntries()) != 2 || first.GetNextToken() == "" {
		t.Fatalf("page 1: %d entries, next token %q; want 2 and a token", len(first.GetEntries()), first.GetNextToken())
	}
	deleted := map[string]bool{}
	for _, e := range first.GetEntries() {
		id := e.GetVolume().GetVolumeId()
		deleteVolume(t, p.Controller, id)
		deleted[id] = true
	}
	added := createVolume(t, p.Controller, uniq("page-new"), class(exportA)).GetVolumeId()
	mine = append(mine, added)

	seen := map[string]bool{}
	token := first.GetNextToken()
	for pages := 0; ; pages++ {
		if pages > len(all)+2 {
			t.Fatalf("pagination did not end after %d pages", pages)
		}
		resp, err := p.Controller.ListVolumes(ctxT(t, time.Minute), &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatalf("ListVolumes from token %q (its volume was deleted): %v", token, err)
		}
		for _, e := range resp.GetEntries() {
			id := e.GetVolume().GetVolumeId()
			if seen[id] {
				t.Errorf("volume %s listed twice", id)
			}
			if deleted[id] {
				t.Errorf("deleted volume %s listed", id)
			}
			seen[id] = true
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	var missing []string
	for id := range all {
		if !deleted[id] && id > first.GetNextToken() && !seen[id] {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("volumes present throughout, after the token, not listed: %v", missing)
	}
	if added > first.GetNextToken() && !seen[added] {
		t.Errorf("the volume created between pages (%s) sorts after the token but was not listed", added)
	}
}

// listAll lists every volume in one unlimited call (following any token the plugin still returns).
func listAll(t *testing.T, c csi.ControllerClient) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	token := ""
	for {
		resp, err := c.ListVolumes(ctxT(t, time.Minute), &csi.ListVolumesRequest{StartingToken: token})
		if err != nil {
			t.Fatalf("ListVolumes: %v", err)
		}
		for _, e := range resp.GetEntries() {
			ids[e.GetVolume().GetVolumeId()] = true
		}
		if token = resp.GetNextToken(); token == "" {
			return ids
		}
	}
}
