//go:build e2e

package cluster

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/pkg/provisioner"
	"github.com/paddock-csi/paddock/pkg/volume"
	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// failoverPort is the guest TCP port the standby controller serves CSI on, forwarded to the host so
// the test can call its ListVolumes (main_test.go forwards it).
const failoverPort = 10099

// Two controller replicas, each with an empty work dir of its own as in the shipped Deployment. The
// leader deletes one volume into the trash (kept trashGrace) and archives another (kept
// archiveRetention), and is killed (SIGKILL) before either is due. The standby takes the Lease, learns
// the export from the cluster (it never served a call on it), removes the trash entry and the expired
// archive, and its ListVolumes lists every provisioned volume of the cluster. The timeline is logged.
func TestFailoverResumesReapingExpiryAndListing(t *testing.T) {
	const (
		trashGrace = 40 * time.Second
		retention  = 60 * time.Second
		leaderName = "failover-a"
		standby    = "failover-b"
	)
	ctx := kubeenv.Context(t, 15*time.Minute)
	cs := env.Cluster.Client
	leaseName := provisioner.LeaseName(kubeenv.Driver)
	holder := func(ctx context.Context) string {
		l, err := cs.CoordinationV1().Leases(kubeenv.Namespace).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}

	// The suite's controller steps aside (SIGTERM releases its Lease) and comes back at the end.
	before := holder(ctx)
	if err := env.StopPaddock(ctx, ctrlName, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = env.StopPaddock(ctx, leaderName, syscall.SIGKILL)
		_ = env.StopPaddock(ctx, standby, syscall.SIGTERM)
		if err := startController(ctx); err != nil {
			t.Errorf("restarting the suite's controller: %v", err)
		}
	})
	args := func(name, endpoint string) []string {
		a := kubeenv.ControllerArgs(ctrlKubeconfig, kubeenv.RunDir+"/"+name+".sock", "/var/lib/paddock-"+name)
		for i := range a {
			if strings.HasPrefix(a[i], "--endpoint=") && endpoint != "" {
				a[i] = "--endpoint=" + endpoint
			}
		}
		return append(a, "--trash-grace="+trashGrace.String())
	}
	if err := env.StartPaddock(ctx, leaderName, kubeenv.RunDir+"/"+leaderName+".sock", args(leaderName, "")...); err != nil {
		t.Fatal(err)
	}
	var leaderID string
	kubeenv.WaitT(t, time.Minute, "the first replica to take the Lease", func(ctx context.Context) (bool, string, error) {
		leaderID = holder(ctx)
		return leaderID != "" && leaderID != before, "holder " + leaderID, nil
	})
	if err := env.StartPaddock(ctx, standby, "", args(standby, fmt.Sprintf("tcp://0.0.0.0:%d", failoverPort))...); err != nil {
		t.Fatal(err)
	}

	ns := env.NewNamespace(t, "failover")
	subDir := "failover/${pvc.metadata.namespace}-${pvc.metadata.name}"
	deleting := storageClass(t, "failover-delete", classOpts{params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": subDir}})
	archiving := storageClass(t, "failover-archive", classOpts{params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": subDir,
		"onDelete": "archive", "archiveRetention": retention.String()}})
	createClaim(t, ns, "trashed", claimOpts{class: &deleting.Name})
	createClaim(t, ns, "archived", claimOpts{class: &archiving.Name})
	createClaim(t, ns, "kept", claimOpts{class: &deleting.Name})
	_, trashedPV := env.WaitBound(t, ns, "trashed")
	_, archivedPV := env.WaitBound(t, ns, "archived")
	_, keptPV := env.WaitBound(t, ns, "kept")
	for _, c := range []string{"trashed", "archived", "kept"} {
		writeFile(t, kubeenv.ExportA+"/failover/"+ns+"-"+c+"/data", "payload-"+c)
	}

	// Delete two, and see the trash and the archive entries appear.
	env.DeleteClaim(t, ns, "trashed")
	env.DeleteClaim(t, ns, "archived")
	env.WaitPVGone(t, trashedPV.Name)
	env.WaitPVGone(t, archivedPV.Name)
	deleted := time.Now()
	entry := func(area, part string) string {
		for _, e := range ls(t, kubeenv.ExportA+"/.paddock/"+area) {
			if strings.Contains(e, part) {
				return e
			}
		}
		return ""
	}
	trashEntry, archiveEntry := entry("trash", trashedPV.Name), entry("archive", ns+"-archived")
	if trashEntry == "" || archiveEntry == "" {
		t.Fatalf("after the deletes: trash entry %q, archive entry %q (trash %v, archive %v)", trashEntry, archiveEntry,
			ls(t, kubeenv.ExportA+"/.paddock/trash"), ls(t, kubeenv.ExportA+"/.paddock/archive"))
	}

	// Kill the leader before either is due.
	if err := env.StopPaddock(ctx, leaderName, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if since := killed.Sub(deleted); since >= trashGrace {
		t.Fatalf("the leader was killed %v after the deletes, not before the trash grace (%v): the test proves nothing", since, trashGrace)
	}
	if got := entry("trash", trashedPV.Name); got == "" {
		t.Fatal("the trash entry was gone before the leader was killed: the test proves nothing")
	}

	var newID string
	kubeenv.WaitT(t, 2*time.Minute, "the standby to take the Lease", func(ctx context.Context) (bool, string, error) {
		newID = holder(ctx)
		return newID != "" && newID != leaderID, "holder " + newID, nil
	})
	tookOver := time.Now()
	waitGuest(t, "the standby to reap the trash entry "+trashEntry, func() (bool, string) {
		return entry("trash", trashedPV.Name) == "", "still in the trash"
	})
	reaped := time.Now()
	waitGuest(t, "the standby to expire the archive "+archiveEntry, func() (bool, string) {
		return entry("archive", ns+"-archived") == "", "still archived"
	})
	expired := time.Now()
	if got := readFile(t, kubeenv.ExportA+"/failover/"+ns+"-kept/data"); got != "payload-kept" {
		t.Errorf("the kept volume's file reads %q", got)
	}

	// The standby's ListVolumes lists every provisioned volume the cluster has.
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", env.Guest.HostPort(failoverPort)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	listed := map[string]bool{}
	var token string
	for {
		resp, err := csi.NewControllerClient(conn).ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: token})
		if err != nil {
			t.Fatalf("ListVolumes on the new leader: %v", err)
		}
		for _, e := range resp.GetEntries() {
			listed[e.GetVolume().GetVolumeId()] = true
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	listedAt := time.Now()
	pvs, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, missing := 0, []string{}
	for _, pv := range pvs.Items {
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != kubeenv.Driver || pv.Status.Phase != "Bound" {
			continue
		}
		if _, err := volume.ParseID(pv.Spec.CSI.VolumeHandle); err != nil {
			continue // static
		}
		want++
		if !listed[pv.Spec.CSI.VolumeHandle] {
			missing = append(missing, pv.Name)
		}
	}
	if len(missing) > 0 || !listed[keptPV.Spec.CSI.VolumeHandle] {
		t.Errorf("ListVolumes on the new leader lists %d volumes and misses %d of the %d Bound provisioned PVs: %v (kept: %t)",
			len(listed), len(missing), want, missing, listed[keptPV.Spec.CSI.VolumeHandle])
	}
	t.Logf("failover timeline: deletes done at 0s; leader killed at %v; Lease taken by the standby at %v; trash entry (grace %v) reaped at %v; archive (retention %v) expired at %v; ListVolumes listed %d volumes (%d Bound PVs) at %v",
		killed.Sub(deleted).Round(100*time.Millisecond), tookOver.Sub(deleted).Round(100*time.Millisecond), trashGrace,
		reaped.Sub(deleted).Round(100*time.Millisecond), retention, expired.Sub(deleted).Round(100*time.Millisecond),
		len(listed), want, listedAt.Sub(deleted).Round(100*time.Millisecond))
}
