// Package quota is Paddock's enforced capacity: every volume directory of an enforcing class gets a
// filesystem project of its own on the NFS server, with a hard limit equal to the claim's capacity.
// Setting a project quota needs root on the server, so the limits are set by a small agent running
// there (paddock --mode=quota-agent); the controller reaches it over mutual TLS (package rpc).
//
// This file is the contract both sides share: what names a volume's directory, what a limit and a
// usage are, and the errors. The XFS implementation lives in xfs.go (the agent's side); the gRPC
// client in rpc implements the same Quotas interface for the controller.
package quota

import (
	"context"
	"errors"
)

// Target names one volume directory on the server: the export as NFS clients mount it (the
// StorageClass's share) and the directory's path relative to it (the volume's subDir). The agent
// resolves it beneath one of the export roots it was configured with, never following a symlink.
type Target struct {
	Export string // absolute export path, as in the volume ID
	Path   string // relative path of the volume directory below Export; never empty
}

// Limit is a hard limit; zero means "no limit" for that dimension.
type Limit struct {
	Bytes  uint64
	Inodes uint64
}

// Usage is what a volume's project uses and may use.
type Usage struct {
	ProjectID uint32
	Bytes     uint64
	Inodes    uint64
	Limit     Limit
}

// Capacity describes the filesystem an export lives on, from the project quotas' point of view.
type Capacity struct {
	TotalBytes     uint64 // size of the filesystem
	FreeBytes      uint64 // not used by any file (statfs)
	AllocatedBytes uint64 // sum of the hard byte limits of the live projects the agent set up
}

// Quotas is what the controller needs from an agent. Every method is idempotent: a retry after a
// lost reply, or after the agent restarted, finds and reuses what the first attempt did.
type Quotas interface {
	// Set gives the directory its own project (allocating one on first call) and sets its hard
	// limit to l, raising or lowering an existing one. It returns the project's usage after.
	Set(ctx context.Context, t Target, l Limit) (Usage, error)
	// Release removes the directory's limit and frees its project ID for reuse once no file
	// carries it any more. Releasing a directory without a project, or a missing one, is success.
	Release(ctx context.Context, t Target) error
	// Usage reports the directory's project usage; ErrNoProject if the agent never set it up.
	Usage(ctx context.Context, t Target) (Usage, error)
	// Capacity reports the filesystem holding export.
	Capacity(ctx context.Context, export string) (Capacity, error)
}

var (
	// ErrNoProject: the directory has no project this agent set up.
	ErrNoProject = errors.New("no project quota set up for this directory")
	// ErrNotOwned: the export is not beneath any root the agent was configured to own.
	ErrNotOwned = errors.New("export is not owned by this quota agent")
	// ErrUnsupported: the filesystem cannot enforce project quotas (not XFS, or mounted without prjquota).
	ErrUnsupported = errors.New("filesystem does not enforce project quotas")
	// ErrNotFound: the directory does not exist.
	ErrNotFound = errors.New("directory not found")
	// ErrExhausted: every project ID of the configured range is in use.
	ErrExhausted = errors.New("no free project ID in the configured range")
	// ErrInvalid: a malformed target (absolute or escaping path, empty field).
	ErrInvalid = errors.New("invalid quota target")
	// ErrUnavailable: the agent could not be reached (down, unreachable, or the TLS handshake
	// failed). The call may or may not have taken effect; every method is idempotent, so retry later.
	ErrUnavailable = errors.New("quota agent unavailable")
)
