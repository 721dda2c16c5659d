// Package deploy holds Paddock's Kubernetes manifests: the kustomize base in deploy/kubernetes and
// the examples in deploy/examples. It has no Go code of its own; deploy_test.go checks the manifests
// without a cluster or kubectl: every YAML document decodes, strictly, into a typed Kubernetes object,
// and the cross-references a cluster would only reject at apply time hold.
package deploy
