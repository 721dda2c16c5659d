package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/keylock"
	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/share"
)

// Driver serves the CSI services selected by Options.Mode.
type Driver struct {
	opts    Options
	share   *share.Workspace // controller side; nil in node mode
	mounter mount.Interface  // node side; nil in controller mode
	targets keylock.Locks    // one publish/unpublish per target path at a time
	nodes   keylock.Locks    // one ControllerPublishVolume per node at a time (volume limit)
	groups  keylock.Locks    // one call per group snapshot (share serializes each volume's calls)
	mounts  *mountSet        // node mounts this process made, for NodeGetStorageHealth
	// limiter bounds the node's blocking calls on NFS paths per server (Options.MaxStuckCalls), so a
	// dead server costs a fixed number of stuck calls and OS threads.
	limiter *mount.Limiter
	fs      nodeFS // the node's direct calls on NFS paths; tests play a hung server with them
}

// New builds a driver. ws is required for the controller service, m for the node service.
func New(opts Options, ws *share.Workspace, m mount.Interface) (*Driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.controller() && ws == nil {
		return nil, errors.New("controller mode needs an export workspace")
	}
	if opts.node() && m == nil {
		return nil, errors.New("node mode needs a mounter")
	}
	if opts.Nodes == nil {
		if opts.Mode == ModeAll {
			opts.Nodes = localNode{id: opts.NodeID, max: opts.MaxVolumesPerNode}
		} else {
			opts.Nodes = anyNode{}
		}
	}
	return &Driver{opts: opts, share: ws, mounter: m, mounts: newMountSet(), limiter: mount.NewLimiter(opts.MaxStuckCalls), fs: osFS}, nil
}

// Ready reports whether the driver can serve calls.
func (d *Driver) Ready() error { return nil }

// Register adds the services of the driver's mode to a gRPC server.
func (d *Driver) Register(s *grpc.Server) {
	csi.RegisterIdentityServer(s, &identity{d: d})
	if d.opts.controller() {
		csi.RegisterControllerServer(s, &controller{d: d})
		csi.RegisterGroupControllerServer(s, &groupController{d: d})
	}
	if d.opts.node() {
		csi.RegisterNodeServer(s, &node{d: d})
	}
}

// Listen opens the CSI endpoint: unix:///path (a stale socket file is replaced) or tcp://host:port.
func Listen(endpoint string) (net.Listener, func(), error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("--endpoint=%q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		p := u.Path
		if u.Host != "" { // unix://relative/path
			p = u.Host + u.Path
		}
		if p == "" {
			return nil, nil, fmt.Errorf("--endpoint=%q: no socket path", endpoint)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			return nil, nil, err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("removing stale socket %s: %w", p, err)
		}
		l, err := net.Listen("unix", p)
		if err != nil {
			return nil, nil, err
		}
		return l, func() { _ = os.Remove(p) }, nil
	case "tcp":
		l, err := net.Listen("tcp", u.Host)
		return l, func() {}, err
	}
	return nil, nil, fmt.Errorf("--endpoint=%q: scheme must be unix:// or tcp://", endpoint)
}

// Serve runs the gRPC server on the endpoint until ctx ends, then stops gracefully: calls in flight
// finish (up to grace), new ones are refused, and the socket is removed.
func (d *Driver) Serve(ctx context.Context, grace time.Duration) error {
	l, cleanup, err := Listen(d.opts.Endpoint)
	if err != nil {
		return err
	}
	defer cleanup()
	if d.opts.OnListening != nil {
		d.opts.OnListening()
	}
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(instrument))
	d.Register(s)
	klog.InfoS("Serving CSI", "endpoint", d.opts.Endpoint, "mode", d.opts.Mode, "driver", d.opts.Name, "version", d.opts.Version)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("Shutting down: waiting for calls in flight", "grace", grace)
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		klog.InfoS("Grace period over: stopping remaining calls")
		s.Stop()
	}
	return nil
}

// instrument logs, counts and times every call, and turns a panic into an Internal error instead of a
// dead plugin.
func instrument(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	method := filepath.Base(info.FullMethod)
	logger := klog.FromContext(ctx).WithValues("method", method)
	if v, ok := req.(interface{ GetVolumeId() string }); ok && v.GetVolumeId() != "" {
		logger = logger.WithValues("volumeID", v.GetVolumeId())
	}
	ctx = klog.NewContext(ctx, logger)
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			logger.Error(fmt.Errorf("panic: %v", r), "Call panicked", "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "%s: internal error (panic): %v", method, r)
		}
		code := status.Code(err)
		metrics.Operations.WithLabelValues(method, code.String()).Inc()
		metrics.OperationSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
		if err != nil {
			logger.Error(err, "Call failed", "code", code, "duration", time.Since(start))
		} else {
			logger.V(4).Info("Call succeeded", "duration", time.Since(start))
		}
	}()
	// Secrets (provisioner, node stage/publish, snapshotter) must never reach a log: the request is
	// logged through protosanitizer, which prints it with every csi_secret field stripped.
	logger.V(5).Info("Call", "request", protosanitizer.StripSecrets(req))
	return handler(ctx, req)
}
