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
- **O(1) in the number of volumes**: on its own export (` + "`/srv/nfs/b`" + `, so no other figure sees these volumes), the
  same sequential ` + "`csiload -scenario create`" + ` then ` + "`delete`" + ` of 50 volumes, first with 10 Paddock volumes already on the
  export, then with 10 000, made beforehand by CreateVolume with 16 workers (each a directory and a claim, as any
  CreateVolume makes them; the volume directories and claim symlinks are counted, see the notes). Two subDir templates, each holding half
  of the existing volumes: the default ` + "`${pv.metadata.name}`" + ` (directories at the export root) and
  ` + "`${pvc.metadata.namespace}/${pvc.metadata.name}`" + ` (all in one namespace directory; ` + "`csiload -pvc-namespace`" + ` sends
  the ` + "`csi.storage.k8s.io/pvc/*`" + ` parameters as csi-provisioner ` + "`--extra-create-metadata`" + ` does). Three repetitions
  per size, the templates alternating; the figure is the median of the repetitions' p50s, the note gives their
  min–max. Round trips from ` + "`/proc/net/rpc/nfs`" + ` around each phase; a delete phase's count runs until the reaper has
  emptied the trash again, so it includes the removal of the deleted directories. Before each phase the trash is
  empty and the reaper idle. GetPluginInfo's p50, measured before each repetition, shows whether the guest's own
  speed changed between the two sizes; the p50 notes also give each repetition's p50 in units of it.
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
