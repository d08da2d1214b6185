/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vgpu_shim: the external executor's queue ABI (docs/executor.md, "The
 * handoff queue"). Shared between the module and the vgpu-executor daemon,
 * whose Rust model is vgpu-engine-abi's `exec` module: change both.
 *
 * One character device per parent, /dev/vgpu-exec/<parent>, opened by one
 * daemon at a time. mmap offset 0 (VGPU_EXEC_QUEUE_BYTES): a header page,
 * the submission ring (the kernel produces, the daemon consumes) and the
 * completion ring (the daemon produces, the kernel consumes). Indices are
 * free-running u32, entry = index & (entries - 1). Everything is
 * little-endian. The kernel trusts nothing the daemon writes: indices are
 * clamped, completions are matched by sequence number.
 *
 * mmap offset (u64)id << 32: the VRAM of the instance with executor id @id
 * (the same pages the guest's BAR0 maps), for an instance whose work the
 * daemon was handed since it was opened; ids are never reused.
 */
#ifndef VGPU_EXEC_ABI_H
#define VGPU_EXEC_ABI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VGPU_EXEC_MAGIC		0x51584756	/* "VGXQ" */
#define VGPU_EXEC_VERSION	1
#define VGPU_EXEC_SQ_ENTRIES	64
#define VGPU_EXEC_CQ_ENTRIES	64
#define VGPU_EXEC_SQE_SIZE	256
#define VGPU_EXEC_CQE_SIZE	32
#define VGPU_EXEC_SQ_OFF	4096
#define VGPU_EXEC_CQ_OFF	(VGPU_EXEC_SQ_OFF + \
				 VGPU_EXEC_SQ_ENTRIES * VGPU_EXEC_SQE_SIZE)
#define VGPU_EXEC_QUEUE_BYTES	(VGPU_EXEC_CQ_OFF + \
				 VGPU_EXEC_CQ_ENTRIES * VGPU_EXEC_CQE_SIZE)
#define VGPU_EXEC_VRAM_SHIFT	32
/* ids stay below 2^31, so an offset id << 32 fits an off_t */
#define VGPU_EXEC_ID_MAX	0x7fffffffU

/* The header page (offset 0). */
struct vgpu_exec_header {
	__le32 magic;
	__le32 version;
	__le32 sq_entries;
	__le32 cq_entries;
	__le32 sqe_size;
	__le32 cqe_size;
	__le32 sq_off;
	__le32 cq_off;
	__le32 rsvd0[8];
	__le32 sq_head;			/* 0x40: the daemon's */
	__le32 sq_tail;			/* the kernel's */
	__le32 rsvd1[14];
	__le32 cq_head;			/* 0x80: the kernel's */
	__le32 cq_tail;			/* the daemon's */
};

/* Submission entry kinds. */
#define VGPU_EXEC_PIECE		1	/* run a piece of a command */
#define VGPU_EXEC_RETIRE	2	/* id is closed: drop its mapping */

/*
 * A piece of a validated command: units [start, start + count) of it.
 * FILL, COPY, CHECKSUM: bytes from the command's start (FILL, CHECKSUM:
 * multiples of 4); COPY: a memmove of those bytes. CHECKSUM: fold the
 * words into @state (FNV-1a-64) and return it (no VRAM write). GEMM: the
 * elements of C in row-major order. BLIT: rows, into the scanout @mode_*.
 * Every piece handed is idempotent: running it again gives the same bytes.
 */
struct vgpu_exec_sqe {
	__le64 seq;			/* 0x00, never 0 */
	__le32 kind;
	__le32 id;
	__le64 vram_size;		/* 0x10 */
	__le64 start;
	__le64 count;			/* 0x20 */
	__le64 state;
	__le64 mode_start;		/* 0x30: BLIT's scanout */
	__le32 mode_xres;
	__le32 mode_yres;
	__le32 mode_bytepp;		/* 0x40 */
	__le32 mode_stride;
	__le64 rsvd0[7];
	__u8 cmd[64];			/* 0x80: as in the ring, validated */
	__le64 rsvd1[8];
};

/* Completion status. */
#define VGPU_EXEC_OK		0
#define VGPU_EXEC_REFUSED	1	/* the executor's own check failed */
#define VGPU_EXEC_FAILED	2	/* the device failed it */

struct vgpu_exec_cqe {
	__le64 seq;
	__le32 status;
	__le32 rsvd0;
	__le64 value;			/* CHECKSUM: the state after the piece */
	/*
	 * The daemon's own time executing the piece, ns (not the time it
	 * waited in the daemon's queues). It sizes the next pieces: the
	 * round trip around it is the host's scheduling, not the work
	 * (vgpu_exec_policy.h). 0: not measured; 0 or more than the round
	 * trip, the whole round trip counts as work.
	 */
	__le64 work_ns;
};

/* Completions up to cq_tail are there. Returns how many were taken. */
#define VGPU_EXEC_IOC_KICK	_IO(0xf7, 0x01)
/*
 * The daemon's binding limit (a __u64, before its first poll): it binds a
 * VRAM of at most this many bytes whole, a larger one only through windows
 * of this size at multiples of half of it, so a piece of a larger VRAM may
 * touch at most half of it, lowest byte to highest. A power of two from
 * 64 KiB to 2^40, or 0 (no limit, the default). It stays with the parent
 * for the next daemon until one sets another.
 */
#define VGPU_EXEC_IOC_SET_WINDOW	_IOW(0xf7, 0x02, __u64)
#define VGPU_EXEC_WINDOW_MIN	(1ULL << 16)
#define VGPU_EXEC_WINDOW_MAX	(1ULL << 40)

#endif /* VGPU_EXEC_ABI_H */
