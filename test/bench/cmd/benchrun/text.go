package main

// method explains what each figure is; it goes into docs/performance.md.
const method = `- **CreateVolume / DeleteVolume**: ` + "`csiload -scenario create|delete`" + ` against ` + "`paddock --mode=controller`" + `
  (unix socket, StorageClass parameters ` + "`server=127.0.0.1,share=/srv/nfs/a`" + `), after a 10-volume warm-up that
  mounts the export in the controller's workspace. Floors on a plain NFS mount of the same export:
  ` + "`mkdir`+`chmod`" + ` (what CreateVolume must do at least), ` + "`rename`" + ` (DeleteVolume's move into the trash), and a
  full ` + "`mount`+`mkdir`+`umount`" + ` cycle per call (what a driver that mounts per call, like csi-driver-nfs, pays).
  Paddock's CreateVolume also writes a claim record (` + "`.paddock/claims`" + `) so that a retry is idempotent and a foreign
  directory is refused; DeleteVolume removes it again.
- **NodePublishVolume / NodeUnpublishVolume**: ` + "`csiload -scenario publish`" + ` of one volume to N target directories
  against ` + "`paddock --mode=node`" + `; floor: ` + "`mount -t nfs`" + ` / ` + "`umount`" + ` of the same subdirectory to N targets
  (util-linux mount, i.e. mount.nfs, as kubelet's node would).
- **Delete of a big volume**: a volume filled server-side with a tree of small files (100 per directory), then
  ` + "`csiload reap`" + `: DeleteVolume, then polling ` + "`.paddock/trash`" + ` on the server every 20 ms until it is empty.
  Floor: ` + "`rm -rf`" + ` (and ` + "`os.RemoveAll`" + `) of an identical tree through the NFS mount, also built
  server-side so neither side starts with a warm client cache.
- **PVCs to Bound**: a real etcd + kube-apiserver + kube-controller-manager (v1.37.1) on the host; the guest reaches it
  at 10.0.2.2. Floor: N claims binding to N pre-made, Available static PVs (the PV controller's binding alone).
  Paddock: ` + "`paddock --mode=controller --provisioner`" + ` in the guest with a StorageClass naming ` + "`nfs.paddock.dev`" + `.
  Both: one warm-up claim, then N claims created by 16 client workers; the figure is the time from the first
  create to the last claim seen Bound.
- **Memory**: VmHWM (peak RSS kept by the kernel) and VmRSS from ` + "`/proc/PID/status`" + ` via ` + "`csiload rss`" + `;
  under load, ` + "`-rss-pid`" + ` samples every 100 ms.
- Latencies are per call, p50 of the successful calls (nearest rank); "ratio" is value / floor.
`

// analysisFile is the hand-written interpretation of the last full run
// (what missed and why, proposed fixes), relative to the repository root
// where make runs benchrun. It is read when the report is written, so it
// can be revised while a run is in progress; full runs include it.
const analysisFile = "test/bench/analysis.md"
