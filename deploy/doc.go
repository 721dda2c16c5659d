// Package deploy holds Paddock's Kubernetes manifests: the kustomize base in deploy/kubernetes, the
// components in deploy/components (sidecars, node-driver-registrar, kubelet-dir, quota) and their
// overlays in deploy/overlays (one directory each, e.g. node-driver-registrar), the examples in
// deploy/examples, the quota agent's examples in deploy/quota-agent (a systemd unit, an in-cluster
// manifest, cert-manager certificates, a StorageClass) and the Helm chart in deploy/helm. It has no
// Go code of its own; its tests check the manifests without a cluster or kubectl: every YAML
// document decodes, strictly, into a typed Kubernetes object; the base, each overlay and every
// combination of the components are built with the kustomize library, and what they build is
// checked as a whole installation; and the cross-references a cluster would only reject at apply
// time hold (for the quota agent's examples: the flags the binary has, the Secrets each side
// mounts, the names the certificates carry, and a mutual TLS handshake with certificates made as
// cert-manager would make them). The chart's tests are in deploy/helm/test, a module of its own.
package deploy
