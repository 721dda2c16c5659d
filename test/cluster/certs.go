package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the file names of everything the control plane needs. ECDSA P-256
// throughout: key generation is instant, and Kubernetes accepts ECDSA for
// serving, client and service-account signing keys alike.
type pki struct {
	caCert, caKey           string
	serverCert, serverKey   string
	adminCert, adminKey     string
	kcmCert, kcmKey         string
	schedCert, schedKey     string
	proxyCert, proxyKey     string
	saKey, saPub            string
	caPEM                   []byte
	adminCertPEM, adminKeyP []byte
}

func newPKI(dir string, sans []string) (*pki, error) {
	p := &pki{
		caCert: filepath.Join(dir, "ca.crt"), caKey: filepath.Join(dir, "ca.key"),
		serverCert: filepath.Join(dir, "apiserver.crt"), serverKey: filepath.Join(dir, "apiserver.key"),
		adminCert: filepath.Join(dir, "admin.crt"), adminKey: filepath.Join(dir, "admin.key"),
		kcmCert: filepath.Join(dir, "controller-manager.crt"), kcmKey: filepath.Join(dir, "controller-manager.key"),
		schedCert: filepath.Join(dir, "scheduler.crt"), schedKey: filepath.Join(dir, "scheduler.key"),
		proxyCert: filepath.Join(dir, "front-proxy-client.crt"), proxyKey: filepath.Join(dir, "front-proxy-client.key"),
		saKey: filepath.Join(dir, "sa.key"), saPub: filepath.Join(dir, "sa.pub"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The CA and the service-account key are reused when a state dir is
	// restarted, so tokens and kubeconfigs handed out earlier stay valid; the
	// leaf certificates are always reissued because the SANs may change.
	ca, caKey, err := loadCA(p.caCert, p.caKey)
	if err != nil {
		ca, caKey, err = makeCA(p.caCert, p.caKey)
		if err != nil {
			return nil, err
		}
	}
	p.caPEM, err = os.ReadFile(p.caCert)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(p.saKey); err != nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		if err := writeKey(p.saKey, k); err != nil {
			return nil, err
		}
		pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
			return nil, err
		}
	}

	// The service IP and in-cluster names are included so that a client
	// resolving kubernetes.default would also verify, though nothing here
	// routes to them.
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 0, 0, 1)},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else if s != "" {
			server.DNSNames = append(server.DNSNames, s)
		}
	}
	leaves := []struct {
		tmpl      *x509.Certificate
		cert, key string
	}{
		{server, p.serverCert, p.serverKey},
		// system:masters bypasses RBAC: the admin is the test itself.
		{clientTmpl("paddock-admin", "system:masters"), p.adminCert, p.adminKey},
		// The components get their real identities so the default RBAC
		// bootstrap policy applies to them as in a production cluster.
		{clientTmpl("system:kube-controller-manager"), p.kcmCert, p.kcmKey},
		{clientTmpl("system:kube-scheduler"), p.schedCert, p.schedKey},
		// The aggregation layer's identity; configuring it also gives the
		// delegating components a requestheader CA, so they do not log an
		// error about the missing bundle every few seconds.
		{clientTmpl("front-proxy-client"), p.proxyCert, p.proxyKey},
	}
	for _, l := range leaves {
		if err := issue(l.tmpl, ca, caKey, l.cert, l.key); err != nil {
			return nil, err
		}
	}
	if p.adminCertPEM, err = os.ReadFile(p.adminCert); err != nil {
		return nil, err
	}
	if p.adminKeyP, err = os.ReadFile(p.adminKey); err != nil {
		return nil, err
	}
	return p, nil
}

func clientTmpl(cn string, orgs ...string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func makeCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "paddock-test-ca"},
		NotBefore:             now.Add(-time.Hour), // tolerate small clock skew with a guest
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKey(keyFile, k); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, k, err
}

func loadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cBlock, _ := pem.Decode(cb)
	kBlock, _ := pem.Decode(kb)
	if cBlock == nil || kBlock == nil {
		return nil, nil, errors.New("bad CA PEM")
	}
	c, err := x509.ParseCertificate(cBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("CA key is not a signer")
	}
	return c, s, nil
}

func issue(tmpl *x509.Certificate, ca *x509.Certificate, caKey crypto.Signer, certFile, keyFile string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(365 * 24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("issue %s: %w", tmpl.Subject.CommonName, err)
	}
	if err := writeKey(keyFile, k); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeKey(file string, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}
