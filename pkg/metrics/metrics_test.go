package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetrics(t *testing.T) {
	srv := httptest.NewServer(Handler(nil, nil))
	defer srv.Close()
	// Fresh label values, so the counters start at zero whatever ran before (go test -count=N).
	method := fmt.Sprintf("TestMethod%d", time.Now().UnixNano())
	Operations.WithLabelValues(method, "OK").Inc()
	ReaperRemoved.WithLabelValues(method).Add(3)
	code, body := get(t, srv.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`paddock_operations_total{code="OK",method="` + method + `"} 1`,
		`paddock_reaper_removed_total{kind="` + method + `"} 3`,
		"paddock_exports_mounted 0",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestHealthAndReadiness(t *testing.T) {
	fails := func(msg string) func() error { return func() error { return errors.New(msg) } }
	ok := func() error { return nil }
	const unregistered = "kubelet has not confirmed registration yet"
	for _, tc := range []struct {
		name           string
		ready, healthy func() error
		path           string
		code           int
		body           string
	}{
		{"healthz without a check", ok, nil, "/healthz", http.StatusOK, "ok"},
		{"healthz ignores readiness", fails("no export mounted"), nil, "/healthz", http.StatusOK, "ok"},
		{"healthz check passes", ok, ok, "/healthz", http.StatusOK, "ok"},
		{"healthz check fails", ok, fails(unregistered), "/healthz", http.StatusServiceUnavailable, unregistered},
		{"readyz ready", ok, nil, "/readyz", http.StatusOK, "ok"},
		{"readyz not ready", fails("csi server not serving"), nil, "/readyz", http.StatusServiceUnavailable, "csi server not serving"},
		{"readyz ignores liveness", ok, fails(unregistered), "/readyz", http.StatusOK, "ok"},
		{"readyz without a check", nil, nil, "/readyz", http.StatusOK, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(tc.ready, tc.healthy))
			defer srv.Close()
			code, body := get(t, srv.URL+tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("%s: %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}
