package rpc_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/quota/rpc"
)

// fakeQuotas records the calls it gets and answers them from its fields.
type fakeQuotas struct {
	mu       sync.Mutex
	calls    []string
	usage    quota.Usage
	capacity quota.Capacity
	err      error
	block    bool // wait for the call's context to end, and return its error
}

func (f *fakeQuotas) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeQuotas) answer(ctx context.Context) error {
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fakeQuotas) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeQuotas) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeQuotas) Set(ctx context.Context, t quota.Target, l quota.Limit) (quota.Usage, error) {
	f.record(fmt.Sprintf("Set %s %s %d/%d", t.Export, t.Path, l.Bytes, l.Inodes))
	return f.usage, f.answer(ctx)
}

func (f *fakeQuotas) Release(ctx context.Context, t quota.Target) error {
	f.record(fmt.Sprintf("Release %s %s", t.Export, t.Path))
	return f.answer(ctx)
}

func (f *fakeQuotas) Usage(ctx context.Context, t quota.Target) (quota.Usage, error) {
	f.record(fmt.Sprintf("Usage %s %s", t.Export, t.Path))
	return f.usage, f.answer(ctx)
}

func (f *fakeQuotas) Capacity(ctx context.Context, export string) (quota.Capacity, error) {
	f.record("Capacity " + export)
	return f.capacity, f.answer(ctx)
}

// testCA issues certificates for the tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

var serial = struct {
	sync.Mutex
	n int64
}{}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(serial.n)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf describes a certificate to issue.
type leaf struct {
	cn      string
	dns     []string
	ips     []net.IP
	client  bool // client auth usage, else server auth
	expired bool
}

// issue returns the PEM certificate and key of l, signed by ca.
func (ca *testCA) issue(t *testing.T, l leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	notBefore, notAfter := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if l.expired {
		notBefore, notAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	}
	usage := x509.ExtKeyUsageServerAuth
	if l.client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: l.cn},
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// secret is a credentials directory laid out as kubelet mounts a Secret: the files are symlinks
// into ..data, itself a symlink to a timestamped directory, swapped atomically on update.
type secret struct {
	dir     string
	version int
}

func newSecret(t *testing.T, ca *testCA, l leaf, trusted *testCA) *secret {
	t.Helper()
	s := &secret{dir: t.TempDir()}
	for _, name := range []string{rpc.CertFile, rpc.KeyFile, rpc.CAFile} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(s.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	s.update(t, ca, l, trusted)
	return s
}

// update writes a certificate of ca for l and trusted's certificate as the CA bundle, then swaps
// ..data to them.
func (s *secret) update(t *testing.T, ca *testCA, l leaf, trusted *testCA) {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, l)
	s.version++
	ts := fmt.Sprintf("..v%d", s.version)
	writeFiles(t, filepath.Join(s.dir, ts), certPEM, keyPEM, trusted.pem)
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// writeFiles writes a plain credentials directory.
func writeFiles(t *testing.T, dir string, certPEM, keyPEM, caPEM []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{rpc.CertFile: certPEM, rpc.KeyFile: keyPEM, rpc.CAFile: caPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// credsDir writes a plain credentials directory with a certificate of ca for l, trusting trusted.
func credsDir(t *testing.T, ca *testCA, l leaf, trusted *testCA) string {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM := ca.issue(t, l)
	writeFiles(t, dir, certPEM, keyPEM, trusted.pem)
	return dir
}

func loadCreds(t *testing.T, dir string) *rpc.Credentials {
	t.Helper()
	c, err := rpc.LoadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startAgent serves q with the credentials in dir on a fresh 127.0.0.1 port and returns its address.
func startAgent(t *testing.T, q quota.Quotas, dir string, opts ...rpc.ServerOption) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := rpc.NewServer(q, loadCreds(t, dir), opts...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string, creds *rpc.Credentials, opts ...rpc.DialOption) *rpc.Client {
	t.Helper()
	c, err := rpc.Dial(addr, creds, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The identities of most tests: the agent's certificate names 127.0.0.1 (what Dial verifies by
// default) and quota-agent.test.
var (
	agentLeaf      = leaf{cn: "quota-agent", dns: []string{"quota-agent.test"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}}
	controllerLeaf = leaf{cn: "paddock-controller", client: true}
)
