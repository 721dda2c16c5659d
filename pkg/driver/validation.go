package driver

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// toStatus maps an error from the core to the gRPC code the CSI spec asks for, keeping the volume ID
// and the cause in the message so a person can act on it.
func toStatus(volID string, err error) error {
	if err == nil {
		return nil
	}
	// A quota agent's error carries the agent's gRPC status; the code a CSI caller gets is still
	// chosen here, from what it means (below), not passed through.
	if _, ok := status.FromError(err); ok && !isQuotaError(err) {
		return err // already chosen by the caller
	}
	var pe *volume.ParamError
	code := codes.Internal
	switch {
	case errors.As(err, &pe), errors.Is(err, volume.ErrMalformedID):
		code = codes.InvalidArgument
	case errors.Is(err, share.ErrExists), errors.Is(err, share.ErrIncompatible):
		code = codes.AlreadyExists
	case errors.Is(err, share.ErrUnsupported):
		code = codes.InvalidArgument
	case errors.Is(err, share.ErrSourceNotFound), errors.Is(err, share.ErrSnapshotNotFound):
		code = codes.NotFound
	case errors.Is(err, quota.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, quota.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, quota.ErrNotOwned), errors.Is(err, quota.ErrUnsupported):
		code = codes.FailedPrecondition // the class names an agent that cannot limit this export
	case errors.Is(err, quota.ErrNotFound), errors.Is(err, quota.ErrNoProject):
		code = codes.NotFound
	case errors.Is(err, quota.ErrExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		code = codes.ResourceExhausted
	case errors.Is(err, share.ErrConflict), errors.Is(err, share.ErrNotDir), errors.Is(err, share.ErrRootSquashed),
		errors.Is(err, share.ErrInUse):
		code = codes.FailedPrecondition
	case errors.Is(err, share.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, mount.ErrBusy):
		code = codes.Unavailable
	case errors.Is(err, share.ErrInProgress):
		code = codes.Aborted
	case errors.Is(err, mount.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, fmt.Sprintf("volume %s: %v", volID, err))
}

func isQuotaError(err error) bool {
	for _, q := range []error{quota.ErrUnavailable, quota.ErrInvalid, quota.ErrNotOwned, quota.ErrUnsupported,
		quota.ErrNotFound, quota.ErrNoProject, quota.ErrExhausted} {
		if errors.Is(err, q) {
			return true
		}
	}
	return false
}

func invalid(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}
