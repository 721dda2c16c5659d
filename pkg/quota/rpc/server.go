package rpc

import (
	"context"
	"crypto/x509"
	"fmt"
	"path"
	"runtime/debug"
	"slices"
	"time"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/quota/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// ServerOption configures NewServer.
type ServerOption func(*server)

// AllowClients restricts the clients the agent serves to those whose certificate names one of ids:
// its subject common name, one of its DNS SANs, or one of its URI SANs (a SPIFFE ID, say), compared
// exactly. Without it (or with no ids) any certificate the CA bundle verifies is served. Another
// client is refused each call with PermissionDenied, after the TLS handshake, so that it learns why.
func AllowClients(ids ...string) ServerOption {
	return func(s *server) { s.allowed = append(s.allowed, ids...) }
}

// NewServer returns a gRPC server of the QuotaAgent service backed by q, over mutual TLS with
// creds: clients must present a certificate that creds' CA bundle verifies. The caller runs it
// (Serve on a TCP listener) and stops it (GracefulStop).
func NewServer(q quota.Quotas, creds *Credentials, opts ...ServerOption) *grpc.Server {
	if q == nil || creds == nil {
		panic("rpc.NewServer: nil Quotas or Credentials")
	}
	s := &server{q: q}
	for _, o := range opts {
		o(s)
	}
	gs := grpc.NewServer(
		grpc.Creds(creds.serverTLS()),
		grpc.ChainUnaryInterceptor(s.intercept),
		// Connections are long-lived: ending them now and then makes every client handshake again,
		// against the current certificates and CA bundle.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Minute}),
	)
	api.RegisterQuotaAgentServer(gs, s)
	return gs
}

type server struct {
	api.UnimplementedQuotaAgentServer
	q       quota.Quotas
	allowed []string
}

// intercept authorizes the caller, logs the call, maps its error to a status (toStatus) and turns a
// panic into an Internal error rather than a dead agent.
func (s *server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	method := path.Base(info.FullMethod)
	logger := klog.FromContext(ctx).WithValues("method", method)
	if p, ok := peer.FromContext(ctx); ok {
		logger = logger.WithValues("peer", p.Addr.String())
	}
	client, err := s.authorize(ctx)
	if err != nil {
		logger.Error(err, "Refused a call")
		return nil, err
	}
	logger = logger.WithValues("client", client)
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			logger.Error(fmt.Errorf("panic: %v", r), "Call panicked", "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error (panic): %v", r)
		}
		err = toStatus(err)
		if err != nil {
			logger.Error(err, "Call failed", "request", req, "duration", time.Since(start))
		} else {
			logger.V(4).Info("Call succeeded", "request", req, "duration", time.Since(start))
		}
	}()
	return handler(klog.NewContext(ctx, logger), req)
}

// authorize returns the name of the caller's verified certificate (its common name, else its first
// SAN), or PermissionDenied. The TLS handshake already required a verified certificate: checking it
// again here keeps a misconfiguration from serving anyone.
func (s *server) authorize(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.PermissionDenied, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", status.Error(codes.PermissionDenied, "no verified client certificate")
	}
	names := certNames(ti.State.VerifiedChains[0][0])
	if len(s.allowed) > 0 && !slices.ContainsFunc(names, func(n string) bool { return slices.Contains(s.allowed, n) }) {
		return "", status.Errorf(codes.PermissionDenied, "client certificate %q is not allowed by this quota agent", names)
	}
	if len(names) == 0 {
		return "", nil
	}
	return names[0], nil
}

// certNames are the names AllowClients matches: the common name, the DNS SANs, the URI SANs.
func certNames(c *x509.Certificate) []string {
	var names []string
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	names = append(names, c.DNSNames...)
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	return names
}

func (s *server) Set(ctx context.Context, req *api.SetRequest) (*api.SetResponse, error) {
	t, err := target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	l := req.GetLimit()
	if l == nil {
		return nil, required("limit")
	}
	u, err := s.q.Set(ctx, t, quota.Limit{Bytes: l.GetBytes(), Inodes: l.GetInodes()})
	if err != nil {
		return nil, err
	}
	return &api.SetResponse{Usage: usageToAPI(u)}, nil
}

func (s *server) Release(ctx context.Context, req *api.ReleaseRequest) (*api.ReleaseResponse, error) {
	t, err := target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	if err := s.q.Release(ctx, t); err != nil {
		return nil, err
	}
	return &api.ReleaseResponse{}, nil
}

func (s *server) Usage(ctx context.Context, req *api.UsageRequest) (*api.UsageResponse, error) {
	t, err := target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	u, err := s.q.Usage(ctx, t)
	if err != nil {
		return nil, err
	}
	return &api.UsageResponse{Usage: usageToAPI(u)}, nil
}

func (s *server) Capacity(ctx context.Context, req *api.CapacityRequest) (*api.CapacityResponse, error) {
	if req.GetExport() == "" {
		return nil, required("export")
	}
	c, err := s.q.Capacity(ctx, req.GetExport())
	if err != nil {
		return nil, err
	}
	return &api.CapacityResponse{TotalBytes: c.TotalBytes, FreeBytes: c.FreeBytes, AllocatedBytes: c.AllocatedBytes}, nil
}

// target checks that the request names a directory; what the names may be is the Quotas
// implementation's to check.
func target(t *api.Target) (quota.Target, error) {
	switch {
	case t == nil:
		return quota.Target{}, required("target")
	case t.GetExport() == "":
		return quota.Target{}, required("target.export")
	case t.GetPath() == "":
		return quota.Target{}, required("target.path")
	}
	return quota.Target{Export: t.GetExport(), Path: t.GetPath()}, nil
}

func required(field string) error {
	return fmt.Errorf("%w: %s is required", quota.ErrInvalid, field)
}

func usageToAPI(u quota.Usage) *api.Usage {
	return &api.Usage{
		ProjectId: u.ProjectID,
		Bytes:     u.Bytes,
		Inodes:    u.Inodes,
		Limit:     &api.Limit{Bytes: u.Limit.Bytes, Inodes: u.Limit.Inodes},
	}
}
