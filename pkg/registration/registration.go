// Package registration registers the node plugin with kubelet, as the node-driver-registrar sidecar
// would: kubelet's plugin watcher finds a unix socket in its plugins_registry directory, calls the
// pluginregistration v1 Registration service on it to learn the driver's name and CSI endpoint, dials
// that endpoint (NodeGetInfo) and reports its verdict back. Doing it in-process saves one image per
// node, and /healthz can then say whether kubelet really accepted the plugin.
package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// SupportedVersions are the CSI versions reported to kubelet (the only one kubelet knows).
var SupportedVersions = []string{"1.0.0"}

// maxSocketPath is the longest path bind(2) takes for a unix socket (sun_path is 108 bytes with its NUL).
const maxSocketPath = 107

// Config says where the registration socket goes and what it tells kubelet.
type Config struct {
	// DriverName is the CSI driver name kubelet registers (--driver-name); it also names the socket.
	DriverName string
	// Dir is kubelet's plugins_registry directory as this process sees it (--registration-dir).
	Dir string
	// Endpoint is the CSI socket path as kubelet sees it on the host (--kubelet-registration-path):
	// kubelet dials it itself, so a path inside the container is of no use to it.
	Endpoint string
}

// SocketPath is the registration socket: <Dir>/<DriverName>-reg.sock, the name node-driver-registrar
// uses, so switching between it and the in-process server leaves no second socket behind.
func (c Config) SocketPath() string {
	return filepath.Join(c.Dir, c.DriverName+"-reg.sock")
}

// Validate checks the config, naming the flag at fault.
func (c Config) Validate() error {
	switch {
	case c.DriverName == "":
		return errors.New("--driver-name is empty")
	case strings.ContainsAny(c.DriverName, "/\x00"):
		return fmt.Errorf("--driver-name=%q: names the registration socket file, so it cannot contain / or NUL", c.DriverName)
	case c.Dir == "":
		return errors.New("--registration-dir is empty")
	case !filepath.IsAbs(c.Dir):
		return fmt.Errorf("--registration-dir=%q must be an absolute path", c.Dir)
	case c.Endpoint == "":
		return errors.New("--kubelet-registration-path is empty")
	case !filepath.IsAbs(c.Endpoint):
		return fmt.Errorf("--kubelet-registration-path=%q must be an absolute path (kubelet dials it on the host)", c.Endpoint)
	case len(c.SocketPath()) > maxSocketPath:
		return fmt.Errorf("--registration-dir=%q: socket path %s is longer than the %d bytes a unix socket may have",
			c.Dir, c.SocketPath(), maxSocketPath)
	case len(c.Endpoint) > maxSocketPath:
		return fmt.Errorf("--kubelet-registration-path=%q is longer than the %d bytes a unix socket may have",
			c.Endpoint, maxSocketPath)
	}
	return nil
}

// Server serves the Registration service on the registration socket and remembers kubelet's verdict.
type Server struct {
	registerapi.UnimplementedRegistrationServer
	cfg  Config
	path string

	mu       sync.Mutex
	state    state
	own      os.FileInfo // the socket file this server created, to tell it from a replacement
	notified bool        // kubelet has called NotifyRegistrationStatus at least once
	status   *registerapi.RegistrationStatus
}

type state int

const (
	idle state = iota
	serving
	stopped
)

// New validates cfg and returns a server that is not listening yet (Run).
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, path: cfg.SocketPath()}, nil
}

// SocketPath is where the server listens.
func (s *Server) SocketPath() string { return s.path }

// Run listens on the socket and serves kubelet until ctx ends, then removes the socket (unless another
// file has taken its place). An error means the socket could not be made; it is returned at once.
func (s *Server) Run(ctx context.Context) error {
	l, err := s.listen()
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, s)
	klog.InfoS("Serving kubelet plugin registration", "socket", s.path, "driver", s.cfg.DriverName, "endpoint", s.cfg.Endpoint)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err = <-errc:
		err = fmt.Errorf("serving registration socket %s: %w", s.path, err)
	case <-ctx.Done():
		// kubelet's two calls are short; nothing is worth waiting for at shutdown.
		srv.Stop()
		<-errc
	}
	s.stop()
	return err
}

func (s *Server) listen() (net.Listener, error) {
	if fi, err := os.Stat(s.cfg.Dir); err != nil {
		return nil, fmt.Errorf("--registration-dir: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("--registration-dir=%q is not a directory", s.cfg.Dir)
	}
	// A previous run killed before its cleanup leaves its socket: bind would fail on it. Anything else
	// at that path is not ours to delete.
	if fi, err := os.Lstat(s.path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("registration socket path %s exists and is not a socket (%v): refusing to remove it", s.path, fi.Mode().Type())
		}
		if err := os.Remove(s.path); err != nil {
			return nil, fmt.Errorf("removing stale registration socket: %w", err)
		}
		klog.InfoS("Removed a stale registration socket", "socket", s.path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("registration socket: %w", err)
	}
	l, err := net.Listen("unix", s.path)
	if err != nil {
		return nil, fmt.Errorf("registration socket: %w", err)
	}
	// The listener would unlink the path on Close whatever is there by then; stop() removes it only
	// if it is still this server's socket.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	// Only kubelet (root) has any business on this socket; the process umask may be 0 (cmd/paddock).
	if err := os.Chmod(s.path, 0o600); err != nil {
		l.Close()
		_ = os.Remove(s.path)
		return nil, fmt.Errorf("registration socket: %w", err)
	}
	fi, err := os.Lstat(s.path)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("registration socket: %w", err)
	}
	s.mu.Lock()
	s.state, s.own = serving, fi
	s.mu.Unlock()
	return l, nil
}

func (s *Server) stop() {
	s.mu.Lock()
	s.state = stopped
	own := s.own
	s.mu.Unlock()
	if fi, err := os.Lstat(s.path); err == nil && sameFile(fi, own) {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "Removing the registration socket", "socket", s.path)
		}
	}
}

// GetInfo tells kubelet which plugin this is and where its CSI endpoint is.
func (s *Server) GetInfo(_ context.Context, _ *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	klog.V(2).InfoS("Kubelet asked for plugin info", "driver", s.cfg.DriverName, "endpoint", s.cfg.Endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.cfg.DriverName,
		Endpoint:          s.cfg.Endpoint,
		SupportedVersions: SupportedVersions,
	}, nil
}

// NotifyRegistrationStatus records kubelet's verdict, for Healthy.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.mu.Lock()
	s.notified, s.status = true, st
	s.mu.Unlock()
	if st.GetPluginRegistered() {
		klog.InfoS("Registered with kubelet", "driver", s.cfg.DriverName, "endpoint", s.cfg.Endpoint)
	} else {
		klog.ErrorS(errors.New(st.GetError()), "Kubelet refused registration", "driver", s.cfg.DriverName, "endpoint", s.cfg.Endpoint)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Healthy is nil when kubelet can find the plugin and has accepted it: the socket this server made is
// still at its path and kubelet's last notification said registered. This is what node-driver-registrar's
// /healthz checks; a liveness probe on it restarts a plugin kubelet does not know about.
func (s *Server) Healthy() error {
	s.mu.Lock()
	st, own, notified, status := s.state, s.own, s.notified, s.status
	s.mu.Unlock()
	switch st {
	case idle:
		return fmt.Errorf("registration socket %s is not served yet", s.path)
	case stopped:
		return fmt.Errorf("registration socket %s is no longer served", s.path)
	}
	fi, err := os.Lstat(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("registration socket %s is gone: kubelet cannot find the plugin", s.path)
	}
	if err != nil {
		return fmt.Errorf("registration socket: %w", err)
	}
	if !sameFile(fi, own) {
		return fmt.Errorf("registration socket %s was replaced by another file", s.path)
	}
	if !notified {
		return errors.New("kubelet has not confirmed registration yet")
	}
	if !status.GetPluginRegistered() {
		return fmt.Errorf("kubelet refused registration: %s", status.GetError())
	}
	return nil
}

// sameFile is os.SameFile with the change time too: the inode number of a removed socket is soon
// reused, so device and inode alone can take a replacement for the original.
func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil || !os.SameFile(a, b) {
		return false
	}
	sa, okA := a.Sys().(*syscall.Stat_t)
	sb, okB := b.Sys().(*syscall.Stat_t)
	return okA && okB && sa.Ctim == sb.Ctim
}
