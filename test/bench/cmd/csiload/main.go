// Command csiload drives any CSI endpoint with CreateVolume/DeleteVolume and
// NodePublishVolume/NodeUnpublishVolume load, and measures the raw filesystem
// and mount "floors" underneath with the same statistics. Run "csiload help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/paddock-csi/paddock/test/bench/load"
)

func main() {
	// On SIGINT/SIGTERM stop dispatching new ops and still print what was
	// measured; a second signal kills the process as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := load.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
