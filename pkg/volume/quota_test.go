package volume

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestParseQuotaParams(t *testing.T) {
	base := map[string]string{ParamServer: "nfs", ParamShare: "/srv/nfs"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		params  map[string]string
		want    QuotaParams
		wantKey string // the parameter the error names; "" = no error
	}{
		{"off by default", base, QuotaParams{}, ""},
		{"none", with(ParamQuota, "none"), QuotaParams{}, ""},
		{"enforce", with(ParamQuota, "enforce", ParamQuotaAgent, "nfs:9820"), QuotaParams{Agent: "nfs:9820"}, ""},
		{"enforce with inodes", with(ParamQuota, "enforce", ParamQuotaAgent, "10.0.0.5:9820", ParamQuotaInodes, "1000"),
			QuotaParams{Agent: "10.0.0.5:9820", Inodes: 1000}, ""},
		{"ipv6 agent", with(ParamQuota, "enforce", ParamQuotaAgent, "[fd00::1]:9820"), QuotaParams{Agent: "[fd00::1]:9820"}, ""},
		{"enforce without agent", with(ParamQuota, "enforce"), QuotaParams{}, ParamQuotaAgent},
		{"typo", with(ParamQuota, "enforced", ParamQuotaAgent, "nfs:9820"), QuotaParams{}, ParamQuota},
		{"empty", with(ParamQuota, ""), QuotaParams{}, ParamQuota},
		{"agent without enforce", with(ParamQuotaAgent, "nfs:9820"), QuotaParams{}, ParamQuotaAgent},
		{"inodes without enforce", with(ParamQuota, "none", ParamQuotaInodes, "5"), QuotaParams{}, ParamQuotaInodes},
		{"no port", with(ParamQuota, "enforce", ParamQuotaAgent, "nfs"), QuotaParams{}, ParamQuotaAgent},
		{"port zero", with(ParamQuota, "enforce", ParamQuotaAgent, "nfs:0"), QuotaParams{}, ParamQuotaAgent},
		{"port too big", with(ParamQuota, "enforce", ParamQuotaAgent, "nfs:65536"), QuotaParams{}, ParamQuotaAgent},
		{"port leading zero", with(ParamQuota, "enforce", ParamQuotaAgent, "nfs:09820"), QuotaParams{}, ParamQuotaAgent},
		{"bad host", with(ParamQuota, "enforce", ParamQuotaAgent, "n#s:9820"), QuotaParams{}, ParamQuotaAgent},
		{"bare ipv6", with(ParamQuota, "enforce", ParamQuotaAgent, "fd00::1:9820"), QuotaParams{}, ParamQuotaAgent},
		{"zero inodes", with(ParamQuota, "enforce", ParamQuotaAgent, "nfs:1", ParamQuotaInodes, "0"), QuotaParams{}, ParamQuotaInodes},
		{"negative inodes", with(ParamQuota, "enforce", ParamQuotaAgent, "nfs:1", ParamQuotaInodes, "-1"), QuotaParams{}, ParamQuotaInodes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseParams(tc.params)
			var pe *ParamError
			switch {
			case tc.wantKey == "" && err != nil:
				t.Fatalf("ParseParams: %v", err)
			case tc.wantKey != "" && (!errors.As(err, &pe) || pe.Key != tc.wantKey):
				t.Fatalf("ParseParams = %v, want an error naming %q", err, tc.wantKey)
			case tc.wantKey == "" && p.Quota != tc.want:
				t.Fatalf("Quota = %+v, want %+v", p.Quota, tc.want)
			}
		})
	}
}

func TestQuotaAgentIsInTheIDOnlyWhenEnforced(t *testing.T) {
	p, err := ParseParams(map[string]string{ParamServer: "nfs", ParamShare: "/srv/nfs", ParamQuota: "enforce", ParamQuotaAgent: "nfs:9820"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.Volume("pvc-1", TemplateVars{})
	if err != nil {
		t.Fatal(err)
	}
	id := v.ID()
	if !strings.HasSuffix(id, "#nfs:9820") {
		t.Fatalf("ID %q does not end with the agent", id)
	}
	got, err := ParseID(id)
	if err != nil || got.QuotaAgent != "nfs:9820" {
		t.Fatalf("ParseID(%q) = %+v, %v", id, got, err)
	}
	v.QuotaAgent = ""
	if n := strings.Count(v.ID(), "#"); n != 6 {
		t.Fatalf("ID without quota %q has %d separators, want 6 (the pre-quota format)", v.ID(), n)
	}
	for _, bad := range []string{id[:strings.LastIndex(id, "#")+1], id + "#x:1", id[:strings.LastIndex(id, "#")+1] + "nfs"} {
		if _, err := ParseID(bad); !errors.Is(err, ErrMalformedID) {
			t.Errorf("ParseID(%q) = %v, want ErrMalformedID", bad, err)
		}
	}
}

func FuzzValidateQuotaAgent(f *testing.F) {
	for _, s := range []string{"nfs:9820", "10.0.0.5:1", "[fd00::1]:9820", "nfs", "nfs:0", "nfs:09820", "fd00::1:9820", "n#s:1", ":1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if ValidateQuotaAgent(addr) != nil {
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || net.JoinHostPort(host, port) != addr || host == "" {
			t.Fatalf("ValidateQuotaAgent accepted %q (host %q, port %q, %v)", addr, host, port, err)
		}
		// The agent lands in the volume ID: it must survive the round trip.
		v := Volume{Server: "s", Share: "/", SubDir: "n", Name: "n", OnDelete: OnDeleteDelete, QuotaAgent: addr}
		if got, err := ParseID(v.ID()); err != nil || got.QuotaAgent != addr {
			t.Fatalf("agent %q does not survive the ID: %+v, %v", addr, got, err)
		}
	})
}
