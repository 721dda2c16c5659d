package rpc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/quota/api"
	"github.com/paddock-csi/paddock/pkg/quota/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestEndToEnd(t *testing.T) {
	ca := newCA(t, "ca")
	fake := &fakeQuotas{
		usage:    quota.Usage{ProjectID: 42, Bytes: 1 << 20, Inodes: 7, Limit: quota.Limit{Bytes: 1 << 30, Inodes: 1000}},
		capacity: quota.Capacity{TotalBytes: 100, FreeBytes: 60, AllocatedBytes: 30},
	}
	addr := startAgent(t, fake, credsDir(t, ca, agentLeaf, ca))
	c := dial(t, addr, loadCreds(t, credsDir(t, ca, controllerLeaf, ca)))
	ctx := testContext(t)
	tg := quota.Target{Export: "/srv/nfs", Path: "pvc-1"}

	u, err := c.Set(ctx, tg, quota.Limit{Bytes: 1 << 30, Inodes: 1000})
	if err != nil || u != fake.usage {
		t.Fatalf("Set = %+v, %v; want %+v", u, err, fake.usage)
	}
	if u, err = c.Usage(ctx, tg); err != nil || u != fake.usage {
		t.Fatalf("Usage = %+v, %v; want %+v", u, err, fake.usage)
	}
	if capa, err := c.Capacity(ctx, "/srv/nfs"); err != nil || capa != fake.capacity {
		t.Fatalf("Capacity = %+v, %v; want %+v", capa, err, fake.capacity)
	}
	if err := c.Release(ctx, tg); err != nil {
		t.Fatalf("Release: %v", err)
	}
	want := []string{"Set /srv/nfs pvc-1 1073741824/1000", "Usage /srv/nfs pvc-1", "Capacity /srv/nfs", "Release /srv/nfs pvc-1"}
	if got := fake.Calls(); !slices.Equal(got, want) {
		t.Errorf("agent got %q, want %q", got, want)
	}
}

// rawClient calls the agent with TLS (or plaintext, if conf is nil) set up by hand.
func rawClient(t *testing.T, addr string, conf *tls.Config) api.QuotaAgentClient {
	t.Helper()
	creds := insecure.NewCredentials()
	if conf != nil {
		creds = credentials.NewTLS(conf)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return api.NewQuotaAgentClient(conn)
}

func TestRefused(t *testing.T) {
	ca, other := newCA(t, "ca"), newCA(t, "other-ca")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	goodCert, goodKey := ca.issue(t, controllerLeaf)
	good, err := tls.X509KeyPair(goodCert, goodKey)
	if err != nil {
		t.Fatal(err)
	}

	// Each case calls Usage on an agent with its own credentials (agent) or the usual ones, and
	// expects the call refused with code want, before it reaches the agent's Quotas.
	tests := []struct {
		name  string
		agent string // credentials directory of the agent; default: a certificate of ca for agentLeaf
		allow []string
		call  func(t *testing.T, addr string) error
		want  codes.Code
		// In the error. Empty where the agent refuses the client's certificate: TLS 1.3 tells the
		// client after it has sent its first request, which then fails on the alert or on a reset.
		msg string
	}{{
		name: "no client certificate",
		call: func(t *testing.T, addr string) error {
			_, err := rawClient(t, addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}).
				Usage(testContext(t), &api.UsageRequest{Target: &api.Target{Export: "/e", Path: "p"}})
			return err
		},
		want: codes.Unavailable,
	}, {
		name: "TLS 1.2",
		call: func(t *testing.T, addr string) error {
			_, err := rawClient(t, addr, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{good}, MaxVersion: tls.VersionTLS12}).
				Usage(testContext(t), &api.UsageRequest{Target: &api.Target{Export: "/e", Path: "p"}})
			return err
		},
		want: codes.Unavailable,
		msg:  "protocol version not supported",
	}, {
		name: "plaintext client",
		call: func(t *testing.T, addr string) error {
			_, err := rawClient(t, addr, nil).Usage(testContext(t), &api.UsageRequest{Target: &api.Target{Export: "/e", Path: "p"}})
			return err
		},
		want: codes.Unavailable,
	}, {
		// Go's TLS client does not even send a certificate the server's CAs did not issue...
		name: "client certificate from another CA",
		call: func(t *testing.T, addr string) error {
			return usage(t, addr, credsDir(t, other, controllerLeaf, ca))
		},
		want: codes.Unavailable,
	}, {
		// ... so this one does: the server refuses it.
		name: "client certificate from another CA, sent anyway",
		call: func(t *testing.T, addr string) error {
			cert, key := other.issue(t, controllerLeaf)
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			_, err = rawClient(t, addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }}).
				Usage(testContext(t), &api.UsageRequest{Target: &api.Target{Export: "/e", Path: "p"}})
			return err
		},
		want: codes.Unavailable,
	}, {
		name: "expired client certificate",
		call: func(t *testing.T, addr string) error {
			return usage(t, addr, credsDir(t, ca, leaf{cn: "paddock-controller", client: true, expired: true}, ca))
		},
		want: codes.Unavailable,
	}, {
		name:  "agent certificate for another name",
		agent: "elsewhere",
		call: func(t *testing.T, addr string) error {
			return usage(t, addr, credsDir(t, ca, controllerLeaf, ca))
		},
		want: codes.Unavailable,
		msg:  "doesn't contain any IP SANs",
	}, {
		name:  "agent certificate for another name than WithServerName",
		agent: "elsewhere",
		call: func(t *testing.T, addr string) error {
			return usage(t, addr, credsDir(t, ca, controllerLeaf, ca), rpc.WithServerName("quota-agent.test"))
		},
		want: codes.Unavailable,
		msg:  "not quota-agent.test",
	}, {
		name:  "agent certificate from another CA",
		agent: "other",
		call: func(t *testing.T, addr string) error {
			return usage(t, addr, credsDir(t, ca, controllerLeaf, ca))
		},
		want: codes.Unavailable,
		msg:  "certificate signed by unknown authority",
	}, {
		name:  "client not allowed",
		allow: []string{"paddock-controller", "spiffe://paddock.test/controller"},
		call: func(t *testing.T, addr string) error {
			return usage(t, addr, credsDir(t, ca, leaf{cn: "intruder", dns: []string{"intruder.test"}, client: true}, ca))
		},
		want: codes.PermissionDenied,
		msg:  "not allowed",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dir string
			switch tt.agent {
			case "":
				dir = credsDir(t, ca, agentLeaf, ca)
			case "elsewhere":
				dir = credsDir(t, ca, leaf{cn: "elsewhere", dns: []string{"elsewhere.test"}}, ca)
			case "other":
				dir = credsDir(t, other, agentLeaf, ca)
			}
			fake := &fakeQuotas{}
			addr := startAgent(t, fake, dir, rpc.AllowClients(tt.allow...))
			err := tt.call(t, addr)
			if got := status.Code(err); got != tt.want || err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("call: %v (code %v), want code %v and %q", err, got, tt.want, tt.msg)
			}
			if calls := fake.Calls(); len(calls) != 0 {
				t.Errorf("the agent's Quotas got %q", calls)
			}
			if tt.agent == "" {
				if err := usage(t, addr, credsDir(t, ca, controllerLeaf, ca)); err != nil {
					t.Errorf("then a good client: %v", err)
				}
			}
		})
	}
}

// usage calls Usage through a Client with the credentials in dir.
func usage(t *testing.T, addr, dir string, opts ...rpc.DialOption) error {
	_, err := dial(t, addr, loadCreds(t, dir), opts...).Usage(testContext(t), quota.Target{Export: "/e", Path: "p"})
	return err
}

// TestAllowed: AllowClients matches the common name, a DNS SAN or a URI SAN, and WithServerName
// verifies the agent by another name than addr's host.
func TestAllowed(t *testing.T) {
	ca := newCA(t, "ca")
	allow := rpc.AllowClients("paddock-controller", "controller.test")
	for _, l := range []leaf{controllerLeaf, {cn: "x", dns: []string{"controller.test"}, client: true}} {
		fake := &fakeQuotas{}
		addr := startAgent(t, fake, credsDir(t, ca, leaf{dns: []string{"quota-agent.test"}}, ca), allow)
		if err := usage(t, addr, credsDir(t, ca, l, ca), rpc.WithServerName("quota-agent.test")); err != nil {
			t.Errorf("client %+v: %v", l, err)
		}
	}
}

// TestRotation: after the agent's and the controller's credential directories are rotated to a
// new CA, the next connection uses the new certificates, with the Credentials loaded before.
func TestRotation(t *testing.T) {
	for _, kubelet := range []bool{true, false} {
		t.Run(fmt.Sprintf("kubelet=%v", kubelet), func(t *testing.T) {
			ca1, ca2 := newCA(t, "ca1"), newCA(t, "ca2")
			// rotate issues new certificates of ca2 trusting ca2, into a Secret-like directory
			// (kubelet) or over the files in place.
			var agentDir, ctrlDir string
			var rotate func()
			if kubelet {
				a, c := newSecret(t, ca1, agentLeaf, ca1), newSecret(t, ca1, controllerLeaf, ca1)
				agentDir, ctrlDir = a.dir, c.dir
				rotate = func() { a.update(t, ca2, agentLeaf, ca2); c.update(t, ca2, controllerLeaf, ca2) }
			} else {
				agentDir, ctrlDir = credsDir(t, ca1, agentLeaf, ca1), credsDir(t, ca1, controllerLeaf, ca1)
				rotate = func() {
					cert, key := ca2.issue(t, agentLeaf)
					writeFiles(t, agentDir, cert, key, ca2.pem)
					cert, key = ca2.issue(t, controllerLeaf)
					writeFiles(t, ctrlDir, cert, key, ca2.pem)
				}
			}
			addr := startAgent(t, &fakeQuotas{}, agentDir)
			ctrl := loadCreds(t, ctrlDir)
			if err := usage(t, addr, ctrlDir); err != nil {
				t.Fatalf("before rotation: %v", err)
			}
			stale := credsDir(t, ca1, controllerLeaf, ca1)

			rotate()
			if _, err := dial(t, addr, ctrl).Usage(testContext(t), quota.Target{Export: "/e", Path: "p"}); err != nil {
				t.Errorf("after rotation: %v", err)
			}
			if err := usage(t, addr, stale); status.Code(err) != codes.Unavailable {
				t.Errorf("after rotation, a client of the old CA: %v, want refused", err)
			}
		})
	}
}

// TestHalfRotation: credentials that fail to load (a new certificate beside the old key) leave the
// previous ones in use until the files are whole again.
func TestHalfRotation(t *testing.T) {
	ca := newCA(t, "ca")
	agentDir := credsDir(t, ca, agentLeaf, ca)
	addr := startAgent(t, &fakeQuotas{}, agentDir)
	ctrlDir := credsDir(t, ca, controllerLeaf, ca)
	ctrl := loadCreds(t, ctrlDir)

	newCert, newKey := ca.issue(t, agentLeaf)
	if err := os.WriteFile(filepath.Join(agentDir, rpc.CertFile), newCert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctrlDir, rpc.KeyFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, addr, ctrl).Usage(testContext(t), quota.Target{Export: "/e", Path: "p"}); err != nil {
		t.Fatalf("half rotated: %v", err)
	}
	if err := os.WriteFile(filepath.Join(agentDir, rpc.KeyFile), newKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, addr, ctrl).Usage(testContext(t), quota.Target{Export: "/e", Path: "p"}); err != nil {
		t.Fatalf("agent rotated: %v", err)
	}
}

func TestLoadCredentials(t *testing.T) {
	ca := newCA(t, "ca")
	cert, key := ca.issue(t, controllerLeaf)
	otherCert, _ := ca.issue(t, controllerLeaf)
	tests := []struct {
		name           string
		cert, key, pem []byte
		want           string
	}{
		{"whole", cert, key, ca.pem, ""},
		{"key of another certificate", otherCert, key, ca.pem, "private key does not match"},
		{"no CA", cert, key, []byte("not PEM"), "no PEM certificate in"},
		{"no key", cert, nil, ca.pem, "tls.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.cert, tt.key, tt.pem)
			if tt.key == nil {
				_ = os.Remove(filepath.Join(dir, rpc.KeyFile))
			}
			_, err := rpc.LoadCredentials(dir)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("LoadCredentials: %v, want %q", err, tt.want)
			}
		})
	}
}

var sentinels = []error{quota.ErrNoProject, quota.ErrNotOwned, quota.ErrUnsupported, quota.ErrNotFound, quota.ErrExhausted, quota.ErrInvalid, quota.ErrUnavailable}

// TestErrors: every error of the agent's Quotas reaches the controller as the same sentinel, with
// its gRPC code.
func TestErrors(t *testing.T) {
	ca := newCA(t, "ca")
	fake := &fakeQuotas{}
	addr := startAgent(t, fake, credsDir(t, ca, agentLeaf, ca))
	c := dial(t, addr, loadCreds(t, credsDir(t, ca, controllerLeaf, ca)))
	tests := []struct {
		err  error
		want error // sentinel, or nil
		code codes.Code
	}{
		{quota.ErrInvalid, quota.ErrInvalid, codes.InvalidArgument},
		{quota.ErrNotOwned, quota.ErrNotOwned, codes.PermissionDenied},
		{quota.ErrUnsupported, quota.ErrUnsupported, codes.FailedPrecondition},
		{quota.ErrNotFound, quota.ErrNotFound, codes.NotFound},
		{quota.ErrNoProject, quota.ErrNoProject, codes.NotFound},
		{quota.ErrExhausted, quota.ErrExhausted, codes.ResourceExhausted},
		{errors.New("xfs_quota: exit 1"), nil, codes.Internal},
		{context.DeadlineExceeded, context.DeadlineExceeded, codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			agentErr := fmt.Errorf("/srv/nfs/pvc-1: %w", tt.err)
			fake.setErr(agentErr)
			_, err := c.Usage(testContext(t), quota.Target{Export: "/srv/nfs", Path: "pvc-1"})
			checkError(t, err, tt.want, tt.code)
			if err != nil && !strings.Contains(err.Error(), agentErr.Error()) {
				t.Errorf("error %q does not carry the agent's %q", err, agentErr)
			}
		})
	}
}

// checkError checks that err matches the sentinel want (and no other) and has code.
func checkError(t *testing.T, err, want error, code codes.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	for _, s := range sentinels {
		if errors.Is(err, s) != (s == want) {
			t.Errorf("errors.Is(%q, %q) = %v", err, s, !(s == want))
		}
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("errors.Is(%q, %q) = false", err, want)
	}
	if got := status.Code(err); got != code {
		t.Errorf("code of %q = %v, want %v", err, got, code)
	}
}

// TestValidation: the agent refuses a request lacking a field, naming it, before calling Quotas.
func TestValidation(t *testing.T) {
	ca := newCA(t, "ca")
	fake := &fakeQuotas{}
	addr := startAgent(t, fake, credsDir(t, ca, agentLeaf, ca))
	c := dial(t, addr, loadCreds(t, credsDir(t, ca, controllerLeaf, ca)))
	cert, key := ca.issue(t, controllerLeaf)
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	raw := rawClient(t, addr, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13})

	tests := []struct {
		field string
		call  func(ctx context.Context) error
	}{
		{"target.export", func(ctx context.Context) error {
			_, err := c.Usage(ctx, quota.Target{Path: "p"})
			return err
		}},
		{"target.path", func(ctx context.Context) error {
			return c.Release(ctx, quota.Target{Export: "/e"})
		}},
		{"export", func(ctx context.Context) error {
			_, err := c.Capacity(ctx, "")
			return err
		}},
		{"target", func(ctx context.Context) error {
			_, err := raw.Set(ctx, &api.SetRequest{Limit: &api.Limit{}})
			return err
		}},
		{"limit", func(ctx context.Context) error {
			_, err := raw.Set(ctx, &api.SetRequest{Target: &api.Target{Export: "/e", Path: "p"}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			err := tt.call(testContext(t))
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.field+" is required") {
				t.Errorf("got %v, want InvalidArgument naming %s", err, tt.field)
			}
		})
	}
	_, err = c.Set(testContext(t), quota.Target{Export: "/e"}, quota.Limit{})
	checkError(t, err, quota.ErrInvalid, codes.InvalidArgument)
	if calls := fake.Calls(); len(calls) != 0 {
		t.Errorf("the agent's Quotas got %q", calls)
	}
}

// TestAgentDown: a call to an agent that is not there, or that went away, is quota.ErrUnavailable.
func TestAgentDown(t *testing.T) {
	ca := newCA(t, "ca")
	creds := loadCreds(t, credsDir(t, ca, controllerLeaf, ca))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, err = dial(t, addr, creds).Usage(testContext(t), quota.Target{Export: "/e", Path: "p"})
	checkError(t, err, quota.ErrUnavailable, codes.Unavailable)

	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := rpc.NewServer(&fakeQuotas{}, loadCreds(t, credsDir(t, ca, agentLeaf, ca)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	c := dial(t, l.Addr().String(), creds)
	if _, err := c.Usage(testContext(t), quota.Target{Export: "/e", Path: "p"}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	<-done
	_, err = c.Usage(testContext(t), quota.Target{Export: "/e", Path: "p"})
	checkError(t, err, quota.ErrUnavailable, codes.Unavailable)
}

// TestDeadline: the caller's deadline reaches the agent's Quotas, and its expiry is
// context.DeadlineExceeded on both sides.
func TestDeadline(t *testing.T) {
	ca := newCA(t, "ca")
	fake := &fakeQuotas{block: true}
	addr := startAgent(t, fake, credsDir(t, ca, agentLeaf, ca))
	c := dial(t, addr, loadCreds(t, credsDir(t, ca, controllerLeaf, ca)))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Set(ctx, quota.Target{Export: "/e", Path: "p"}, quota.Limit{Bytes: 1})
	checkError(t, err, context.DeadlineExceeded, codes.DeadlineExceeded)
}
