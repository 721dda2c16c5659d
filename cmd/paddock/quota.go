package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"

	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/quota/rpc"
)

// modeQuotaAgent runs the quota agent on the NFS server host instead of a CSI service.
const modeQuotaAgent = "quota-agent"

type quotaFlags struct {
	credentials    string // both sides: tls.crt, tls.key, ca.crt
	listen         string // agent
	exportRoots    string // agent
	projectIDs     string // agent
	allowedClients string // agent
}

func (q *quotaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&q.credentials, "quota-credentials", "", "directory holding tls.crt, tls.key and ca.crt (a Kubernetes TLS Secret with ca.crt): "+
		"the controller's client identity for quota agents (empty: classes with quota=enforce are refused), or the quota agent's server identity; re-read when they change")
	fs.StringVar(&q.listen, "quota-listen", ":9820", "quota-agent: address to serve the quota API on (mutual TLS only)")
	fs.StringVar(&q.exportRoots, "quota-export-roots", "", "quota-agent: comma-separated export roots the agent owns, as local paths equal to the paths NFS clients mount; each on XFS mounted with prjquota")
	fs.StringVar(&q.projectIDs, "quota-project-ids", fmt.Sprintf("%d-%d", quota.DefaultIDRange.First, quota.DefaultIDRange.Last),
		"quota-agent: range of XFS project IDs the agent hands out, first-last; keep it clear of /etc/projid")
	fs.StringVar(&q.allowedClients, "quota-allowed-clients", "", "quota-agent: comma-separated names (certificate CN, DNS or URI SAN) of the clients served (empty: any certificate the CA signed)")
}

// controllerAgents is the controller's pool of quota agent clients, or nil without credentials.
func (q quotaFlags) controllerAgents() (driver.QuotaAgents, func(), error) {
	if q.credentials == "" {
		return nil, func() {}, nil
	}
	creds, err := rpc.LoadCredentials(q.credentials)
	if err != nil {
		return nil, nil, fmt.Errorf("--quota-credentials: %w", err)
	}
	pool := rpc.NewPool(creds)
	return pool.Get, pool.Close, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runQuotaAgent serves the quota API until ctx ends.
func runQuotaAgent(ctx context.Context, f flags) error {
	q := f.quota
	if q.credentials == "" {
		return errors.New("--quota-credentials is required in quota-agent mode: the agent serves mutual TLS only")
	}
	roots := splitList(q.exportRoots)
	if len(roots) == 0 {
		return errors.New("--quota-export-roots is required in quota-agent mode")
	}
	ids, err := quota.ParseIDRange(q.projectIDs)
	if err != nil {
		return fmt.Errorf("--quota-project-ids: %w", err)
	}
	creds, err := rpc.LoadCredentials(q.credentials)
	if err != nil {
		return fmt.Errorf("--quota-credentials: %w", err)
	}
	agent, err := quota.NewAgent(roots, ids)
	if err != nil {
		return err
	}
	defer agent.Close()
	l, err := net.Listen("tcp", q.listen)
	if err != nil {
		return fmt.Errorf("--quota-listen: %w", err)
	}
	s := rpc.NewServer(agent, creds, rpc.AllowClients(splitList(q.allowedClients)...))
	if f.httpEndpoint != "" {
		go func() {
			if err := metrics.Serve(ctx, f.httpEndpoint, nil, nil); err != nil {
				klog.ErrorS(err, "Metrics endpoint failed")
			}
		}()
	}
	go func() {
		<-ctx.Done()
		s.GracefulStop()
	}()
	klog.InfoS("Quota agent serving", "address", l.Addr().String(), "exportRoots", roots, "projectIDs", q.projectIDs, "version", version)
	return s.Serve(l)
}
