package rpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/paddock-csi/paddock/pkg/quota"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errorDomain is the domain of the ErrorInfo detail the agent attaches to a quota error; its reason
// names the sentinel (one of the reasons of wireErrors).
const errorDomain = "quota.paddock-csi.io"

// wireErrors are package quota's errors on the wire: a code for any gRPC client, and a reason that
// tells the two NotFound apart and says the error is the agent's, not the transport's.
var wireErrors = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{quota.ErrInvalid, codes.InvalidArgument, "INVALID"},
	{quota.ErrNotOwned, codes.PermissionDenied, "NOT_OWNED"},
	{quota.ErrUnsupported, codes.FailedPrecondition, "UNSUPPORTED"},
	{quota.ErrNoProject, codes.NotFound, "NO_PROJECT"},
	{quota.ErrNotFound, codes.NotFound, "NOT_FOUND"},
	{quota.ErrExhausted, codes.ResourceExhausted, "EXHAUSTED"},
}

// toStatus is the server's one mapping from an error to what the client receives.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err // already a status (Unimplemented, PermissionDenied of authorize)
	}
	for _, w := range wireErrors {
		if errors.Is(err, w.err) {
			st := status.New(w.code, err.Error())
			if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: w.reason, Domain: errorDomain}); derr == nil {
				st = d
			}
			return st.Err()
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// fromStatus is the client's inverse of toStatus: the error wraps the quota sentinel the agent
// reported (by ErrorInfo reason), quota.ErrUnavailable when the agent could not be reached, or
// context.DeadlineExceeded/Canceled; status.Code still gives the gRPC code.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &callError{st: st}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			for _, w := range wireErrors {
				if w.reason == info.GetReason() {
					e.sentinel = w.err
				}
			}
		}
	}
	if e.sentinel == nil {
		switch st.Code() {
		case codes.Unavailable:
			e.sentinel = quota.ErrUnavailable
		case codes.DeadlineExceeded:
			e.sentinel = context.DeadlineExceeded
		case codes.Canceled:
			e.sentinel = context.Canceled
		}
	}
	return e
}

// callError is a failed call to the agent: errors.Is matches the quota sentinel it stands for (if any)
// and status.Code gives its gRPC code.
type callError struct {
	st       *status.Status
	sentinel error
}

func (e *callError) Error() string {
	if e.sentinel != nil {
		// The sentinel's words first: they say what happened ("quota agent unavailable") where the
		// status says how (the dial or handshake error).
		return fmt.Sprintf("%v (quota agent: %s: %s)", e.sentinel, e.st.Code(), e.st.Message())
	}
	return fmt.Sprintf("quota agent: %s: %s", e.st.Code(), e.st.Message())
}

func (e *callError) Unwrap() error { return e.sentinel }

// GRPCStatus makes status.FromError and status.Code see the agent's status.
func (e *callError) GRPCStatus() *status.Status { return e.st }
