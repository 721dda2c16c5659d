// Package rpc carries the quota.Quotas interface between the controller and the quota agent: a gRPC
// service (package api) over mutual TLS 1.3. The agent serves it with NewServer; the controller
// calls it through a Client from Dial, which implements quota.Quotas.
//
// Both sides take their identity and the CA they trust from a directory holding tls.crt, tls.key
// and ca.crt (a Kubernetes TLS Secret with the CA, as cert-manager writes it), and re-read it when
// it changes, so a rotated certificate is used from the next connection on without a restart.
// There is no plaintext or server-only TLS mode.
package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc/credentials"
	"k8s.io/klog/v2"
)

// The files of a credentials directory.
const (
	CertFile = "tls.crt" // this side's certificate chain, leaf first
	KeyFile  = "tls.key" // its private key
	CAFile   = "ca.crt"  // the CA bundle the other side's certificate must chain to
)

var credentialFiles = [...]string{CertFile, KeyFile, CAFile}

// Credentials is one side's TLS identity and trusted CAs, read from a directory and reloaded when
// its files change. It is safe for concurrent use.
type Credentials struct {
	dir string

	mu     sync.Mutex
	stamps [len(credentialFiles)]os.FileInfo // of the files last loaded
	cur    *identity
}

type identity struct {
	cert  tls.Certificate
	roots *x509.CertPool
}

// LoadCredentials reads dir's tls.crt, tls.key and ca.crt, failing if any is missing or unusable.
func LoadCredentials(dir string) (*Credentials, error) {
	c := &Credentials{dir: dir}
	if _, err := c.identity(); err != nil {
		return nil, err
	}
	return c, nil
}

// identity returns the current identity, reloading the files first if any changed since they were
// last loaded. It runs on every handshake: three stats when nothing changed, which is cheap next to
// the handshake (connections are long-lived). A Secret volume rotates by swapping a symlink, so a
// changed file is a different inode; an in-place rewrite changes its mtime or size.
func (c *Credentials) identity() (*identity, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var stamps [len(credentialFiles)]os.FileInfo
	changed := c.cur == nil
	for i, name := range credentialFiles {
		fi, err := os.Stat(filepath.Join(c.dir, name))
		if err != nil {
			return c.keep(fmt.Errorf("TLS credentials: %w", err))
		}
		if p := c.stamps[i]; p == nil || !os.SameFile(p, fi) || !p.ModTime().Equal(fi.ModTime()) || p.Size() != fi.Size() {
			changed = true
		}
		stamps[i] = fi
	}
	if !changed {
		return c.cur, nil
	}
	// Stamps taken before reading: a change racing with the read is seen again next time.
	id, err := loadIdentity(c.dir)
	if err != nil {
		return c.keep(err)
	}
	if c.cur != nil {
		klog.InfoS("Reloaded the TLS credentials", "dir", c.dir, "subject", id.cert.Leaf.Subject.String(), "notAfter", id.cert.Leaf.NotAfter)
	}
	c.cur, c.stamps = id, stamps
	return id, nil
}

// keep answers a failed (re)load: with the last good identity if there is one, since a rotation
// caught half-way (a new certificate beside the old key) heals by itself on a later handshake.
func (c *Credentials) keep(err error) (*identity, error) {
	if c.cur == nil {
		return nil, err
	}
	klog.ErrorS(err, "Reloading the TLS credentials failed; using the previous ones", "dir", c.dir)
	return c.cur, nil
}

func loadIdentity(dir string) (*identity, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("TLS credentials in %s: %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("TLS credentials: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("TLS credentials: no PEM certificate in %s", filepath.Join(dir, CAFile))
	}
	return &identity{cert: cert, roots: roots}, nil
}

// serverTLS is the agent's TLS: a config built per handshake from the current identity, requiring
// and verifying a client certificate.
func (c *Credentials) serverTLS() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			id, err := c.identity()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{id.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    id.roots,
			}, nil
		},
	})
}

// clientTLS is the controller's TLS. A tls.Config has no per-handshake hook for the roots the
// server is verified against, so each handshake gets a TLS config of its own instead.
type clientTLS struct {
	creds      *Credentials
	serverName string
}

func (t *clientTLS) ClientHandshake(ctx context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	id, err := t.creds.identity()
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		RootCAs:      id.roots,
		ServerName:   t.serverName,
	}
	// gRPC's TLS takes the server name from the authority it is given: ours.
	return credentials.NewTLS(cfg).ClientHandshake(ctx, t.serverName, raw)
}

func (t *clientTLS) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("quota agent client credentials cannot serve")
}

func (t *clientTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (t *clientTLS) Clone() credentials.TransportCredentials {
	cp := *t
	return &cp
}

// OverrideServerName is deprecated in gRPC and unused (WithServerName sets it).
func (t *clientTLS) OverrideServerName(name string) error {
	t.serverName = name
	return nil
}
