#!/bin/sh
# Runs inside the test guest (/host is the 9p share): paddock --mode=all on the guest's real NFS
# export, judged by csi-sanity with no skip list.
set -eu
mkdir -p /var/lib/paddock /tmp/sanity
/host/paddock --mode=all --endpoint=unix:///tmp/sanity/csi.sock --node-id=sanity-node \
  --work-dir=/var/lib/paddock --fs-timeout=20s --max-volumes-per-node=3 \
  --topology=topology.nfs.paddock.dev/zone=sanity-a -v=4 >/tmp/sanity/paddock.log 2>&1 &
pid=$!
i=0
while [ ! -S /tmp/sanity/csi.sock ]; do
  i=$((i+1)); [ $i -lt 100 ] || { echo "paddock did not start"; cat /tmp/sanity/paddock.log; exit 1; }
  sleep 0.1
done
cat >/tmp/sanity/params.yaml <<PARAMS
server: 127.0.0.1
share: /srv/nfs/a
PARAMS
cat >/tmp/sanity/mutable.yaml <<MUTABLE
mode: "0775"
gid: "1000"
MUTABLE
rc=0
/host/csi-sanity --csi.endpoint=/tmp/sanity/csi.sock \
  --csi.testvolumeparameters=/tmp/sanity/params.yaml \
  --csi.testvolumemutableparameters=/tmp/sanity/mutable.yaml --csi.testnodevolumeattachlimit \
  --csi.mountdir=/tmp/sanity/target --csi.stagingdir=/tmp/sanity/staging \
  --csi.createmountpathcmd=/host/sanity-mkpath.sh --csi.createstagingpathcmd=/host/sanity-mkpath.sh \
  --csi.removemountpathcmd=/host/sanity-rmpath.sh --csi.removestagingpathcmd=/host/sanity-rmpath.sh \
  --csi.checkpathcmd=/host/sanity-checkpath.sh \
  --ginkgo.v --ginkgo.no-color || rc=$?
kill -TERM $pid; wait $pid || true
if [ $rc -ne 0 ]; then echo "---- paddock log (tail) ----"; tail -n 80 /tmp/sanity/paddock.log; fi
# What sanity left on the server: volumes it deleted must not remain outside the trash.
echo "---- export after csi-sanity ----"; ls -la /srv/nfs/a
exit $rc
