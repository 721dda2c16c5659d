package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-csi/paddock/pkg/quota/rpc/rpctest"
	"github.com/paddock-csi/paddock/test/bench/load"
)

// The quota figure: what enforced capacity adds to a CreateVolume. Both runs create on the guest's
// XFS export (/srv/nfs/q, prjquota), with one controller, alternately, so the ratio compares the same
// filesystem in the same boot; the agent runs beside nfsd as it would on an NFS server host.
var agentAddr = "127.0.0.1:" + strconv.Itoa(agentPort)

const (
	exportQ   = "/srv/nfs/q"
	agentPort = 9820
	qctrlSock = "/run/paddock/qctrl.sock"
	quotaReps = 3
)

func (b *bench) quota(ctx context.Context, sz sizes) error {
	ca, err := rpctest.NewCA("paddock-bench-ca")
	if err != nil {
		return err
	}
	agentDir, clientDir := filepath.Join(b.resDir, "quota-agent"), filepath.Join(b.resDir, "quota-client")
	if err := ca.WriteDir(agentDir, rpctest.Identity{CommonName: "quota-agent", Server: true, Hosts: []string{"127.0.0.1"}}); err != nil {
		return err
	}
	if err := ca.WriteDir(clientDir, rpctest.Identity{CommonName: "paddock-controller"}); err != nil {
		return err
	}
	agentArgs := []string{"--mode=quota-agent", "--quota-credentials=" + b.gres + "/quota-agent",
		"--quota-export-roots=" + exportQ, "--quota-listen=" + agentAddr}
	cmd := "exec /host/paddock " + strings.Join(agentArgs, " ")
	b.commands = append(b.commands, "/host/paddock "+strings.Join(agentArgs, " "))
	if err := b.g.Spawn(ctx, "quota-agent", []string{"/bin/sh", "-c", cmd}, nil); err != nil {
		return err
	}
	defer b.stopPaddock(ctx, "quota-agent")
	// Listening once /proc/net/tcp has 127.0.0.1 (0100007F) and the port, in hex, in state LISTEN (0A).
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := b.g.Exec(ctx, "grep", "-q", fmt.Sprintf("0100007F:%04X 00000000:0000 0A", agentPort), "/proc/net/tcp")
		if err != nil {
			return err
		}
		if res.ExitCode == 0 {
			break
		}
		if running, code, _ := b.g.SpawnStatus(ctx, "quota-agent"); !running || time.Now().After(deadline) {
			log, _ := b.g.Exec(ctx, "tail", "-n", "30", "/tmp/spawn/quota-agent.log")
			return fmt.Errorf("quota agent not listening (running %v, exit %d):\n%s", running, code, log.Stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := b.spawnPaddock(ctx, "qctrl", qctrlSock, "--mode=controller", "--endpoint=unix://"+qctrlSock,
		"--work-dir=/var/lib/paddock-q", "--node-id=paddock-guest", "--quota-credentials="+b.gres+"/quota-client"); err != nil {
		return err
	}
	defer b.stopPaddock(ctx, "qctrl")
	ep := "unix://" + qctrlSock
	plain := "server=127.0.0.1,share=" + exportQ
	enforced := plain + ",quota=enforce,quotaAgent=" + agentAddr
	n := strconv.Itoa(sz.Seq)
	run := func(name, params string) (load.OpStats, error) {
		ids := b.gres + "/ids-" + name + ".json"
		c, err := b.csiload(ctx, name, "-endpoint", ep, "-scenario", "create", "-n", n, "-workers", "1",
			"-params", params, "-access-mode", "RWX", "-capacity", "10Mi", "-ids", ids)
		if err != nil {
			return load.OpStats{}, err
		}
		if _, err := b.csiload(ctx, name+"-delete", "-endpoint", ep, "-scenario", "delete", "-ids", ids, "-workers", "1"); err != nil {
			return load.OpStats{}, err
		}
		return op(c, load.OpCreateVolume), nil
	}
	// Warm both paths (the export's mount, the agent's connection) before timing.
	for _, p := range []string{plain, enforced} {
		if _, err := b.csiload(ctx, "quota-warmup", "-endpoint", ep, "-scenario", "create-delete", "-n", "5", "-workers", "1",
			"-params", p, "-access-mode", "RWX", "-capacity", "10Mi"); err != nil {
			return err
		}
	}
	var ratios []float64
	var last, lastPlain load.OpStats
	for rep := 1; rep <= quotaReps; rep++ {
		p, err := run(fmt.Sprintf("create-xfs-plain-%d", rep), plain)
		if err != nil {
			return err
		}
		q, err := run(fmt.Sprintf("create-xfs-quota-%d", rep), enforced)
		if err != nil {
			return err
		}
		if p.Count == 0 || q.Count == 0 || p.P50Ms == 0 || p.Errors+q.Errors > 0 {
			return fmt.Errorf("rep %d: plain %d ops (%d failed: %s), quota %d ops (%d failed: %s)", rep, p.Count, p.Errors, p.FirstError, q.Count, q.Errors, q.FirstError)
		}
		ratios = append(ratios, q.P50Ms/p.P50Ms)
		last, lastPlain = q, p
	}
	sorted := append([]float64(nil), ratios...)
	sort.Float64s(sorted)
	reps := make([]string, len(ratios))
	for i, r := range ratios {
		reps[i] = fmt.Sprintf("%.2f×", r)
	}
	b.add(row{fig: "CreateVolume p50 with enforced capacity (quota=enforce) vs without, same XFS export",
		value: fmt.Sprintf("%s vs %s (last rep)", msStr(last.P50Ms), msStr(lastPlain.P50Ms)),
		ratio: fmt.Sprintf("%.2f× (median of %d reps; %s)", sorted[len(sorted)/2], quotaReps, strings.Join(reps, ", ")),
		group: "quota",
		note:  "sequential, alternating plain and enforcing runs of " + n + " volumes each; the difference is the agent's Set (one mutual-TLS gRPC call: a record file, Q_XSETQLIM, FS_IOC_FSSETXATTR)"})
	return nil
}
