package share

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// staticVol is the volume the recycler scrubs for a hand-made PV whose directory is subDir.
func staticVol(t *testing.T, subDir string) volume.Volume {
	t.Helper()
	v, err := volume.FromContext("handle-of-"+subDir, map[string]string{
		volume.ParamServer: testServer, volume.ParamShare: testShare, volume.ParamSubDir: subDir})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// legacyStaticVol is the volume release 0.1.0 scrubbed for the same PV: every static volume was named
// volume.LegacyStaticName.
func legacyStaticVol(subDir string) volume.Volume {
	return vol(volume.LegacyStaticName, subDir, volume.OnDeleteRetain)
}

// nameEntryOf reads .paddock/names/<name>: the subDir it records, or "" when there is none.
func (e *env) nameEntryOf(name string) string {
	e.t.Helper()
	t, err := os.Readlink(e.path(namesDir + "/" + name))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return t
}

// Any number of static Recycle PVs on one export recycle, again and again, also on an export that
// release 0.1.0 recycled static PVs on (it named every static volume "static" and recorded that name
// for the first directory, so every other static directory of the export failed with "volume static
// exists with different arguments").
func TestScrubStaticVolumes(t *testing.T) {
	tests := []struct {
		name string
		// before is what 0.1.0 left on the export (the directories exist and hold files).
		before func(t *testing.T, e *env)
		dirs   []string
		// legacy are the directories whose claim keeps 0.1.0's name.
		legacy []string
	}{
		{name: "two static directories", dirs: []string{"scratch-a", "scratch-b"}},
		{name: "several, nested and side by side", dirs: []string{"a", "team/b", "team/c", "d/e/f"}},
		{name: "upgrade: 0.1.0 recycled the first", dirs: []string{"scratch-a", "scratch-b"}, legacy: []string{"scratch-a"},
			before: func(t *testing.T, e *env) {
				if err := e.ws.Scrub(context.Background(), legacyStaticVol("scratch-a")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "upgrade: 0.1.0 recycled the first, the second failed", dirs: []string{"scratch-a", "scratch-b"}, legacy: []string{"scratch-a"},
			before: func(t *testing.T, e *env) {
				if err := e.ws.Scrub(context.Background(), legacyStaticVol("scratch-a")); err != nil {
					t.Fatal(err)
				}
				err := e.ws.Scrub(context.Background(), legacyStaticVol("scratch-b"))
				if !errors.Is(err, ErrIncompatible) {
					t.Fatalf("0.1.0's scrub of a second static directory = %v, want the bug it had (ErrIncompatible)", err)
				}
			}},
		{name: "upgrade: 0.1.0 stopped between the name entry and the claim", dirs: []string{"scratch-a", "scratch-b"},
			before: func(t *testing.T, e *env) {
				if err := e.ws.Scrub(context.Background(), legacyStaticVol("scratch-a")); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(e.path(claimPath("scratch-a"))); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			for _, d := range tc.dirs {
				e.write(d+"/old", "before")
			}
			if tc.before != nil {
				tc.before(t, e)
			}
			for round := range 3 {
				for i := range tc.dirs {
					d := tc.dirs[i]
					if round%2 == 1 { // the other order too: no directory is special for being first
						d = tc.dirs[len(tc.dirs)-1-i]
					}
					e.write(d+"/data", fmt.Sprintf("round %d", round))
					if err := e.ws.Scrub(context.Background(), staticVol(t, d)); err != nil {
						t.Fatalf("round %d: Scrub of static %q = %v", round, d, err)
					}
					if left := e.entries(d); len(left) != 0 {
						t.Fatalf("round %d: %q after Scrub holds %v", round, d, left)
					}
				}
			}
			for _, d := range tc.dirs {
				want := volume.StaticName(d)
				for _, l := range tc.legacy {
					if l == d {
						want = volume.LegacyStaticName // honoured as it is, not renamed
					}
				}
				c, err := e.claimOf(d)
				if err != nil || c.Name != want || c.State != stateReady || !c.Adopted || c.OnDelete != volume.OnDeleteRetain {
					t.Errorf("claim of %q = %+v, %v; want a ready adopted retain claim of %s", d, c, err, want)
				}
				if want != volume.LegacyStaticName {
					if got := e.nameEntryOf(want); got != "subdir="+d {
						t.Errorf("name entry of %q = %q, want it to record %q", want, got, d)
					}
				}
			}
			// No volume can be made inside a scrubbed static directory, whatever its claim's name.
			for _, d := range tc.dirs {
				_, err := e.ws.Create(context.Background(), vol("pvc-in", d+"/pvc-in", volume.OnDeleteDelete), defaultOpts())
				if !errors.Is(err, ErrConflict) {
					t.Errorf("Create inside static %q = %v, want ErrConflict", d, err)
				}
			}
		})
	}
}

// A claim 0.1.0 wrote for a static volume is honoured only for the static volume of its own directory:
// not for a provisioned volume, nor for a static volume name of another directory.
func TestScrubLegacyStaticClaimRefusals(t *testing.T) {
	e := newEnv(t, nil)
	e.write("scratch/f", "static data")
	if err := e.ws.Scrub(context.Background(), legacyStaticVol("scratch")); err != nil {
		t.Fatal(err)
	}
	e.write("scratch/f", "static data")
	for _, v := range []volume.Volume{
		vol("pvc-1", "scratch", volume.OnDeleteDelete),
		vol(volume.StaticName("other"), "scratch", volume.OnDeleteRetain),
	} {
		if err := e.ws.Scrub(context.Background(), v); !errors.Is(err, ErrConflict) {
			t.Errorf("Scrub of %q as volume %s = %v, want ErrConflict", v.SubDir, v.Name, err)
		}
	}
	if got := e.entries("scratch"); len(got) != 1 {
		t.Errorf("refused scrubs changed the directory: %v", got)
	}
	// A static PV at a provisioned volume's directory is refused, as before.
	e.create(vol("pvc-2", "pvc-2", volume.OnDeleteDelete), defaultOpts())
	e.write("pvc-2/f", "tenant")
	if err := e.ws.Scrub(context.Background(), staticVol(t, "pvc-2")); !errors.Is(err, ErrConflict) {
		t.Errorf("Scrub of a provisioned volume's directory as a static one = %v, want ErrConflict", err)
	}
	if got := e.entries("pvc-2"); len(got) != 1 {
		t.Errorf("refused scrub changed the provisioned volume: %v", got)
	}
}

// A static scrub that stopped after its name entry, or after its claim, is finished by the retry: the
// name is the same on every call.
func TestScrubStaticRetry(t *testing.T) {
	e := newEnv(t, nil)
	for _, d := range []string{"a", "b"} {
		e.write(d+"/f", "x")
		if err := e.ws.Scrub(context.Background(), staticVol(t, d)); err != nil {
			t.Fatal(err)
		}
	}
	// a: the claim lost (a crash between the name entry and the claim); b: a crash after the claim,
	// before the scrub (the claim stays).
	if err := os.Remove(e.path(claimPath("a"))); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b"} {
		e.write(d+"/f", "y")
		if err := e.ws.Scrub(context.Background(), staticVol(t, d)); err != nil {
			t.Fatalf("retried Scrub of %q = %v", d, err)
		}
		if got := e.entries(d); len(got) != 0 {
			t.Errorf("%q after the retry holds %v", d, got)
		}
		if c, err := e.claimOf(d); err != nil || c.Name != volume.StaticName(d) {
			t.Errorf("claim of %q = %+v, %v", d, c, err)
		}
	}
}
