package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// nfs4Procs names the counters of the "proc4" line of /proc/net/rpc/nfs,
// in the kernel's order (include/linux/nfs4.h, NFSPROC4_CLNT_*).
var nfs4Procs = []string{"NULL", "READ", "WRITE", "COMMIT", "OPEN", "OPEN_CONFIRM", "OPEN_NOATTR", "OPEN_DOWNGRADE",
	"CLOSE", "SETATTR", "FSINFO", "RENEW", "SETCLIENTID", "SETCLIENTID_CONFIRM", "LOCK", "LOCKT", "LOCKU", "ACCESS",
	"GETATTR", "LOOKUP", "LOOKUP_ROOT", "REMOVE", "RENAME", "LINK", "SYMLINK", "CREATE", "PATHCONF", "STATFS",
	"READLINK", "READDIR", "SERVER_CAPS", "DELEGRETURN", "GETACL", "SETACL", "FS_LOCATIONS", "RELEASE_LOCKOWNER",
	"SECINFO", "FSID_PRESENT", "EXCHANGE_ID", "CREATE_SESSION", "DESTROY_SESSION", "SEQUENCE", "GET_LEASE_TIME",
	"RECLAIM_COMPLETE", "LAYOUTGET", "GETDEVICEINFO", "LAYOUTCOMMIT", "LAYOUTRETURN", "SECINFO_NO_NAME",
	"TEST_STATEID", "FREE_STATEID", "GETDEVICELIST", "BIND_CONN_TO_SESSION", "DESTROY_CLIENTID", "SEEK",
	"ALLOCATE", "DEALLOCATE", "LAYOUTSTATS", "CLONE", "COPY", "OFFLOAD_CANCEL", "LOOKUPP", "LAYOUTERROR",
	"COPY_NOTIFY", "GETXATTR", "SETXATTR", "LISTXATTRS", "REMOVEXATTR", "READ_PLUS"}

// nfsCounters reads the guest's NFSv4 client RPC counters (all mounts).
func (b *bench) nfsCounters(ctx context.Context) ([]int64, error) {
	out, err := b.exec(ctx, "cat", "/proc/net/rpc/nfs")
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "proc4" {
			continue
		}
		var v []int64
		for _, s := range f[2:] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/rpc/nfs: %q", l)
			}
			v = append(v, n)
		}
		return v, nil
	}
	return nil, fmt.Errorf("/proc/net/rpc/nfs has no proc4 line")
}

// rpcDelta is what happened between two counter readings, per op.
type rpcDelta struct {
	total int64
	by    map[string]int64
}

func delta(before, after []int64) rpcDelta {
	d := rpcDelta{by: map[string]int64{}}
	for i := range after {
		if i >= len(before) {
			break
		}
		n := after[i] - before[i]
		if n <= 0 {
			continue
		}
		name := fmt.Sprintf("op%d", i)
		if i < len(nfs4Procs) {
			name = nfs4Procs[i]
		}
		d.by[name] += n
		d.total += n
	}
	return d
}

// perOp formats the delta divided by n ops, biggest first.
func (d rpcDelta) perOp(n int) string {
	if n <= 0 {
		return ""
	}
	type kv struct {
		k string
		v int64
	}
	var l []kv
	for k, v := range d.by {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || (l[i].v == l[j].v && l[i].k < l[j].k) })
	var parts []string
	for _, e := range l {
		parts = append(parts, fmt.Sprintf("%s %.1f", e.k, float64(e.v)/float64(n)))
	}
	return strings.Join(parts, ", ")
}

// counted runs f between two readings of the NFS client counters.
func (b *bench) counted(ctx context.Context, f func() error) (rpcDelta, error) {
	before, err := b.nfsCounters(ctx)
	if err != nil {
		return rpcDelta{}, err
	}
	if err := f(); err != nil {
		return rpcDelta{}, err
	}
	after, err := b.nfsCounters(ctx)
	if err != nil {
		return rpcDelta{}, err
	}
	return delta(before, after), nil
}
