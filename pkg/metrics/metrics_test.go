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

func TestHandler(t *testing.T) {
	var notReady error
	srv := httptest.NewServer(Handler(func() error { return notReady }))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Fresh label values, so the counters start at zero whatever ran before (go test -count=N).
	method := fmt.Sprintf("TestMethod%d", time.Now().UnixNano())
	Operations.WithLabelValues(method, "OK").Inc()
	ReaperRemoved.WithLabelValues(method).Add(3)
	code, body := get("/metrics")
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

	for _, tc := range []struct {
		path     string
		notReady error
		code     int
		body     string
	}{
		{"/healthz", nil, http.StatusOK, "ok"},
		{"/healthz", errors.New("no export mounted"), http.StatusOK, "ok"},
		{"/readyz", nil, http.StatusOK, "ok"},
		{"/readyz", errors.New("csi server not serving"), http.StatusServiceUnavailable, "csi server not serving"},
	} {
		notReady = tc.notReady
		code, body := get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s with ready()=%v: %d %q, want %d %q", tc.path, tc.notReady, code, body, tc.code, tc.body)
		}
	}
}
