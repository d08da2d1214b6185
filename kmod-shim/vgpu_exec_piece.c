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
 * destination, COPY shifting by less than 4 KiB within itself.
 *
 * A piece is one chunk of engine time; its size adapts per engine and
 * class like the CPU executor's chunks, with a longer target: the work on
 * top of the handoff's fixed cost (the least a piece took lately) aims at
 * VGPU_XPIECE_LOW_NS..VGPU_XPIECE_HIGH_NS.
 */
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/math64.h>

#include "vgpu.h"

#define VGPU_XPIECE_LOW_NS	(100 * NSEC_PER_USEC)
#define VGPU_XPIECE_HIGH_NS	(300 * NSEC_PER_USEC)
#define VGPU_XPIECE_INIT	SZ_256K		/* bytes or multiply-adds */
#define VGPU_XPIECE_MIN		SZ_4K
#define VGPU_XPIECE_MAX		SZ_16M
#define VGPU_XCOPY_MIN_GAP	SZ_4K
/* a batch of whole commands: at most this much work (bytes or multiply-adds) */
#define VGPU_XBATCH_BUDGET	SZ_1M

void vgpu_exec_budget_init(struct vgpu_worker *w)
{
	unsigned int i;

	for (i = 0; i < VGPU_NUM_CC; i++)
		w->xbudget[i] = VGPU_XPIECE_INIT;
	w->xover_ns = 0;
}

static bool xspan_overlap(u64 a, u64 alen, u64 b, u64 blen)
{
	/* validated: inside VRAM, no overflow */
	return a < b + blen && b < a + alen;
}

/* Whether @op (validated) goes to the executor in pieces. */
bool vgpu_exec_eligible(const struct vgpu_eng_op *op)
{
	const u64 *a = op->arg;
	const struct vgpu_mode *md = &op->mode;
	u64 gap, row, src_span, dst, dst_span;

	switch (op->opcode) {
	case VGPU_OP_FILL:
	case VGPU_OP_CHECKSUM:
		return true;
	case VGPU_OP_COPY:
		gap = a[0] > a[1] ? a[0] - a[1] : a[1] - a[0];
		return gap >= a[2] || gap >= VGPU_XCOPY_MIN_GAP;
	case VGPU_OP_GEMM:
		return !op->serial;
	case VGPU_OP_BLIT:
		row = a[2] * md->bytepp;
		src_span = (a[3] - 1) * a[1] + row;
		dst = md->offset + a[5] * md->stride + a[4] * md->bytepp;
		dst_span = (a[3] - 1) * md->stride + row;
		return !xspan_overlap(a[0], src_span, dst, dst_span);
	default:
		return false;
	}
}

/* A command's units, what one unit costs, and its budget class. */
static u64 xpiece_units(const struct vgpu_eng_op *op, u64 *cost, int *cls)
{
	const u64 *a = op->arg;

	*cost = 1;
	switch (op->opcode) {
	case VGPU_OP_FILL:
		*cls = VGPU_CC_FILL;
		return a[1];
	case VGPU_OP_COPY:
		*cls = VGPU_CC_COPY;
		return a[2];
	case VGPU_OP_CHECKSUM:
		*cls = VGPU_CC_SUM;
		return a[1];
	case VGPU_OP_GEMM:
		*cls = VGPU_CC_GEMM;
		*cost = a[5];			/* multiply-adds per element */
		return a[3] * a[4];
	case VGPU_OP_BLIT:
		*cls = VGPU_CC_BLIT;
		*cost = a[2] * op->mode.bytepp;	/* bytes per row */
		return a[3];
	default:
		*cls = VGPU_CC_CMD;
		return 0;
	}
}

struct xspan {
	u64 off, len;
};

/* Running all of @op again gives the same bytes (a COPY onto itself does not). */
static bool xpiece_whole_idempotent(const struct vgpu_eng_op *op)
{
	const u64 *a = op->arg;

	return op->opcode != VGPU_OP_COPY ||
	       !xspan_overlap(a[0], a[2], a[1], a[2]);
}

/*
 * What a whole command reads (@r) and writes (@w) in VRAM; returns the
 * counts in *@nr, *@nw. @slot: the ring slot it was fetched from (read).
 */
static void xpiece_spans(const struct vgpu_eng_op *op, u64 slot,
			 struct xspan *r, unsigned int *nr,
			 struct xspan *w, unsigned int *nw)
{
	const u64 *a = op->arg;
	const struct vgpu_mode *md = &op->mode;
	u64 row;

	*nr = 0;
	*nw = 0;
	r[(*nr)++] = (struct xspan){ slot, VGPU_CMD_SIZE };
	switch (op->opcode) {
	case VGPU_OP_FILL:
		w[(*nw)++] = (struct xspan){ a[0], a[1] };
		break;
	case VGPU_OP_COPY:
		r[(*nr)++] = (struct xspan){ a[1], a[2] };
		w[(*nw)++] = (struct xspan){ a[0], a[2] };
		break;
	case VGPU_OP_CHECKSUM:
		r[(*nr)++] = (struct xspan){ a[0], a[1] };
		w[(*nw)++] = (struct xspan){ a[2], 8 };
		break;
	case VGPU_OP_GEMM:
		r[(*nr)++] = (struct xspan){ a[0], a[3] * a[5] * 4 };
		r[(*nr)++] = (struct xspan){ a[1], a[5] * a[4] * 4 };
		w[(*nw)++] = (struct xspan){ a[2], a[3] * a[4] * 4 };
		break;
	case VGPU_OP_BLIT:
		row = a[2] * md->bytepp;
		r[(*nr)++] = (struct xspan){ a[0], (a[3] - 1) * a[1] + row };
		w[(*nw)++] = (struct xspan){
			md->offset + a[5] * md->stride + a[4] * md->bytepp,
			(a[3] - 1) * md->stride + row };
		break;
	}
}

static bool xspans_meet(const struct xspan *x, unsigned int nx,
			const struct xspan *y, unsigned int ny)
{
	unsigned int i, j;

	for (i = 0; i < nx; i++)
		for (j = 0; j < ny; j++)
			if (xspan_overlap(x[i].off, x[i].len, y[j].off, y[j].len))
				return true;
	return false;
}

/*
 * Whether @cand (validated, eligible; fetched from ring offset @slot) can
 * join the batch of @n commands @batch (@slots their ring offsets, the
 * first one fetched already) for the executor: all of it fits in what is
 * left of the piece budget *@left, and it neither writes what another
 * command of the batch reads or writes nor reads or writes what one
 * writes (its own ring slot included: a command may rewrite the ring).
 * Independent commands give the same bytes in any order, and again: a
 * batch is as idempotent as a piece.
 */
bool vgpu_exec_batch_fits(struct vgpu_worker *w,
			  const struct vgpu_eng_op *const *batch,
			  const u64 *slots, unsigned int n,
			  const struct vgpu_eng_op *cand, u64 slot, u64 *left)
{
	struct xspan cr[4], cw[1], br[4], bw[1];
	unsigned int ncr, ncw, nbr, nbw, i;
	u64 cost, units, work;
	int cls;

	units = xpiece_units(cand, &cost, &cls);
	if (!units || check_mul_overflow(units, cost, &work) || work > *left ||
	    work > w->xbudget[cls] || !xpiece_whole_idempotent(cand))
		return false;
	xpiece_spans(cand, slot, cr, &ncr, cw, &ncw);
	for (i = 0; i < n; i++) {
		xpiece_spans(batch[i], slots[i], br, &nbr, bw, &nbw);
		if (xspans_meet(cw, ncw, br, nbr) || xspans_meet(cw, ncw, bw, nbw) ||
		    xspans_meet(bw, nbw, cr, ncr))
			return false;
	}
	*left -= work;
	return true;
}

/*
 * The budget a batch that starts with @op (fetched, nothing done) may
 * use; 0 if @op does not fit in one piece by itself.
 */
u64 vgpu_exec_batch_budget(struct vgpu_worker *w, const struct vgpu_eng_op *op)
{
	u64 cost, units, work;
	int cls;

	if (op->done || !xpiece_whole_idempotent(op))
		return 0;
	units = xpiece_units(op, &cost, &cls);
	if (!units || check_mul_overflow(units, cost, &work) ||
	    work > w->xbudget[cls])
		return 0;
	return VGPU_XBATCH_BUDGET - min_t(u64, work, VGPU_XBATCH_BUDGET);
}

/* Keep the piece's work beyond the handoff's cost in the target band. */
static void xpiece_adapt(struct vgpu_worker *w, int cls, u64 ns, bool full)
{
	u64 work;

	/* the fixed cost: the least a piece took, forgotten slowly */
	if (!w->xover_ns || ns < w->xover_ns)
		w->xover_ns = ns;
	else
		w->xover_ns += w->xover_ns / 256 + 1;
	work = ns - min(ns, w->xover_ns);
	if (work < VGPU_XPIECE_LOW_NS && full &&
	    w->xbudget[cls] < VGPU_XPIECE_MAX)
		w->xbudget[cls] *= 2;
	else if (work > VGPU_XPIECE_HIGH_NS && w->xbudget[cls] > VGPU_XPIECE_MIN)
		w->xbudget[cls] /= 2;
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

/* The entry of units [start, start + count) of @op. */
static void xpiece_sqe(const struct vgpu_eng_op *op, u64 start, u64 count,
		       struct vgpu_exec_sqe *sqe)
{
	memset(sqe, 0, sizeof(*sqe));
	sqe->start = cpu_to_le64(start);
	sqe->count = cpu_to_le64(count);
	sqe->state = cpu_to_le64(op->opcode == VGPU_OP_CHECKSUM ? op->hash : 0);
	if (op->opcode == VGPU_OP_BLIT) {
		sqe->mode_start = cpu_to_le64(op->mode.offset);
		sqe->mode_xres = cpu_to_le32(op->mode.width);
		sqe->mode_yres = cpu_to_le32(op->mode.height);
		sqe->mode_bytepp = cpu_to_le32(op->mode.bytepp);
		sqe->mode_stride = cpu_to_le32(op->mode.stride);
	}
	xpiece_encode(op, sqe->cmd);
}

/* @units of @op are done, with the completion's @value. */
static void xpiece_done(struct vgpu_device *vg, struct vgpu_eng_op *op,
			u64 units, u64 cost, u64 value)
{
	op->done += units;
	if (op->opcode == VGPU_OP_CHECKSUM)
		op->hash = value;
	if (op->opcode == VGPU_OP_GEMM) {
		WRITE_ONCE(vg->eng.macs, vg->eng.macs + units * cost);
		atomic64_add(units * cost, &vg->parent->sched.macs);
	}
}

/*
 * Hand the next piece of @op (in flight on @vg, vg->lock held), or @op
 * whole with the *@xn commands @xops fetched after it (a batch,
 * vgpu_exec_batch_fits()), to the executor and wait for it, at most
 * @wait_ns. VGPU_XSTEP_DONE: @op's data part is complete, and so is that
 * of the first *@xn of @xops (*@xn is lowered to what completed before a
 * failure, and eng.xfail says that the next one failed); MORE: progress or
 * not, go on in the next chunk (the batch is dropped: *@xn = 0); FAILED:
 * the executor refused or failed @op.
 */
int vgpu_exec_step(struct vgpu_device *vg, struct vgpu_worker *w,
		   struct vgpu_eng_op *op, struct vgpu_eng_op *xops,
		   unsigned int *xn, u64 wait_ns)
{
	u32 status[VGPU_XBATCH];
	u64 value[VGPU_XBATCH];
	u64 total, cost, gap = 0, start, count, t0;
	unsigned int n = *xn, i;
	int cls, ret;

	total = xpiece_units(op, &cost, &cls);
	if (!total || op->done >= total) {
		*xn = 0;
		return VGPU_XSTEP_DONE;
	}
	if (n) {
		/* a batch: every command whole */
		start = 0;
		count = total;
	} else {
		u64 align = (op->opcode == VGPU_OP_FILL ||
			     op->opcode == VGPU_OP_CHECKSUM) ? 4 : 1;

		if (op->opcode == VGPU_OP_COPY)
			gap = op->arg[0] > op->arg[1] ? op->arg[0] - op->arg[1] :
							op->arg[1] - op->arg[0];
		count = max_t(u64, div64_u64(w->xbudget[cls], cost), 1);
		count = max_t(u64, round_down(count, align), align);
		count = min(count, total - op->done);
		if (gap < total && gap)
			count = min(count, gap);	/* overlapping COPY */
		/* memmove order: from the top when dst lies above src */
		start = op->backward ? total - op->done - count : op->done;
	}
	/* the entries go straight into the engine's slots (none in flight) */
	xpiece_sqe(op, start, count, &w->xslot[0].sqe);
	for (i = 0; i < n; i++) {
		u64 xc;
		int xcls;

		xpiece_sqe(&xops[i], 0, xpiece_units(&xops[i], &xc, &xcls),
			   &w->xslot[i + 1].sqe);
	}

	t0 = ktime_get_ns();
	ret = vgpu_exec_run(w, vg, n + 1, wait_ns, status, value);
	if (ret) {
		*xn = 0;
		return VGPU_XSTEP_MORE;		/* no daemon, or it hangs */
	}
	if (status[0] != VGPU_EXEC_OK) {
		*xn = 0;
		return VGPU_XSTEP_FAILED;
	}
	xpiece_adapt(w, cls, ktime_get_ns() - t0,
		     !n && count * cost >= w->xbudget[cls]);
	xpiece_done(vg, op, count, cost, value[0]);
	for (i = 0; i < n; i++) {
		u64 xcost;
		int xcls;
		u64 units = xpiece_units(&xops[i], &xcost, &xcls);

		if (status[i + 1] != VGPU_EXEC_OK) {
			vg->eng.xfail = true;
			break;
		}
		xpiece_done(vg, &xops[i], units, xcost, value[i + 1]);
	}
	*xn = i;
	return op->done >= total ? VGPU_XSTEP_DONE : VGPU_XSTEP_MORE;
}
