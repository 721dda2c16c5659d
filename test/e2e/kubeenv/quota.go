package kubeenv

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-csi/paddock/pkg/quota/rpc/rpctest"
)

const (
	// ExportQ is the guest's XFS export with project quotas (test/vm/guest/init).
	ExportQ = "/srv/nfs/q"
	// QuotaAgentName is the spawned quota agent's name in the guest (StopPaddock, Log).
	QuotaAgentName = "quota-agent"
	// QuotaAgentPort is where the agent listens on the guest's loopback.
	QuotaAgentPort = 9820
)

// QuotaAgentAddr is the agent's address as a StorageClass's quotaAgent names it.
var QuotaAgentAddr = Server + ":" + strconv.Itoa(QuotaAgentPort)

// QuotaCredentials makes a CA and two credential directories in the share: the agent's (a server
// certificate for Server) and the controller's client identity. It returns the guest path of the
// controller's, for --quota-credentials.
func (e *Env) QuotaCredentials() (string, error) {
	ca, err := rpctest.NewCA("paddock-e2e-quota-ca")
	if err != nil {
		return "", err
	}
	if err := ca.WriteDir(filepath.Join(e.ShareDir, "quota-agent"), rpctest.Identity{CommonName: "quota-agent", Server: true, Hosts: []string{Server}}); err != nil {
		return "", err
	}
	if err := ca.WriteDir(filepath.Join(e.ShareDir, "quota-client"), rpctest.Identity{CommonName: "paddock-controller"}); err != nil {
		return "", err
	}
	return GuestShare + "/quota-client", nil
}

// StartQuotaAgent runs paddock --mode=quota-agent on ExportQ with the credentials QuotaCredentials
// made, and waits until it listens.
func (e *Env) StartQuotaAgent(ctx context.Context) error {
	if err := e.StartPaddock(ctx, QuotaAgentName, "", "--mode=quota-agent", "--quota-credentials="+GuestShare+"/quota-agent",
		"--quota-export-roots="+ExportQ, "--quota-listen="+QuotaAgentAddr, "-v=2"); err != nil {
		return err
	}
	// LISTEN (0A) on 127.0.0.1 (0100007F) in /proc/net/tcp: the port in hex.
	line := fmt.Sprintf("0100007F:%04X 00000000:0000 0A", QuotaAgentPort)
	return WaitFor(ctx, 60*time.Second, func(ctx context.Context) (bool, string, error) {
		r, err := e.Guest.Exec(ctx, "grep", "-q", line, "/proc/net/tcp")
		if err != nil {
			return false, "", err
		}
		if running, code, _ := e.Guest.SpawnStatus(ctx, QuotaAgentName); !running {
			return false, "", fmt.Errorf("quota agent exited with %d:\n%s", code, e.Log(ctx, QuotaAgentName, 30))
		}
		return r.ExitCode == 0, "quota agent not listening on " + QuotaAgentAddr, nil
	})
}

// ProjectOf is the XFS project ID of dir (a guest path on ExportQ), from xfs_io in the guest.
func (e *Env) ProjectOf(ctx context.Context, dir string) (int64, error) {
	out, err := e.Sh(ctx, "xfs_io -r -c lsproj "+Quote(dir)+" | sed -n 's/^projid = //p'")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(out), 10, 64)
}

// ProjectLimit is the hard block limit of an XFS project on ExportQ in bytes, from xfs_quota in the
// guest; 0 when it has none.
func (e *Env) ProjectLimit(ctx context.Context, project int64) (int64, error) {
	out, err := e.Sh(ctx, fmt.Sprintf("xfs_quota -x -c 'report -p -b -n -N' %s | awk '$1 == \"#%d\" {print $4}'", ExportQ, project))
	if err != nil {
		return 0, err
	}
	if s := strings.TrimSpace(out); s != "" {
		kib, err := strconv.ParseInt(s, 10, 64)
		return kib << 10, err
	}
	return 0, nil
}
