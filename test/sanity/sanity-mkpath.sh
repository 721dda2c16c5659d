#!/bin/sh
# A fresh directory per spec, so one failing spec cannot leave a mount that breaks the next.
mktemp -d "$1.XXXXXX"
