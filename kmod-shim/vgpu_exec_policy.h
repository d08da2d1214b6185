/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vgpu_shim: how big an external executor's pieces are (docs/executor.md,
 * "Piece sizes"). A function of one engine worker's state only; used by
 * vgpu_exec_piece.c and tested by the KUnit module (vgpu_shim_kunit.c).
 *
 * A piece is one chunk of engine time, handoff to completion: the daemon's
 * work plus the time around it (posting, the daemon's wake-up, the
 * completion's, the engine worker's wake-up). Longer holds up the parent's
 * other instances; shorter spends the engine's time (charged to the
 * instance, its cap and its watchdog) on handoffs.
 *
 * The time around the work is the host's scheduling, and under load it
 * varies by milliseconds. Sized from the round trip alone, a piece that
 * waited for the daemon looks long whatever its size: judged against the
 * least handoff ever seen, pieces shrank to the minimum when the daemon
 * was late (a 1 MiB CHECKSUM became 256 handoffs, ~0.5 s of engine time);
 * estimated from the least times seen, they grew to 20-40 ms when the
 * handoffs varied more than the work. So the daemon reports its own time
 * for each piece (the completion's work_ns), and:
 *
 * - a unit's cost (ns << VGPU_XCOST_SHIFT per byte or multiply-add) is
 *   the lower quartile of the last VGPU_XRING pieces' reports of the
 *   class, each over its units (pieces of a quarter of the budget or
 *   more: a command's small last piece is mostly the daemon's fixed
 *   cost); a daemon preempted while it works reports more, never less,
 *   so the low values are the ones to trust;
 * - the handoff's cost is the median of the last VGPU_XRING round trips
 *   less their reports;
 * - a piece's work aims at the handoff's cost (half the engine's time is
 *   work), within VGPU_XPIECE_LOW_NS..VGPU_XPIECE_CAP_NS: so a neighbour
 *   waits for at most one handoff and 1 ms of work;
 * - the budget moves by at most a factor of two per piece, and grows only
 *   after a piece that used it all.
 *
 * Order statistics, not means or least values: a report or a round trip
 * that met a stall moves them by one place, and the least of many times
 * is luck (the attempt that trusted it grew pieces past 20 ms). A daemon
 * that reports nothing (0) or more than the round trip has its round trip
 * counted as work: smaller pieces, never larger ones.
 */
#ifndef VGPU_EXEC_POLICY_H
#define VGPU_EXEC_POLICY_H

#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/sizes.h>
#include <linux/string.h>

#include "vgpu.h"

#define VGPU_XPIECE_LOW_NS	(100 * NSEC_PER_USEC)
#define VGPU_XPIECE_CAP_NS	(1000 * NSEC_PER_USEC)
#define VGPU_XPIECE_INIT	SZ_256K		/* bytes or multiply-adds */
#define VGPU_XPIECE_MIN		SZ_4K
#define VGPU_XPIECE_MAX		SZ_16M
#define VGPU_XCOST_SHIFT	16

/* A new engine worker: nothing measured yet. */
static inline void vgpu_xpiece_init(struct vgpu_xpolicy *p)
{
	unsigned int i;

	memset(p, 0, sizeof(*p));
	for (i = 0; i < VGPU_NUM_CC; i++)
		p->budget[i] = VGPU_XPIECE_INIT;
}

/*
 * Put @v into @ring, where @n counts the values put: it stays below twice
 * the ring's size (a count that wrapped to 0 would read as an empty ring).
 */
static inline void vgpu_xring_put(u64 *ring, u32 *n, u64 v)
{
	ring[*n % VGPU_XRING] = v;
	if (++*n >= 2 * VGPU_XRING)
		*n -= VGPU_XRING;
}

/*
 * Of the values in @ring (@n put so far, at least one), the one @1/@div of
 * the way up: 2, the median; 4, the lower quartile.
 */
static inline u64 vgpu_xring_pick(const u64 *ring, u32 n, unsigned int div)
{
	u64 s[VGPU_XRING], v;
	unsigned int len = min_t(u32, n, VGPU_XRING), i, j;

	if (!len)
		return 0;
	for (i = 0; i < len; i++) {
		v = ring[i];
		for (j = i; j > 0 && s[j - 1] > v; j--)
			s[j] = s[j - 1];
		s[j] = v;
	}
	return s[len / div];
}

/*
 * A piece of @units (bytes or multiply-adds) of class @cls took @ns,
 * handoff to completion, of which the daemon reported @work_ns (0: not
 * reported). @full: it was as big as the budget allowed (not a command's
 * last, smaller piece).
 */
static inline void vgpu_xpiece_adapt(struct vgpu_xpolicy *p, int cls,
				     u64 units, u64 ns, u64 work_ns, bool full)
{
	u64 b = p->budget[cls], over, cost, tgt, want;

	ns = min_t(u64, ns, U32_MAX);	/* ~4 s: the shifts below fit */
	if (!work_ns || work_ns > ns)
		work_ns = ns;
	vgpu_xring_put(p->over, &p->nover, ns - work_ns);
	if (units * 4 < b)
		return;
	vgpu_xring_put(p->cost[cls], &p->ncost[cls],
		       div64_u64(max_t(u64, work_ns, 1) << VGPU_XCOST_SHIFT,
				 max_t(u64, units, 1)));
	over = vgpu_xring_pick(p->over, p->nover, 2);
	cost = vgpu_xring_pick(p->cost[cls], p->ncost[cls], 4);
	tgt = clamp_t(u64, over, VGPU_XPIECE_LOW_NS, VGPU_XPIECE_CAP_NS);
	want = cost ? div64_u64(tgt << VGPU_XCOST_SHIFT, cost) :
		      VGPU_XPIECE_MAX;
	b = clamp(want, b / 2, full ? b * 2 : b);
	p->budget[cls] = clamp_t(u64, b, VGPU_XPIECE_MIN, VGPU_XPIECE_MAX);
}

#endif /* VGPU_EXEC_POLICY_H */
