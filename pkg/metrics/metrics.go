// Package metrics holds Paddock's Prometheus metrics (prefix paddock_) and the HTTP endpoint that
// serves them with the health checks.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
	libmetrics "sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller/metrics"
)

var (
	// Registry is Paddock's own registry, so tests and the endpoint see only Paddock's metrics plus the
	// Go and process collectors.
	Registry = prometheus.NewRegistry()

	Operations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paddock_operations_total", Help: "CSI calls by method and gRPC code.",
	}, []string{"method", "code"})
	OperationSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "paddock_operation_duration_seconds", Help: "CSI call latency by method.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
	}, []string{"method"})
	ExportsMounted = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "paddock_exports_mounted", Help: "NFS exports the controller holds mounted.",
	})
	ExportMounts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paddock_export_mounts_total", Help: "Export mounts by reason (first, remount after a stale handle).",
	}, []string{"reason"})
	ReaperRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paddock_reaper_removed_total", Help: "Trash and expired archive entries removed by the reaper.",
	}, []string{"kind"})
	ReaperErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "paddock_reaper_errors_total", Help: "Reaper passes that failed (they are retried).",
	})
	Recycled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paddock_recycled_total", Help: "Recycle attempts by result.",
	}, []string{"result"})
	Provisioned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paddock_provisioner_operations_total", Help: "Embedded provisioner operations by op and result.",
	}, []string{"op", "result"})
	CallsStuck = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "paddock_calls_stuck", Help: "Blocking NFS calls past their deadline and still running (each holds an OS thread), by server.",
	}, []string{"server"})
)

// Library is the embedded provisioner library's own metrics (controller_persistentvolumeclaim_* and
// controller_persistentvolume_delete_*, by class and source), the names the external csi-provisioner
// exports and dashboards expect. The library would serve them on a port of its own; they are
// registered here instead, on the same /metrics as paddock_*, once for the process (a replica that
// leads again reuses them).
var Library = libmetrics.New("controller")

func init() {
	Registry.MustRegister(Library.PersistentVolumeClaimProvisionTotal, Library.PersistentVolumeClaimProvisionFailedTotal,
		Library.PersistentVolumeClaimProvisionDurationSeconds, Library.PersistentVolumeDeleteTotal,
		Library.PersistentVolumeDeleteFailedTotal, Library.PersistentVolumeDeleteDurationSeconds)
	Registry.MustRegister(Operations, OperationSeconds, ExportsMounted, ExportMounts, ReaperRemoved, ReaperErrors,
		Recycled, Provisioned, CallsStuck, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
}

// Serve runs the HTTP endpoint (Handler) on addr until ctx ends. ready reports readiness, healthy
// (nil: always) liveness.
func Serve(ctx context.Context, addr string, ready, healthy func() error) error {
	mux := Handler(ready, healthy)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.InfoS("Serving metrics and health", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Handler serves /metrics (Registry), /healthz (liveness: the process answers and healthy, if not
// nil, returns nil) and /readyz (ready returns nil). A failing check is a 503 with its error.
// healthy is for what a restart can mend, such as the node plugin's registration with kubelet
// (pkg/registration); /healthz is a liveness probe, so nothing that is only slow belongs in it.
func Handler(ready, healthy func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", check(healthy))
	mux.HandleFunc("/readyz", check(ready))
	return mux
}

func check(f func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if f != nil {
			if err := f(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}
