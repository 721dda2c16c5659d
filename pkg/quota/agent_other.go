//go:build !linux

package quota

import "errors"

// IDRange is the inclusive range of project IDs an agent hands out.
type IDRange struct{ First, Last uint32 }

// DefaultIDRange matches the Linux build.
var DefaultIDRange = IDRange{First: 1 << 20, Last: 1<<31 - 1}

// ParseIDRange is only meaningful where the agent runs.
func ParseIDRange(string) (IDRange, error) {
	return IDRange{}, errors.New("the quota agent runs on Linux only")
}

// Agent is Linux-only: project quotas are set with Linux's fsxattr ioctls and quotactl_fd.
type Agent struct{}

// NewAgent refuses: see Agent.
func NewAgent([]string, IDRange) (*Agent, error) {
	return nil, errors.New("the quota agent runs on Linux only")
}
