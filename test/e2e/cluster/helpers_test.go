//go:build e2e

package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

type classOpts struct {
	params       map[string]string
	reclaim      v1.PersistentVolumeReclaimPolicy // default Delete
	wffc         bool
	mountOptions []string
}

// storageClass creates a Paddock StorageClass (name made unique), deleted at the end of the test.
func storageClass(t *testing.T, prefix string, o classOpts) *storagev1.StorageClass {
	t.Helper()
	sc := &storagev1.StorageClass{Parameters: o.params, MountOptions: o.mountOptions}
	if o.reclaim != "" {
		sc.ReclaimPolicy = &o.reclaim
	}
	if o.wffc {
		sc.VolumeBindingMode = ptr.To(storagev1.VolumeBindingWaitForFirstConsumer)
	}
	return env.NewStorageClass(t, prefix, sc)
}

type claimOpts struct {
	class       *string // nil: none (""), for static PVs
	labels      map[string]string
	annotations map[string]string
	modes       []v1.PersistentVolumeAccessMode // default RWX
	size        string                          // default 1Gi
	volumeName  string
}

func newClaim(ns, name string, o claimOpts) *v1.PersistentVolumeClaim {
	class := ""
	if o.class != nil {
		class = *o.class
	}
	pvc := kubeenv.Claim(ns, name, class, o.size, o.modes...)
	pvc.Labels, pvc.Annotations = o.labels, o.annotations
	pvc.Spec.VolumeName = o.volumeName
	return pvc
}

func createClaim(t *testing.T, ns, name string, o claimOpts) *v1.PersistentVolumeClaim {
	t.Helper()
	return env.CreateClaim(t, newClaim(ns, name, o))
}

// getPV returns the PV, or nil if there is none.
func getPV(t *testing.T, name string) *v1.PersistentVolume {
	t.Helper()
	pv, err := env.Cluster.Client.CoreV1().PersistentVolumes().Get(kubeenv.Context(t, time.Minute), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get PV %s: %v", name, err)
	}
	return pv
}

// ---------- the export, as the NFS server in the guest sees it ----------

func exists(t *testing.T, p string) bool {
	t.Helper()
	r, err := env.Guest.Exec(kubeenv.Context(t, time.Minute), "test", "-e", p)
	if err != nil {
		t.Fatal(err)
	}
	return r.ExitCode == 0
}

// statOf returns "uid:gid:mode(octal)" of a path on the server.
func statOf(t *testing.T, p string) string {
	t.Helper()
	return strings.TrimSpace(env.ShT(t, "stat -c %u:%g:%a "+kubeenv.Quote(p)))
}

// ls lists a directory on the server (names, sorted, dotfiles too).
func ls(t *testing.T, p string) []string {
	t.Helper()
	out := env.ShT(t, "ls -A1 "+kubeenv.Quote(p))
	names := strings.Fields(out)
	sort.Strings(names)
	return names
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	env.ShT(t, "mkdir -p "+kubeenv.Quote(path.Dir(p))+" && printf %s "+kubeenv.Quote(content)+" > "+kubeenv.Quote(p))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	return env.ShT(t, "cat "+kubeenv.Quote(p))
}

func waitGuest(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, what, func(context.Context) (bool, string, error) {
		ok, msg := cond()
		return ok, msg, nil
	})
}

// claimFile reads Paddock's claim record of subDir on export (.paddock/claims/<sha256(subDir)>): a
// symlink whose target is the record, or a regular file written by an earlier release.
func claimFile(t *testing.T, export, subDir string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(subDir))
	f := kubeenv.Quote(export + "/.paddock/claims/" + hex.EncodeToString(sum[:]))
	return env.ShT(t, "if [ -L "+f+" ]; then readlink "+f+"; else cat "+f+"; fi")
}
