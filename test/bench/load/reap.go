package load

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// Op kinds of the reap scenario.
const (
	ScenarioReap = "reap"
	OpReaped     = "DeleteVolume->trash empty"
)

// ReapOptions configure a reap measurement: DeleteVolume of the volumes in
// an IDs file, then the time until a driver's background reaper has emptied
// its trash directory. The driver-specific part is only TrashDir, which the
// caller names (for Paddock, EXPORT/.paddock/trash as seen on the server).
type ReapOptions struct {
	Endpoint string
	IDsFile  string
	TrashDir string        // polled until it has no entries
	Interval time.Duration // poll interval (default 20ms)
	Timeout  time.Duration // give up waiting for the trash after this (default 30m)
	Items    int           // files and directories the volumes held, for items/s (optional)
	Log      io.Writer
}

// RunReap deletes the volumes listed in o.IDsFile one after the other and
// then polls o.TrashDir until it is empty. The report has two op kinds:
// DeleteVolume (each RPC) and "DeleteVolume->trash empty" (one op, from the
// first DeleteVolume to the first poll that finds the trash empty). The
// trash must be empty before the run starts (it waits up to Timeout for
// that), so leftovers of earlier deletes are not counted.
func RunReap(ctx context.Context, o ReapOptions) (*Report, error) {
	if o.Endpoint == "" || o.IDsFile == "" || o.TrashDir == "" {
		return nil, errors.New("reap needs -endpoint, -ids and -trash")
	}
	if o.Interval <= 0 {
		o.Interval = 20 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	vl, err := ReadVolumeList(o.IDsFile)
	if err != nil {
		return nil, err
	}
	if len(vl.Volumes) == 0 {
		return nil, fmt.Errorf("%s lists no volumes", o.IDsFile)
	}
	rep := newReport("csi", ScenarioReap, Config{Endpoint: o.Endpoint, N: len(vl.Volumes), IDsFile: o.IDsFile,
		Dir: o.TrashDir, Files: o.Items, TimeoutS: o.Timeout.Seconds()})
	conn, err := Dial(o.Endpoint)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if resp, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}); err != nil {
		return nil, fmt.Errorf("GetPluginInfo on %s: %w", o.Endpoint, err)
	} else {
		rep.Driver = &DriverInfo{Name: resp.GetName(), VendorVersion: resp.GetVendorVersion()}
	}
	ctrl := csi.NewControllerClient(conn)

	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if _, err := waitEmpty(wctx, o.TrashDir, o.Interval); err != nil {
		return nil, fmt.Errorf("trash %s not empty before the run: %w", o.TrashDir, err)
	}

	start := time.Now()
	del := NewRecorder(OpDeleteVolume)
	for _, v := range vl.Volumes {
		_ = del.Time(func() error {
			_, err := ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.VolumeID})
			return err
		})
	}
	del.SetWall(time.Since(start))
	rep.Ops = append(rep.Ops, del.Stats())

	reaped := NewRecorder(OpReaped)
	polls, err := waitEmpty(wctx, o.TrashDir, o.Interval)
	d := time.Since(start)
	reaped.Observe(d, err)
	reaped.SetWall(d)
	if o.Items > 0 {
		reaped.SetItems(o.Items)
	}
	rep.Ops = append(rep.Ops, reaped.Stats())
	fmt.Fprintf(o.Log, "csiload: trash %s empty after %.3fs (%d polls)\n", o.TrashDir, d.Seconds(), polls)
	rep.WallS = time.Since(start).Seconds()
	return rep, nil
}

// waitEmpty polls dir until it has no entries (a missing dir counts as
// empty) and returns the number of polls.
func waitEmpty(ctx context.Context, dir string, interval time.Duration) (int, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for polls := 1; ; polls++ {
		f, err := os.Open(dir)
		if errors.Is(err, os.ErrNotExist) {
			return polls, nil
		}
		if err != nil {
			return polls, err
		}
		names, err := f.Readdirnames(1)
		f.Close()
		if len(names) == 0 && (err == nil || errors.Is(err, io.EOF)) {
			return polls, nil
		}
		select {
		case <-ctx.Done():
			return polls, fmt.Errorf("%s still has entries (%v): %w", dir, names, ctx.Err())
		case <-t.C:
		}
	}
}

func reapMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("csiload reap", stderr)
	var o ReapOptions
	fs.StringVar(&o.Endpoint, "endpoint", os.Getenv("CSI_ENDPOINT"), "CSI controller endpoint")
	fs.StringVar(&o.IDsFile, "ids", "", "volume list written by -scenario create")
	fs.StringVar(&o.TrashDir, "trash", "", "the driver's trash directory, polled until empty")
	fs.DurationVar(&o.Interval, "interval", 20*time.Millisecond, "poll interval")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up after this")
	fs.IntVar(&o.Items, "items", 0, "files and directories the volumes hold (for items/s)")
	jsonPath := fs.String("json", "", "write the JSON report to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "csiload reap: unexpected arguments %q\n", fs.Args())
		return ExitUsage
	}
	o.Log = stderr
	rep, err := RunReap(ctx, o)
	return finish(rep, err, *jsonPath, stdout, stderr)
}
