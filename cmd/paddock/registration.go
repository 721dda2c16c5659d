package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/registration"
)

// registrationConfig checks --registration-dir and --kubelet-registration-path against the mode and
// the endpoint. nil means registration is off (no --registration-dir): a node-driver-registrar sidecar,
// or nothing at all (csi-sanity, tests), does the job.
func registrationConfig(f flags) (*registration.Config, error) {
	if f.registrationDir == "" {
		if f.kubeletRegistrationPath != "" {
			return nil, fmt.Errorf("--kubelet-registration-path=%q needs --registration-dir", f.kubeletRegistrationPath)
		}
		return nil, nil
	}
	if driver.Mode(f.mode) == driver.ModeController {
		return nil, fmt.Errorf("--registration-dir registers the node plugin with kubelet: it needs --mode=node or --mode=all, not --mode=%s", f.mode)
	}
	// kubelet dials the CSI endpoint itself, over a unix socket: a tcp:// endpoint cannot be registered.
	u, err := url.Parse(f.endpoint)
	if err != nil {
		return nil, fmt.Errorf("--endpoint=%q: %w", f.endpoint, err)
	}
	if u.Scheme != "unix" {
		return nil, fmt.Errorf("--registration-dir needs a unix:// --endpoint (kubelet dials the CSI socket), not %q", f.endpoint)
	}
	endpoint := f.kubeletRegistrationPath
	if endpoint == "" {
		endpoint = u.Host + u.Path // unix://relative/path has its first component in Host, as in driver.Listen
	}
	cfg := registration.Config{DriverName: f.driverName, Dir: f.registrationDir, Endpoint: endpoint}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// registerAfterListening serves reg from the moment the driver's CSI endpoint accepts connections
// (opts.OnListening, so set it before driver.New): kubelet dials the CSI socket as soon as it has read
// the registration socket, and a missing one costs a refused registration. If the registration
// socket cannot be made, stop is called: a node plugin kubelet cannot find is of no use, so the
// process exits and says why. wait returns once reg has stopped (after ctx ends), with its error.
func registerAfterListening(ctx context.Context, opts *driver.Options, reg *registration.Server, stop func()) (wait func() error) {
	listening := make(chan struct{})
	opts.OnListening = func() { close(listening) }
	done := make(chan error, 1)
	go func() {
		select {
		case <-listening:
		case <-ctx.Done():
			done <- nil // the CSI endpoint never listened; Serve reports why
			return
		}
		err := reg.Run(ctx)
		if err != nil {
			stop()
		}
		done <- err
	}()
	return func() error { return <-done }
}
