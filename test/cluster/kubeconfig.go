package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type kubeUser struct {
	certFile, keyFile string
	token             string
}

// writeKubeconfig writes a single-context kubeconfig. The CA (and client
// cert) is embedded so the file can be copied, e.g. into a VM, without the pki
// dir. Written by hand rather than with clientcmd, which would pull a module
// (pflag) the main go.mod does not list.
func writeKubeconfig(path, server string, ca []byte, u kubeUser) error {
	b64 := base64.StdEncoding.EncodeToString
	user := ""
	if u.certFile != "" {
		cert, err := os.ReadFile(u.certFile)
		if err != nil {
			return err
		}
		key, err := os.ReadFile(u.keyFile)
		if err != nil {
			return err
		}
		user = fmt.Sprintf("    client-certificate-data: %s\n    client-key-data: %s\n", b64(cert), b64(key))
	}
	if u.token != "" {
		user += fmt.Sprintf("    token: %s\n", u.token)
	}
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: paddock
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
%scontexts:
- name: paddock
  context:
    cluster: paddock
    user: user
current-context: paddock
`, server, b64(ca), user)
	return os.WriteFile(path, []byte(doc), 0o600)
}

// saTokenTTL is long enough for any test run, including a slow VM suite.
const saTokenTTL = 24 * 3600

// ServiceAccountKubeconfig writes a kubeconfig for the ServiceAccount
// namespace/name with a token from the TokenRequest API, pointing at serverURL
// (default c.URL; e.g. https://10.0.2.2:PORT for a QEMU guest, which then needs
// "10.0.2.2" in Options.ExtraSANs). A component run with it has exactly the
// RBAC its manifests grant. The ServiceAccount must exist. Returns the path.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name, serverURL string) (string, error) {
	if serverURL == "" {
		serverURL = c.URL
	}
	ttl := int64(saTokenTTL)
	tr, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for serviceaccount %s/%s: %w", namespace, name, err)
	}
	path := filepath.Join(c.Dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	if err := writeKubeconfig(path, serverURL, c.CAData, kubeUser{token: tr.Status.Token}); err != nil {
		return "", err
	}
	return path, nil
}

// NodeKubeconfig writes a kubeconfig for the kubelet of node name, with a
// client certificate of system:node:<name> in system:nodes (what TLS
// bootstrapping would end with), pointing at serverURL (default c.URL).
// Start the cluster with Options.NodeAuthorizer for it to be authorized as a
// node. Returns the path.
func (c *Cluster) NodeKubeconfig(name, serverURL string) (string, error) {
	if serverURL == "" {
		serverURL = c.URL
	}
	ca, caKey, err := loadCA(c.pki.caCert, c.pki.caKey)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(c.Dir, "pki")
	cert, key := filepath.Join(dir, "node-"+name+".crt"), filepath.Join(dir, "node-"+name+".key")
	if err := issue(clientTmpl("system:node:"+name, "system:nodes"), ca, caKey, cert, key); err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "node-"+name+".kubeconfig")
	if err := writeKubeconfig(path, serverURL, c.CAData, kubeUser{certFile: cert, keyFile: key}); err != nil {
		return "", err
	}
	return path, nil
}
