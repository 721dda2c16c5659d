// Package deploy holds Paddock's Kubernetes manifests: the kustomize base in deploy/kubernetes, its
// overlays in deploy/overlays (one directory each, e.g. node-driver-registrar) and the examples in
// deploy/examples. It has no Go code of its own; its tests check the manifests without a cluster or
// kubectl: every YAML document decodes, strictly, into a typed Kubernetes object; the base and each
// overlay are built with the kustomize library, and what they build is checked as a whole
// installation; and the cross-references a cluster would only reject at apply time hold.
package deploy
