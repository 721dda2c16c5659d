#!/bin/sh
# Detach anything a failed spec left mounted, then remove the (empty) directory; never rm -r through a mount.
/bin/umount -l "$1" 2>/dev/null || true
rmdir "$1" 2>/dev/null || true
