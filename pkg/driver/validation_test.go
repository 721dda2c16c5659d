package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// TestToStatus pins the CSI code chosen for each error the core returns; the external
// provisioner retries some codes and gives up on others, so a change here changes behaviour.
func TestToStatus(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("create %q: %w", "pvc-1", err) }
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"param", wrap(&volume.ParamError{Key: "mode", Reason: "not octal"}), codes.InvalidArgument},
		{"malformed id", wrap(volume.ErrMalformedID), codes.InvalidArgument},
		{"exists", wrap(share.ErrExists), codes.AlreadyExists},
		{"incompatible", wrap(share.ErrIncompatible), codes.AlreadyExists},
		{"unsupported", wrap(share.ErrUnsupported), codes.InvalidArgument},
		{"source", wrap(share.ErrSourceNotFound), codes.NotFound},
		{"snapshot", wrap(share.ErrSnapshotNotFound), codes.NotFound},
		{"no space", wrap(syscall.ENOSPC), codes.ResourceExhausted},
		{"quota", wrap(syscall.EDQUOT), codes.ResourceExhausted},
		{"conflict", wrap(share.ErrConflict), codes.FailedPrecondition},
		{"not dir", wrap(share.ErrNotDir), codes.FailedPrecondition},
		{"root squash", wrap(share.ErrRootSquashed), codes.FailedPrecondition},
		{"not found", wrap(share.ErrNotFound), codes.NotFound},
		{"server busy", wrap(fmt.Errorf("statfs /t: NFS server s has 16 calls stuck: %w", mount.ErrBusy)), codes.Unavailable},
		{"volume in use", wrap(share.ErrInUse), codes.FailedPrecondition},
		{"operation in progress (lock wait ran out)", wrap(fmt.Errorf("delete a: %w (waited until: %w)", share.ErrInProgress, context.DeadlineExceeded)), codes.Aborted},
		{"mount timeout", wrap(mount.ErrTimeout), codes.DeadlineExceeded},
		{"deadline", wrap(context.DeadlineExceeded), codes.DeadlineExceeded},
		{"canceled", wrap(context.Canceled), codes.Canceled},
		{"other", errors.New("EIO"), codes.Internal},
		{"chosen", status.Error(codes.Aborted, "busy"), codes.Aborted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := toStatus("vol-7", tc.err)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code = %v, want %v (%v)", got, tc.want, err)
			}
			if tc.want != codes.Aborted && !strings.Contains(err.Error(), "vol-7") {
				t.Fatalf("message %q does not name the volume", err)
			}
		})
	}
	if toStatus("v", nil) != nil {
		t.Fatal("toStatus(nil) != nil")
	}
}
