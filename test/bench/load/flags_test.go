package load

import (
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

func TestParseKV(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{"", map[string]string{}, ""},
		{"server=10.0.2.2", map[string]string{"server": "10.0.2.2"}, ""},
		{"server=s,share=/export", map[string]string{"server": "s", "share": "/export"}, ""},
		{"a=1,,b=2,", map[string]string{"a": "1", "b": "2"}, ""},
		{"empty=", map[string]string{"empty": ""}, ""},
		{"k=a=b", map[string]string{"k": "a=b"}, ""},
		{`mountOptions=nfsvers=4.1\,hard,x=y`, map[string]string{"mountOptions": "nfsvers=4.1,hard", "x": "y"}, ""},
		{`p=a\\b`, map[string]string{"p": `a\b`}, ""},
		{"csi.storage.k8s.io/pvc/name=x", map[string]string{"csi.storage.k8s.io/pvc/name": "x"}, ""},
		{" k =v", map[string]string{"k": "v"}, ""},
		{"novalue", nil, "want key=value"},
		{"=v", nil, "want key=value"},
		{"a=1,a=2", nil, "given twice"},
		{`a=x\y`, nil, "backslash"},
		{`a=x\`, nil, "backslash"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseKV(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseKV(%q) error %v, want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseKV(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestKVFlagRepeatsAndRoundTrips(t *testing.T) {
	var f KVFlag
	for _, s := range []string{"a=1", `b=x\,y,c=`} {
		if err := f.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"a": "1", "b": "x,y", "c": ""}
	if !reflect.DeepEqual(f.M, want) {
		t.Fatalf("KVFlag = %v, want %v", f.M, want)
	}
	again, err := ParseKV(f.String())
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("ParseKV(String()=%q) = %v, %v", f.String(), again, err)
	}
	if err := f.Set("a=3"); err == nil {
		t.Error("repeating a key across -params flags should fail")
	}
}

func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"ro", []string{"ro"}},
		{"nfsvers=4.1,hard,timeo=600", []string{"nfsvers=4.1", "hard", "timeo=600"}},
		{",a,,b,", []string{"a", "b"}},
		{`a\,b,c`, []string{"a,b", "c"}},
	} {
		got, err := ParseList(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseList(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	var f ListFlag
	_ = f.Set("a,b")
	_ = f.Set("c")
	if !reflect.DeepEqual(f.L, []string{"a", "b", "c"}) {
		t.Errorf("ListFlag repeated = %q", f.L)
	}
}

func TestParseAccessMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want csi.VolumeCapability_AccessMode_Mode
		ok   bool
	}{
		{"SINGLE_NODE_WRITER", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, true},
		{"MULTI_NODE_MULTI_WRITER", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, true},
		{"multi_node_reader_only", csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, true},
		{"SINGLE_NODE_SINGLE_WRITER", csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, true},
		{"SINGLE_NODE_MULTI_WRITER", csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, true},
		{"MULTI_NODE_SINGLE_WRITER", csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER, true},
		{"SINGLE_NODE_READER_ONLY", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, true},
		{"RWO", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, true},
		{"rwx", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, true},
		{"ROX", csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, true},
		{"RWOP", csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, true},
		{"UNKNOWN", 0, false},
		{"", 0, false},
		{"5", 0, false},
		{"READ_WRITE_MANY", 0, false},
	} {
		got, err := ParseAccessMode(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseAccessMode(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"0", 0, true},
		{"1024", 1024, true},
		{"1Ki", 1024, true},
		{"5Mi", 5 << 20, true},
		{"1Gi", 1 << 30, true},
		{"2Ti", 2 << 40, true},
		{"1G", 1e9, true},
		{"3k", 3000, true},
		{"-1", 0, false},
		{"1.5Gi", 0, false},
		{"Gi", 0, false},
		{"1Pi", 0, false},
		{"99999999Ti", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestGRPCTarget(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"unix:///csi/csi.sock", "unix:///csi/csi.sock", true},
		{"/csi/csi.sock", "unix:///csi/csi.sock", true},
		{"tcp://127.0.0.1:10000", "passthrough:///127.0.0.1:10000", true},
		{"tcp://localhost:1", "passthrough:///localhost:1", true},
		{"unix://relative.sock", "", false},
		{"tcp://", "", false},
		{"tcp://hostonly", "", false},
		{"csi.sock", "", false},
		{"http://x:1", "", false},
	} {
		got, err := grpcTarget(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("grpcTarget(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseCSIFlags(t *testing.T) {
	t.Setenv("CSI_ENDPOINT", "")
	o, jsonPath, err := parseCSIFlags([]string{
		"-endpoint", "unix:///s.sock", "-scenario", "publish",
		"-params", `server=10.0.2.2,share=/export`, "-params", `mountOptions=a\,b`,
		"-access-mode", "MULTI_NODE_MULTI_WRITER", "-fs-type", "nfs",
		"-mount-flags", "nfsvers=4.1,hard", "-capacity", "1Gi", "-n", "7", "-workers", "3",
		"-prefix", "run1", "-target-dir", "/tmp/t", "-volume-id", "vid",
		"-volume-context", "a=1", "-json", "out.json", "-timeout", "5s", "-readonly", "-pvc-namespace", "ns1",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := CSIOptions{
		Endpoint: "unix:///s.sock", Scenario: "publish",
		Params:        map[string]string{"server": "10.0.2.2", "share": "/export", "mountOptions": "a,b"},
		AccessMode:    csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
		FsType:        "nfs",
		MountFlags:    []string{"nfsvers=4.1", "hard"},
		CapacityBytes: 1 << 30, N: 7, Workers: 3, Prefix: "run1", TargetDir: "/tmp/t",
		VolumeID: "vid", VolumeContext: map[string]string{"a": "1"}, Timeout: 5 * time.Second,
		Readonly: true, RSSInterval: 100 * time.Millisecond, PVCNamespace: "ns1",
	}
	if !reflect.DeepEqual(o, want) || jsonPath != "out.json" {
		t.Errorf("parseCSIFlags:\n got %+v %q\nwant %+v", o, jsonPath, want)
	}

	// Defaults: SINGLE_NODE_WRITER, a generated unique prefix, $CSI_ENDPOINT.
	t.Setenv("CSI_ENDPOINT", "unix:///env.sock")
	o, _, err = parseCSIFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Endpoint != "unix:///env.sock" || o.AccessMode != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER ||
		o.Scenario != ScenarioCreateDelete || !strings.HasPrefix(o.Prefix, "csiload-") {
		t.Errorf("defaults: %+v", o)
	}
	o2, _, _ := parseCSIFlags(nil, io.Discard)
	if o2.Prefix == o.Prefix {
		t.Errorf("two runs got the same default prefix %q", o.Prefix)
	}

	for _, bad := range [][]string{
		{"-access-mode", "BOGUS"},
		{"-capacity", "lots"},
		{"-params", "noequals"},
		{"-volume-context", "a=1"},
		{"stray"},
	} {
		if _, _, err := parseCSIFlags(bad, io.Discard); err == nil {
			t.Errorf("parseCSIFlags(%q) succeeded", bad)
		}
	}
	if _, _, err := parseCSIFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestParseFloorFlags(t *testing.T) {
	o, jp, err := parseFloorFlags([]string{"-kind", "mount-umount", "-source", "s:/e", "-n", "3",
		"-target-dir", "/t", "-mount-opts", "vers=4.1", "-prefix", "p", "-json", "f.json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Kind != FloorMountUmount || o.Source != "s:/e" || o.N != 3 || o.TargetDir != "/t" ||
		o.MountOpts != "vers=4.1" || o.MountType != "nfs" || o.Workers != 1 || o.Prefix != "p" || jp != "f.json" {
		t.Errorf("parseFloorFlags: %+v %q", o, jp)
	}
}
