//go:build linux

package quota

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The XFS project-quota interface of the kernel: the fsxattr ioctls that read and set a file's
// project ID, and quotactl_fd(2) for the limits. x/sys has neither structure, so both are declared
// here with the layouts of linux/fs.h and linux/dqblk_xfs.h.

const (
	fsIocFsGetXattr    = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFsSetXattr    = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagProjInherit = 0x00000200

	prjQuota         = 2 // PRJQUOTA
	xqmCmd           = 'X' << 8
	qXGetQuota       = xqmCmd + 3
	qXSetQLim        = xqmCmd + 4
	qXGetQStatV      = xqmCmd + 8
	fsDquotVersion   = 1
	fsProjQuota      = 2 // FS_PROJ_QUOTA in d_flags
	fsDqIsoft        = 1 << 0
	fsDqIhard        = 1 << 1
	fsDqBsoft        = 1 << 2
	fsDqBhard        = 1 << 3
	fsQstatvVersion1 = 1
	fsQuotaPdqAcct   = 1 << 4
	fsQuotaPdqEnfd   = 1 << 5

	basicBlock = 512 // quotactl counts blocks in 512-byte basic blocks
)

// fsxattr is struct fsxattr (28 bytes).
type fsxattr struct {
	Xflags     uint32
	Extsize    uint32
	Nextents   uint32
	Projid     uint32
	Cowextsize uint32
	Pad        [8]byte
}

// fsDiskQuota is struct fs_disk_quota (120 bytes).
type fsDiskQuota struct {
	Version      int8
	Flags        int8
	Fieldmask    uint16
	ID           uint32
	BlkHardlimit uint64
	BlkSoftlimit uint64
	InoHardlimit uint64
	InoSoftlimit uint64
	Bcount       uint64
	Icount       uint64
	Itimer       int32
	Btimer       int32
	Iwarns       uint16
	Bwarns       uint16
	ItimerHi     int8
	BtimerHi     int8
	RtbtimerHi   int8
	Padding2     int8
	RtbHardlimit uint64
	RtbSoftlimit uint64
	Rtbcount     uint64
	Rtbtimer     int32
	Rtbwarns     uint16
	Padding3     int16
	Padding4     [8]byte
}

func qcmd(cmd, typ int) uintptr { return uintptr(cmd<<8 | typ&0xff) }

// xfsKernel is the real kernel.
type xfsKernel struct{}

func (xfsKernel) project(fd int) (uint32, bool, error) {
	var a fsxattr
	if err := ioctl(fd, fsIocFsGetXattr, unsafe.Pointer(&a)); err != nil {
		return 0, false, fmt.Errorf("FS_IOC_FSGETXATTR: %w", err)
	}
	return a.Projid, a.Xflags&fsXflagProjInherit != 0, nil
}

func (xfsKernel) setProject(fd int, id uint32, inherit bool) error {
	var a fsxattr
	if err := ioctl(fd, fsIocFsGetXattr, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("FS_IOC_FSGETXATTR: %w", err)
	}
	a.Projid = id
	if inherit {
		a.Xflags |= fsXflagProjInherit
	}
	if err := ioctl(fd, fsIocFsSetXattr, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("FS_IOC_FSSETXATTR project %d: %w", id, err)
	}
	return nil
}

func (xfsKernel) quota(fd int, id uint32) (Usage, error) {
	var q fsDiskQuota
	if err := quotactlFD(fd, qcmd(qXGetQuota, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		// ENOENT: no dquot for the ID, i.e. no limit and no usage.
		if errors.Is(err, unix.ENOENT) {
			return Usage{ProjectID: id}, nil
		}
		return Usage{}, fmt.Errorf("Q_XGETQUOTA project %d: %w", id, err)
	}
	return Usage{ProjectID: id, Bytes: q.Bcount * basicBlock, Inodes: q.Icount,
		Limit: Limit{Bytes: q.BlkHardlimit * basicBlock, Inodes: q.InoHardlimit}}, nil
}

func (xfsKernel) setLimit(fd int, id uint32, l Limit) error {
	q := fsDiskQuota{Version: fsDquotVersion, Flags: fsProjQuota, ID: id,
		Fieldmask:    fsDqBhard | fsDqBsoft | fsDqIhard | fsDqIsoft,
		BlkHardlimit: (l.Bytes + basicBlock - 1) / basicBlock, InoHardlimit: l.Inodes}
	if err := quotactlFD(fd, qcmd(qXSetQLim, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		return fmt.Errorf("Q_XSETQLIM project %d: %w", id, err)
	}
	return nil
}

func (xfsKernel) enforced(fd int) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if st.Type != unix.XFS_SUPER_MAGIC {
		return fmt.Errorf("%w: filesystem type %#x is not XFS", ErrUnsupported, st.Type)
	}
	// struct fs_quota_statv is 160 bytes; only its version (in) and flags (out) matter here.
	var buf [256]byte
	buf[0] = fsQstatvVersion1
	if err := quotactlFD(fd, qcmd(qXGetQStatV, prjQuota), 0, unsafe.Pointer(&buf[0])); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("%w: the kernel has no quotactl_fd (Linux 5.14 or later is needed)", ErrUnsupported)
		}
		return fmt.Errorf("%w: Q_XGETQSTATV: %v", ErrUnsupported, err)
	}
	flags := *(*uint16)(unsafe.Pointer(&buf[2]))
	if flags&fsQuotaPdqAcct == 0 || flags&fsQuotaPdqEnfd == 0 {
		return fmt.Errorf("%w: project quotas are not enforced (mount the filesystem with prjquota)", ErrUnsupported)
	}
	return nil
}

func (xfsKernel) statfs(fd int) (total, free uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs: %w", err)
	}
	return st.Blocks * uint64(st.Bsize), st.Bfree * uint64(st.Bsize), nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func quotactlFD(fd int, cmd uintptr, id uint32, addr unsafe.Pointer) error {
	if _, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), cmd, uintptr(id), uintptr(addr), 0, 0); e != 0 {
		return e
	}
	return nil
}
