package share

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-csi/paddock/pkg/volume"
)

func TestPublicationsRecord(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, volume.MetaDir), 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v := volume.Volume{Server: "nfs", Share: "/srv", SubDir: "a", Name: "pvc-a", OnDelete: volume.OnDeleteDelete}
	pubs := []Publication{{Node: "node 1/odd=name", ReadOnly: true, Mode: "SINGLE_NODE_WRITER"}, {Node: "n2", Mode: "MULTI_NODE_MULTI_WRITER"}}
	if err := writePublications(r, v, pubs); err != nil {
		t.Fatal(err)
	}
	got, err := readPublications(r, v)
	if err != nil || len(got) != 2 || got[0] != pubs[0] || got[1] != pubs[1] {
		t.Fatalf("read back %v, %v", got, err)
	}
	// Another volume at the same directory (deleted and re-created under another ID) does not
	// inherit the record.
	w := v
	w.Name = "pvc-b"
	if got, err := readPublications(r, w); err != nil || len(got) != 0 {
		t.Errorf("other volume sees %v, %v", got, err)
	}
	// The last unpublish removes the file.
	if err := writePublications(r, v, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, publicationsPath(v.SubDir))); !os.IsNotExist(err) {
		t.Errorf("record left: %v", err)
	}
	// A corrupt record is an error, not "unpublished".
	if err := os.WriteFile(filepath.Join(dir, publicationsPath(v.SubDir)), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readPublications(r, v); err == nil {
		t.Error("corrupt record read as valid")
	}
	// A symlink where the publications directory should be is refused.
	if err := os.RemoveAll(filepath.Join(dir, publicationsDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/tmp", filepath.Join(dir, publicationsDir)); err != nil {
		t.Fatal(err)
	}
	if err := writePublications(r, v, pubs); err == nil {
		t.Error("wrote through a symlinked publications directory")
	}
}
