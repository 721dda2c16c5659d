package rpctest

import (
	"testing"

	"github.com/paddock-csi/paddock/pkg/quota/rpc"
)

func TestWrittenDirectoriesLoad(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []Identity{{CommonName: "agent", Server: true, Hosts: []string{"127.0.0.1", "nfs.example"}}, {CommonName: "client"}} {
		dir := t.TempDir()
		if err := ca.WriteDir(dir, id); err != nil {
			t.Fatal(err)
		}
		if _, err := rpc.LoadCredentials(dir); err != nil {
			t.Errorf("%s: LoadCredentials: %v", id.CommonName, err)
		}
	}
}
