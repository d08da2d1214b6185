// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: which commands go to the external executor, and in which
 * pieces (docs/executor.md, "What is handed, what stays in the kernel").
 *
 * A piece is a range of a validated command's units (bytes, GEMM
 * elements, BLIT rows) that the daemon runs on its own; every piece handed
 * is idempotent, so a piece a dead daemon left half done can be handed
 * again. Commands that cannot be cut that way stay on the CPU executor:
 * GEMM with C overlapping A or B, BLIT whose source overlaps its
 * destination, COPY shifting by less than 4 KiB within itself. So do
 * commands the daemon could not bind: with a window (IOC_SET_WINDOW)
 * smaller than the instance's VRAM, a piece may touch half a window from
 * its lowest byte to its highest; FILL, CHECKSUM and COPY pieces are cut
 * to fit, a GEMM or BLIT fits whole or stays on the CPU.
 *
 * A piece is one chunk of engine time; how big is vgpu_exec_policy.h's.
 */
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/math64.h>

#include "vgpu.h"
#include "vgpu_exec_policy.h"

#define VGPU_XCOPY_MIN_GAP	SZ_4K

static bool xspan_overlap(u64 a, u64 alen, u64 b, u64 blen)
{
	/* validated: inside VRAM, no overflow */
	return a < b + blen && b < a + alen;
}

/*
 * The most bytes, lowest to highest, one piece of @vg may touch for the
 * daemon to bind it (half its window when the VRAM is larger than one),
 * or 0: any.
 */
static u64 xspan_limit(const struct vgpu_device *vg)
{
	u64 w = READ_ONCE(vg->parent->exec.window);

	return w && vg->vram_size > w ? w / 2 : 0;
}

/* Whether [lo, hi) of every operand fits the limit @span (0: any). */
static bool xspan_fits(u64 span, u64 lo, u64 hi)
{
	return !span || hi - lo <= span;
}

/* The distance between a COPY's destination and source. */
static u64 xcopy_gap(const u64 *a)
{
	return a[0] > a[1] ? a[0] - a[1] : a[1] - a[0];
}

/* Whether @op (validated) goes to the executor in pieces. */
bool vgpu_exec_eligible(const struct vgpu_device *vg,
			const struct vgpu_eng_op *op)
{
	const u64 *a = op->arg;
	const struct vgpu_mode *md = &op->mode;
	u64 span = xspan_limit(vg);
	u64 gap, row, src_span, dst, dst_span, lo, hi;

	switch (op->opcode) {
	case VGPU_OP_FILL:
	case VGPU_OP_CHECKSUM:
		return true;
	case VGPU_OP_COPY:
		gap = xcopy_gap(a);
		if (span && gap > span / 2)
			return false;
		return gap >= a[2] || gap >= VGPU_XCOPY_MIN_GAP;
	case VGPU_OP_GEMM:
		/* A, B, C of m x k, k x n, m x n words */
		lo = min3(a[0], a[1], a[2]);
		hi = max3(a[0] + a[3] * a[5] * 4, a[1] + a[5] * a[4] * 4,
			  a[2] + a[3] * a[4] * 4);
		return !op->serial && xspan_fits(span, lo, hi);
	case VGPU_OP_BLIT:
		row = a[2] * md->bytepp;
		src_span = (a[3] - 1) * a[1] + row;
		dst = md->offset + a[5] * md->stride + a[4] * md->bytepp;
		dst_span = (a[3] - 1) * md->stride + row;
		if (xspan_overlap(a[0], src_span, dst, dst_span))
			return false;
		/* a piece's destination is whole scanout rows */
		dst = md->offset + a[5] * md->stride;
		dst_span = (a[3] - 1) * md->stride + md->width * md->bytepp;
		lo = min(a[0], dst);
		hi = max(a[0] + src_span, dst + dst_span);
		return xspan_fits(span, lo, hi);
	default:
		return false;
	}
}

/* The command as the ring had it (the private copy, decoded). */
static void xpiece_encode(const struct vgpu_eng_op *op, u8 *cmd)
{
	__le32 word = cpu_to_le32(op->opcode | (u32)op->flags << 8);
	unsigned int i;

	memset(cmd, 0, 64);
	memcpy(cmd, &word, sizeof(word));
	for (i = 0; i < ARRAY_SIZE(op->arg); i++) {
		__le64 v = cpu_to_le64(op->arg[i]);

		memcpy(cmd + 8 + 8 * i, &v, sizeof(v));
	}
}

/*
 * Hand the next piece of @op (in flight on @vg, vg->lock held) to the
 * executor and wait for it, at most @wait_ns. VGPU_XSTEP_DONE: the
 * command's data part is complete; MORE: progress or not, go on in the
 * next chunk; FAILED: the executor refused or failed it.
 */
int vgpu_exec_step(struct vgpu_device *vg, struct vgpu_worker *w,
		   struct vgpu_eng_op *op, u64 wait_ns)
{
	struct vgpu_exec_sqe sqe = {};
	const u64 *a = op->arg;
	u64 total, cost = 1, align = 1, gap = 0, start, count, value, t0;
	u64 work_ns;
	u64 span = xspan_limit(vg), extra = 0;
	int cls, ret;

	switch (op->opcode) {
	case VGPU_OP_FILL:
		total = a[1];
		cls = VGPU_CC_FILL;
		align = 4;
		break;
	case VGPU_OP_COPY:
		total = a[2];
		cls = VGPU_CC_COPY;
		gap = xcopy_gap(a);
		extra = gap;
		break;
	case VGPU_OP_CHECKSUM:
		total = a[1];
		cls = VGPU_CC_SUM;
		align = 4;
		extra = 8;		/* the daemon's word for the result */
		break;
	case VGPU_OP_GEMM:
		total = a[3] * a[4];
		cls = VGPU_CC_GEMM;
		cost = a[5];			/* multiply-adds per element */
		break;
	case VGPU_OP_BLIT:
		total = a[3];
		cls = VGPU_CC_BLIT;
		cost = a[2] * op->mode.bytepp;	/* bytes per row */
		break;
	default:
		return VGPU_XSTEP_DONE;
	}
	if (op->done >= total)
		return VGPU_XSTEP_DONE;

	count = max_t(u64, div64_u64(w->xp.budget[cls], cost), 1);
	count = max_t(u64, round_down(count, align), align);
	count = min(count, total - op->done);
	if (gap < total && gap)
		count = min(count, gap);	/* overlapping COPY */
	/* within the daemon's binding (GEMM and BLIT fit whole, or stay) */
	if (span && extra < span && count > span - extra)
		count = max_t(u64, round_down(span - extra, align), align);
	/* memmove order: from the top when dst lies above an overlapping src */
	start = op->backward ? total - op->done - count : op->done;

	sqe.start = cpu_to_le64(start);
	sqe.count = cpu_to_le64(count);
	sqe.state = cpu_to_le64(op->opcode == VGPU_OP_CHECKSUM ? op->hash : 0);
	if (op->opcode == VGPU_OP_BLIT) {
		sqe.mode_start = cpu_to_le64(op->mode.offset);
		sqe.mode_xres = cpu_to_le32(op->mode.width);
		sqe.mode_yres = cpu_to_le32(op->mode.height);
		sqe.mode_bytepp = cpu_to_le32(op->mode.bytepp);
		sqe.mode_stride = cpu_to_le32(op->mode.stride);
	}
	xpiece_encode(op, sqe.cmd);

	t0 = ktime_get_ns();
	ret = vgpu_exec_run(w, vg, &sqe, wait_ns, &value, &work_ns);
	if (ret == -EIO)
		return VGPU_XSTEP_FAILED;
	if (ret)
		return VGPU_XSTEP_MORE;		/* no daemon, or it hangs */
	vgpu_xpiece_adapt(&w->xp, cls, count * cost, ktime_get_ns() - t0,
			  work_ns, count * cost >= w->xp.budget[cls]);
	op->done += count;
	if (op->opcode == VGPU_OP_CHECKSUM)
		op->hash = value;
	if (op->opcode == VGPU_OP_GEMM) {
		WRITE_ONCE(vg->eng.macs, vg->eng.macs + count * cost);
		atomic64_add(count * cost, &vg->parent->sched.macs);
	}
	return op->done >= total ? VGPU_XSTEP_DONE : VGPU_XSTEP_MORE;
}
