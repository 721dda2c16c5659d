package share

import (
	"context"
	"errors"
	"testing"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// The capacity hooks (package quota) run under the volume's lock, on every call, and only for the
// volume the call names: a failing limit fails the call, a forged delete never releases anyone's.
func TestEnforceRunsOnEveryCreateAndFailsIt(t *testing.T) {
	e := newEnv(t, nil)
	v := vol("pvc-q", "pvc-q", volume.OnDeleteDelete)
	calls, fail := 0, true
	o := defaultOpts()
	o.Capacity = 10
	o.Enforce = func(_ context.Context, capacity int64) error {
		if capacity < 10 {
			t.Errorf("Enforce got capacity %d, want the recorded one (at least 10)", capacity)
		}
		calls++
		if fail {
			return errors.New("agent down")
		}
		return nil
	}
	if _, err := e.ws.Create(context.Background(), v, o); err == nil || calls != 1 {
		t.Fatalf("Create with a failing limit = %v after %d calls, want its error after 1", err, calls)
	}
	fail = false
	for i := 2; i <= 3; i++ { // the retry, then a repeat: both apply the limit again
		if _, err := e.ws.Create(context.Background(), v, o); err != nil || calls != i {
			t.Fatalf("Create #%d = %v after %d calls", i, err, calls)
		}
	}
	fail = true
	if err := e.ws.SetCapacity(context.Background(), v, 20, o.Enforce); err == nil {
		t.Fatal("SetCapacity with a failing limit succeeded")
	}
	fail = false
	if err := e.ws.SetCapacity(context.Background(), v, 20, o.Enforce); err != nil || calls != 5 {
		t.Fatalf("SetCapacity retry = %v after %d calls, want success after 5 (the claim already said 20)", err, calls)
	}
}

func TestDeleteWithReleasesOnlyItsOwnVolumeBeforeItMoves(t *testing.T) {
	e := newEnv(t, nil)
	owner := vol("pvc-owner", "shared", volume.OnDeleteDelete)
	e.create(owner, defaultOpts())
	e.write("shared/data", "x")
	released := 0
	release := func(context.Context) error {
		released++
		if !exists(e.path("shared/data")) {
			t.Error("released after the directory left its place")
		}
		return errors.New("agent down")
	}
	// A forged ID: another name at the owner's subDir. Nothing is released, nothing moves.
	if err := e.ws.DeleteWith(context.Background(), vol("pvc-forged", "shared", volume.OnDeleteDelete), release); err != nil || released != 0 {
		t.Fatalf("forged DeleteWith = %v, released %d times", err, released)
	}
	// Retain keeps the directory, so it keeps its limit.
	retained := vol("pvc-kept", "kept", volume.OnDeleteRetain)
	e.create(retained, defaultOpts())
	if err := e.ws.DeleteWith(context.Background(), retained, release); err != nil || released != 0 {
		t.Fatalf("retain DeleteWith = %v, released %d times", err, released)
	}
	// A failing release fails the delete and leaves the volume in place for the retry.
	if err := e.ws.DeleteWith(context.Background(), owner, release); err == nil || released != 1 || !exists(e.path("shared/data")) {
		t.Fatalf("DeleteWith with a failing release = %v (released %d), data present %v", err, released, exists(e.path("shared/data")))
	}
	if err := e.ws.DeleteWith(context.Background(), owner, func(context.Context) error { released++; return nil }); err != nil || released != 2 || exists(e.path("shared")) {
		t.Fatalf("DeleteWith retry = %v (released %d), directory present %v", err, released, exists(e.path("shared")))
	}
}
