#!/bin/sh
# csi-sanity's path probe: prints file, directory, not_found or other.
if [ ! -e "$1" ] && [ ! -L "$1" ]; then echo not_found
elif [ -L "$1" ]; then echo other
elif [ -d "$1" ]; then echo directory
elif [ -f "$1" ]; then echo file
else echo other; fi
