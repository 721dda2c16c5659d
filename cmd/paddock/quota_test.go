package main

import (
	"context"
	"strings"
	"testing"

	"github.com/paddock-csi/paddock/pkg/quota/rpc/rpctest"
)

func TestQuotaAgentRefusesToStartWithout(t *testing.T) {
	ca, err := rpctest.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	if err := ca.WriteDir(creds, rpctest.Identity{CommonName: "agent", Server: true, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	notXFS := t.TempDir()
	for _, tc := range []struct{ args, want string }{
		{"--mode=quota-agent --quota-export-roots=/srv", "--quota-credentials is required"},
		{"--mode=quota-agent --quota-credentials=" + creds, "--quota-export-roots is required"},
		{"--mode=quota-agent --quota-credentials=" + creds + " --quota-export-roots=/srv --quota-project-ids=5-1", "--quota-project-ids"},
		{"--mode=quota-agent --quota-credentials=/nonexistent --quota-export-roots=/srv", "--quota-credentials"},
		{"--mode=quota-agent --quota-credentials=" + creds + " --quota-export-roots=relative", "must be a clean absolute path"},
		// A directory on this machine's test filesystem: not XFS with enforced project quotas.
		{"--mode=quota-agent --quota-credentials=" + creds + " --quota-export-roots=" + notXFS, "project quotas"},
	} {
		f, err := parseFlags(strings.Fields(tc.args))
		if err != nil {
			t.Fatalf("%s: %v", tc.args, err)
		}
		err = runQuotaAgent(context.Background(), f)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestControllerQuotaCredentials(t *testing.T) {
	f, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if agents, _, err := f.quota.controllerAgents(); err != nil || agents != nil {
		t.Fatalf("without --quota-credentials: %v, %v; want no agents (enforcing classes refused)", agents != nil, err)
	}
	f.quota.credentials = t.TempDir()
	if _, _, err := f.quota.controllerAgents(); err == nil || !strings.Contains(err.Error(), "--quota-credentials") {
		t.Fatalf("empty credentials directory: %v", err)
	}
	ca, _ := rpctest.NewCA("test")
	if err := ca.WriteDir(f.quota.credentials, rpctest.Identity{CommonName: "controller"}); err != nil {
		t.Fatal(err)
	}
	agents, closeAll, err := f.quota.controllerAgents()
	if err != nil || agents == nil {
		t.Fatalf("with credentials: %v", err)
	}
	defer closeAll()
	a, err := agents("nfs.example:9820")
	b, _ := agents("nfs.example:9820")
	if err != nil || a != b {
		t.Fatalf("the pool gave %p and %p (%v), want one client per agent", a, b, err)
	}
}
