//go:build tools

// Package hack pins the core dependencies before the code that uses them lands.
package hack

import (
	_ "github.com/container-storage-interface/spec/lib/go/csi"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "google.golang.org/grpc"
	_ "k8s.io/klog/v2"
	_ "k8s.io/mount-utils"
)
