package main

import (
	"strings"

	"golang.org/x/sys/unix"
)

// setUmask clears the process umask, so that the controller's mkdir of a volume directory gets
// exactly the class's mode and needs no chmod (one NFS round trip fewer per CreateVolume; pkg/share
// reads the umask and still chmods when it could have stripped bits). Every file and directory
// Paddock itself creates passes an explicit, restrictive mode (0600/0700/0750, 0755 for volume
// parents), and mount/umount helpers set their own. klog's log files (--log_file, --log_dir) are
// created 0666, so with those flags the umask is left as it is.
func setUmask(args []string) {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if strings.HasPrefix(a, "log_file") || strings.HasPrefix(a, "log_dir") {
			return
		}
	}
	unix.Umask(0)
}
