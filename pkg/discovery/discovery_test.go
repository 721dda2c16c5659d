package discovery

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

const driverName = "nfs.paddock.dev"

type recorder struct {
	mu  sync.Mutex
	got []share.Export
}

func (r *recorder) AddExports(xs ...share.Export) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, xs...)
}

func (r *recorder) exports() []share.Export {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func class(name, provisioner string, params map[string]string, opts ...string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner, Parameters: params, MountOptions: opts}
}

func pv(name, driver, handle string, opts ...string) *v1.PersistentVolume {
	return &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.PersistentVolumeSpec{
		MountOptions: opts,
		PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle,
			VolumeAttributes: map[string]string{"server": "static.example", "share": "/static", "subDir": "s"}}},
	}}
}

func TestRegisterLearnsClassesAndProvisionedPVs(t *testing.T) {
	id := volume.Volume{Server: "pv.example", Share: "/pvs", SubDir: "pvc-1", Name: "pvc-1", OnDelete: volume.OnDeleteDelete, NFSVers: "4.1"}.ID()
	cs := fake.NewClientset(
		class("ours", driverName, map[string]string{"server": "a.example", "share": "/a"}, "nfsvers=3", "hard", "noexec"),
		class("other-driver", "other.csi.example", map[string]string{"server": "x.example", "share": "/x"}),
		class("bad", driverName, map[string]string{"server": "b.example", "share": "relative"}),
		class("bad-options", driverName, map[string]string{"server": "c.example", "share": "/c"}, "bg"),
		pv("provisioned", driverName, id, "nconnect=2"),
		pv("static", driverName, "hand-written-handle"),
		pv("foreign", "other.csi.example", id),
	)
	f := informers.NewSharedInformerFactory(cs, 0)
	classes, pvs := f.Storage().V1().StorageClasses().Informer(), f.Core().V1().PersistentVolumes().Informer()
	r := &recorder{}
	if err := Register(driverName, classes, pvs, r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())

	want := []share.Export{
		{Server: "a.example", Share: "/a", NFSVers: "3", Options: "hard,nolock"},
		{Server: "pv.example", Share: "/pvs", NFSVers: "4.1", Options: "nconnect=2,nolock"},
	}
	waitFor(t, "both exports learned", func() bool { return len(r.exports()) >= 2 })
	got := r.exports()
	slices.SortFunc(got, func(a, b share.Export) int { return strings.Compare(a.Server, b.Server) })
	if !slices.Equal(got, want) {
		t.Fatalf("learned %+v, want %+v", got, want)
	}

	// A class that changes is learned again, with its new options.
	sc, _ := cs.StorageV1().StorageClasses().Get(ctx, "ours", metav1.GetOptions{})
	sc.MountOptions = []string{"nfsvers=3", "soft"}
	if _, err := cs.StorageV1().StorageClasses().Update(ctx, sc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changed class learned", func() bool {
		l := r.exports()
		return l[len(l)-1] == share.Export{Server: "a.example", Share: "/a", NFSVers: "3", Options: "nolock,soft"}
	})
}

func TestRegisterRefusesIncompleteSetups(t *testing.T) {
	f := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	if err := Register("", f.Storage().V1().StorageClasses().Informer(), f.Core().V1().PersistentVolumes().Informer(), &recorder{}); err == nil {
		t.Error("Register with no driver name succeeded")
	}
	if err := Register(driverName, nil, nil, &recorder{}); err == nil {
		t.Error("Register with no informers succeeded")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
