package rpc

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/quota/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DefaultTimeout bounds a call whose context has no deadline, so that a hung agent cannot hold a
// controller worker for good.
const DefaultTimeout = time.Minute

// Client is the controller's quota.Quotas: every method is a call to the agent. Its errors wrap
// the quota sentinel the agent reported, quota.ErrUnavailable when the agent could not be reached
// (down, unreachable, or the TLS handshake failed: the message says which), or
// context.DeadlineExceeded; status.Code gives their gRPC code.
type Client struct {
	conn  *grpc.ClientConn
	agent api.QuotaAgentClient
}

var _ quota.Quotas = (*Client)(nil)

// DialOption configures Dial.
type DialOption func(*clientTLS)

// WithServerName sets the name the agent's certificate must carry, instead of the host of addr.
func WithServerName(name string) DialOption {
	return func(t *clientTLS) { t.serverName = name }
}

// Dial returns a client of the agent at addr (host:port) over mutual TLS with creds: it presents
// creds' certificate and verifies the agent's against creds' CA bundle and the server name. It
// connects lazily: an agent that is down shows as quota.ErrUnavailable on the calls, not here.
func Dial(addr string, creds *Credentials, opts ...DialOption) (*Client, error) {
	if creds == nil {
		return nil, fmt.Errorf("quota agent %s: no TLS credentials", addr)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("quota agent address: %w", err)
	}
	t := &clientTLS{creds: creds, serverName: host}
	for _, o := range opts {
		o(t)
	}
	// Reconnect within seconds of the agent coming back (gRPC's default backoff reaches two minutes).
	bo := backoff.DefaultConfig
	bo.MaxDelay = 10 * time.Second
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(t),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: 10 * time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("quota agent %s: %w", addr, err)
	}
	return &Client{conn: conn, agent: api.NewQuotaAgentClient(conn)}, nil
}

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) Set(ctx context.Context, t quota.Target, l quota.Limit) (quota.Usage, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := c.agent.Set(ctx, &api.SetRequest{Target: targetToAPI(t), Limit: &api.Limit{Bytes: l.Bytes, Inodes: l.Inodes}})
	if err != nil {
		return quota.Usage{}, fromStatus(err)
	}
	return usageFromAPI(resp.GetUsage()), nil
}

func (c *Client) Release(ctx context.Context, t quota.Target) error {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	_, err := c.agent.Release(ctx, &api.ReleaseRequest{Target: targetToAPI(t)})
	return fromStatus(err)
}

func (c *Client) Usage(ctx context.Context, t quota.Target) (quota.Usage, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := c.agent.Usage(ctx, &api.UsageRequest{Target: targetToAPI(t)})
	if err != nil {
		return quota.Usage{}, fromStatus(err)
	}
	return usageFromAPI(resp.GetUsage()), nil
}

func (c *Client) Capacity(ctx context.Context, export string) (quota.Capacity, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := c.agent.Capacity(ctx, &api.CapacityRequest{Export: export})
	if err != nil {
		return quota.Capacity{}, fromStatus(err)
	}
	return quota.Capacity{TotalBytes: resp.GetTotalBytes(), FreeBytes: resp.GetFreeBytes(), AllocatedBytes: resp.GetAllocatedBytes()}, nil
}

// withDeadline keeps ctx's deadline (gRPC sends it to the agent) and adds DefaultTimeout if it has none.
func withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

func targetToAPI(t quota.Target) *api.Target {
	return &api.Target{Export: t.Export, Path: t.Path}
}

func usageFromAPI(u *api.Usage) quota.Usage {
	return quota.Usage{
		ProjectID: u.GetProjectId(),
		Bytes:     u.GetBytes(),
		Inodes:    u.GetInodes(),
		Limit:     quota.Limit{Bytes: u.GetLimit().GetBytes(), Inodes: u.GetLimit().GetInodes()},
	}
}
