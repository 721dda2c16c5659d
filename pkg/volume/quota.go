package volume

import (
	"fmt"
	"net"
	"strconv"
)

// StorageClass parameters of enforced capacity (package quota): a class with quota=enforce gives every
// volume an XFS project quota as large as its claim, set by the quota agent at quotaAgent.
const (
	ParamQuota       = "quota"
	ParamQuotaAgent  = "quotaAgent"
	ParamQuotaInodes = "quotaInodes"

	QuotaEnforce = "enforce"
	QuotaNone    = "none"
)

// QuotaParams is a class's enforced capacity; Agent "" means capacity is not enforced.
type QuotaParams struct {
	Agent  string // host:port of the quota agent on the NFS server
	Inodes uint64 // hard limit on files and directories; 0 = none
}

func parseQuota(m map[string]string) (QuotaParams, error) {
	var q QuotaParams
	mode, set := m[ParamQuota]
	switch mode {
	case QuotaEnforce:
	case "", QuotaNone:
		for _, k := range []string{ParamQuotaAgent, ParamQuotaInodes} {
			if v, ok := m[k]; ok {
				return q, &ParamError{Key: k, Value: v, Reason: "only meaningful with quota=enforce"}
			}
		}
		if set && mode == "" {
			return q, &ParamError{Key: ParamQuota, Reason: "must be enforce or none"}
		}
		return q, nil
	default:
		return q, &ParamError{Key: ParamQuota, Value: mode, Reason: "must be enforce or none"}
	}
	q.Agent = m[ParamQuotaAgent]
	if q.Agent == "" {
		return q, &ParamError{Key: ParamQuotaAgent, Reason: "required with quota=enforce: the quota agent's host:port on the NFS server"}
	}
	if err := ValidateQuotaAgent(q.Agent); err != nil {
		return q, &ParamError{Key: ParamQuotaAgent, Value: q.Agent, Reason: err.Error()}
	}
	if v, ok := m[ParamQuotaInodes]; ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return q, &ParamError{Key: ParamQuotaInodes, Value: v, Reason: "must be a positive number of files and directories"}
		}
		q.Inodes = n
	}
	return q, nil
}

// ValidateQuotaAgent checks a quota agent address: host:port, the host as ValidateServer wants it
// (an IPv6 address in brackets), the port numeric.
func ValidateQuotaAgent(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not host:port: %v", err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("port %q is not a number between 1 and 65535", port)
	}
	if net.ParseIP(host) != nil && net.ParseIP(host).To4() == nil {
		host = "[" + host + "]"
	}
	if err := ValidateServer(host); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if net.JoinHostPort(hostOnly(host), port) != addr {
		return fmt.Errorf("not in canonical host:port form")
	}
	return nil
}

func hostOnly(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}
