package load

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// SchemaVersion names the JSON schema below. Bump it on any incompatible
// change; adding an optional field is compatible.
const SchemaVersion = "paddock.dev/csiload/v1"

// Report is the JSON document csiload writes with -json. One schema serves
// CSI scenarios and floors so a report can put them side by side.
//
//	{
//	  "schema":   "paddock.dev/csiload/v1",
//	  "mode":     "csi" | "floor",
//	  "scenario": "create-delete" | "create" | "delete" | "publish"        (mode csi)
//	              "mkdir-chmod" | "rename" | "mount-mkdir-umount" |
//	              "mount-umount" | "make-tree" | "rm-rf"                    (mode floor),
//	  "started":  RFC 3339 time the run began,
//	  "wall_s":   seconds the whole run took (setup and cleanup included),
//	  "host":     {"hostname", "kernel", "num_cpu", "go_version"},
//	  "driver":   {"name", "vendor_version"}        (mode csi, from GetPluginInfo; omitted if it failed),
//	  "config":   the flags that shaped the run; unset ones are omitted (see Config),
//	  "ops": [                                      in the order the phases ran
//	    {
//	      "op":          op kind, e.g. "CreateVolume", "NodePublishVolume", "mkdir+chmod", "mount", "rm -rf",
//	      "count":       ops attempted (successes + errors),
//	      "errors":      ops that failed,
//	      "first_error": message of the first failure (omitted if none),
//	      "wall_s":      wall time of the phase the ops ran in,
//	      "ops_per_s":   successful ops / wall_s,
//	      "mean_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms":
//	                     latency of the successful ops in milliseconds
//	                     (nearest-rank percentiles; all 0 if none succeeded),
//	      "items":       items one op kind covered, e.g. files removed by rm -rf (omitted if not meaningful),
//	      "items_per_s": items / wall_s (omitted with items)
//	    }
//	  ],
//	  "rss": {"pid", "interval_ms", "samples", "start_vmrss_kib", "end_vmrss_kib",
//	          "peak_vmrss_kib", "vmhwm_kib", "error"}   (only with -rss-pid)
//	}
type Report struct {
	Schema   string      `json:"schema"`
	Mode     string      `json:"mode"`
	Scenario string      `json:"scenario"`
	Started  time.Time   `json:"started"`
	WallS    float64     `json:"wall_s"`
	Host     HostInfo    `json:"host"`
	Driver   *DriverInfo `json:"driver,omitempty"`
	Config   Config      `json:"config"`
	Ops      []OpStats   `json:"ops"`
	RSS      *RSSReport  `json:"rss,omitempty"`
}

// OpStats is the summary of one op kind; see Report for the field meanings.
type OpStats struct {
	Op         string  `json:"op"`
	Count      int     `json:"count"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	WallS      float64 `json:"wall_s"`
	OpsPerS    float64 `json:"ops_per_s"`
	MeanMs     float64 `json:"mean_ms"`
	MinMs      float64 `json:"min_ms"`
	P50Ms      float64 `json:"p50_ms"`
	P90Ms      float64 `json:"p90_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	Items      int     `json:"items,omitempty"`
	ItemsPerS  float64 `json:"items_per_s,omitempty"`
}

// HostInfo says where the numbers were taken, since they only compare as
// ratios on the same machine.
type HostInfo struct {
	Hostname  string `json:"hostname"`
	Kernel    string `json:"kernel"`
	NumCPU    int    `json:"num_cpu"`
	GoVersion string `json:"go_version"`
}

// DriverInfo is what the endpoint answered to GetPluginInfo.
type DriverInfo struct {
	Name          string `json:"name"`
	VendorVersion string `json:"vendor_version"`
}

// Config records the parameters of a run. Fields that do not apply to the
// mode or scenario are left zero and omitted from the JSON.
type Config struct {
	Endpoint      string            `json:"endpoint,omitempty"`
	N             int               `json:"n,omitempty"`
	Workers       int               `json:"workers,omitempty"`
	Prefix        string            `json:"prefix,omitempty"`
	Params        map[string]string `json:"params,omitempty"`
	AccessMode    string            `json:"access_mode,omitempty"`
	FsType        string            `json:"fs_type,omitempty"`
	MountFlags    []string          `json:"mount_flags,omitempty"`
	CapacityBytes int64             `json:"capacity_bytes,omitempty"`
	Readonly      bool              `json:"readonly,omitempty"`
	TargetDir     string            `json:"target_dir,omitempty"`
	VolumeID      string            `json:"volume_id,omitempty"`
	VolumeContext map[string]string `json:"volume_context,omitempty"`
	IDsFile       string            `json:"ids_file,omitempty"`
	PVCNamespace  string            `json:"pvc_namespace,omitempty"`
	TimeoutS      float64           `json:"timeout_s,omitempty"`
	Dir           string            `json:"dir,omitempty"`
	Source        string            `json:"source,omitempty"`
	MountType     string            `json:"mount_type,omitempty"`
	MountOpts     string            `json:"mount_opts,omitempty"`
	Files         int               `json:"files,omitempty"`
	BuildDir      string            `json:"build_dir,omitempty"`
}

func newReport(mode, scenario string, cfg Config) *Report {
	h := HostInfo{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	return &Report{
		Schema:   SchemaVersion,
		Mode:     mode,
		Scenario: scenario,
		Started:  time.Now().UTC().Truncate(time.Millisecond),
		Host:     h,
		Config:   cfg,
		Ops:      []OpStats{},
	}
}

// Errors is the number of failed ops over all op kinds.
func (r *Report) Errors() int {
	n := 0
	for _, o := range r.Ops {
		n += o.Errors
	}
	return n
}

// WriteJSON writes r to path, indented, atomically enough for a harness that
// polls for the file: write a temporary file, then rename.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadReport reads a JSON report written by WriteJSON.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("%s: schema %q, want %q", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}

// WriteText writes the human-readable form: a header line and an aligned
// table, then the first error of each op kind that had one.
func (r *Report) WriteText(w io.Writer) error {
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "%s %s", r.Mode, r.Scenario)
	if r.Driver != nil {
		fmt.Fprintf(&hdr, "  driver %s %s", r.Driver.Name, r.Driver.VendorVersion)
	}
	if r.Config.Endpoint != "" {
		fmt.Fprintf(&hdr, "  endpoint %s", r.Config.Endpoint)
	}
	if r.Config.N > 0 {
		fmt.Fprintf(&hdr, "  n=%d", r.Config.N)
	}
	if r.Config.Files > 0 {
		fmt.Fprintf(&hdr, "  files=%d", r.Config.Files)
	}
	if r.Config.Workers > 0 {
		fmt.Fprintf(&hdr, "  workers=%d", r.Config.Workers)
	}
	fmt.Fprintf(&hdr, "  wall %.3fs  host %s (%d cpu, %s)\n", r.WallS, r.Host.Hostname, r.Host.NumCPU, r.Host.Kernel)
	if _, err := io.WriteString(w, hdr.String()); err != nil {
		return err
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\terrors\tmean ms\tp50 ms\tp90 ms\tp99 ms\tmax ms\tops/s\titems/s\t")
	for _, o := range r.Ops {
		items := "-"
		if o.Items > 0 {
			items = fmt.Sprintf("%.1f", o.ItemsPerS)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.1f\t%s\t\n",
			o.Op, o.Count, o.Errors, o.MeanMs, o.P50Ms, o.P90Ms, o.P99Ms, o.MaxMs, o.OpsPerS, items)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, o := range r.Ops {
		if o.FirstError != "" {
			fmt.Fprintf(w, "first error %s: %s\n", o.Op, o.FirstError)
		}
	}
	if r.RSS != nil {
		fmt.Fprintf(w, "rss pid %d: peak VmRSS %d KiB, VmHWM %d KiB, start %d KiB, end %d KiB (%d samples)\n",
			r.RSS.PID, r.RSS.PeakVmRSSKiB, r.RSS.VmHWMKiB, r.RSS.StartVmRSSKiB, r.RSS.EndVmRSSKiB, r.RSS.Samples)
		if r.RSS.Error != "" {
			fmt.Fprintf(w, "rss error: %s\n", r.RSS.Error)
		}
	}
	return nil
}
