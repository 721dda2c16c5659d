package test

import (
	"path/filepath"
	"testing"
)

// TestVariantsAreTheOverlays: the chart's sidecar values, and quota.enabled, make what the matching
// overlays of deploy/overlays (the base with one component of deploy/components each) make.
func TestVariantsAreTheOverlays(t *testing.T) {
	for vals, dir := range map[string]string{
		`{registrar: {mode: sidecar}}`:   "../../overlays/node-driver-registrar",
		`{snapshotter: {enabled: true}}`: "../../overlays/snapshots",
		`{resizer: {enabled: true}}`:     "../../overlays/resizer",
		`{quota: {enabled: true}}`:       "../../overlays/quota",
	} {
		t.Run(filepath.Base(dir), func(t *testing.T) { sameAsKustomize(t, vals, dir) })
	}
}
