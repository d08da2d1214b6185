/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vgpu_shim: how big an external executor's pieces are (docs/executor.md,
 * "What is handed, what stays in the kernel"). A function of one engine worker's state only; used by
 * vgpu_exec_piece.c and tested by the KUnit module (vgpu_shim_kunit.c).
 *
 * A piece is one chunk of engine time: handoff -> completion, which is the
 * handoff's cost (posting, the daemon's wake-up, the completion's) plus
 * the piece's work. The work should be VGPU_XPIECE_LOW_NS..HIGH_NS: longer
 * holds up the parent's other instances, shorter spends the engine's time
 * (charged to the instance, its cap and its watchdog) on handoffs.
 *
 * The handoff's cost is not a constant: the daemon is a process the host
 * schedules, and under load its wake-up varies by milliseconds. Judged
 * piece by piece against the least handoff ever seen, a piece that waited
 * for the daemon looked long whatever its size, and pieces shrank to the
 * minimum: in the rig's fuzzer a canary's 1 MiB CHECKSUM took 256
 * handoffs, ~0.5 s of engine time, and valid rings met the watchdog. Nor
 * is the least piece seen a handoff's cost when no piece is small: it
 * included that piece's work, and pieces grew to ~10x the target. So:
 *
 * - the handoff's cost (xover_ns) is the least time of the recent probes:
 *   every VGPU_XPIECE_PROBE_EVERY-th piece is cut to VGPU_XPIECE_MIN
 *   units, and the least of the last VGPU_XPIECE_PROBE_WINDOW to twice
 *   that many probes counts (a host that got busier raises it);
 * - the cost of a unit of work (xunit, ns << VGPU_XSLOPE_SHIFT per byte
 *   or multiply-add) is the least a piece showed above the handoff's cost
 *   (at least VGPU_XPIECE_LOW_NS: less cannot be told from the handoff's
 *   jitter), forgotten by 1/32 per dearer piece (work that gets 10x
 *   dearer is followed within ~100 pieces);
 * - the budget aims at VGPU_XPIECE_TARGET_NS of work, moving at most by a
 *   factor of two per piece, growing only after a piece that used it all.
 *
 * Jitter only adds time, so the least times are the ones to trust.
 */
#ifndef VGPU_EXEC_POLICY_H
#define VGPU_EXEC_POLICY_H

#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/sizes.h>

#include "vgpu.h"

#define VGPU_XPIECE_LOW_NS	(100 * NSEC_PER_USEC)
#define VGPU_XPIECE_HIGH_NS	(300 * NSEC_PER_USEC)
#define VGPU_XPIECE_TARGET_NS	((VGPU_XPIECE_LOW_NS + VGPU_XPIECE_HIGH_NS) / 2)
#define VGPU_XPIECE_PROBE_EVERY	16
#define VGPU_XPIECE_PROBE_WINDOW	8
#define VGPU_XPIECE_INIT	SZ_256K		/* bytes or multiply-adds */
#define VGPU_XPIECE_MIN		SZ_4K
#define VGPU_XPIECE_MAX		SZ_16M
#define VGPU_XSLOPE_SHIFT	10

/* A new engine worker: nothing measured yet. */
static inline void vgpu_xpiece_init(struct vgpu_worker *w)
{
	unsigned int i;

	for (i = 0; i < VGPU_NUM_CC; i++) {
		w->xbudget[i] = VGPU_XPIECE_INIT;
		w->xunit[i] = 0;
	}
	w->xover_ns = 0;
	w->xprobe_ns[0] = 0;
	w->xprobe_ns[1] = 0;
	w->xpieces = 0;
}

/* Whether @w's next piece is a probe of the handoff's cost. */
static inline bool vgpu_xpiece_probe(struct vgpu_worker *w)
{
	return ++w->xpieces % VGPU_XPIECE_PROBE_EVERY == 0;
}

static inline u64 vgpu_xpiece_least(u64 a, u64 b)
{
	return !a ? b : !b ? a : min(a, b);
}

/*
 * A piece of @units (bytes or multiply-adds) of class @cls took @ns,
 * handoff to completion. @probe: it was a probe (the piece just counted by
 * vgpu_xpiece_probe()); @full: it was as big as the budget allowed (not
 * the command's last, smaller piece).
 */
static inline void vgpu_xpiece_adapt(struct vgpu_worker *w, int cls,
				     u64 units, u64 ns, bool probe, bool full)
{
	u64 work, unit, b = w->xbudget[cls];

	if (probe) {
		/* xprobe_ns[0]: this window's least, [1]: the last one's */
		w->xprobe_ns[0] = vgpu_xpiece_least(w->xprobe_ns[0], ns);
		w->xover_ns = vgpu_xpiece_least(w->xprobe_ns[0],
						w->xprobe_ns[1]);
		if (w->xpieces % (VGPU_XPIECE_PROBE_EVERY *
				  VGPU_XPIECE_PROBE_WINDOW) == 0) {
			w->xprobe_ns[1] = w->xprobe_ns[0];
			w->xprobe_ns[0] = 0;
		}
		return;
	}
	if (!w->xover_ns)
		w->xover_ns = ns;	/* until the first probe: too high */
	work = max(ns - min(ns, w->xover_ns), VGPU_XPIECE_LOW_NS);
	unit = div64_u64(work << VGPU_XSLOPE_SHIFT, max_t(u64, units, 1));
	if (!w->xunit[cls] || unit < w->xunit[cls])
		w->xunit[cls] = unit;
	else
		w->xunit[cls] += w->xunit[cls] / 32 + 1;
	b = clamp(div64_u64(VGPU_XPIECE_TARGET_NS << VGPU_XSLOPE_SHIFT,
			    w->xunit[cls]),
		  b / 2, full ? b * 2 : b);
	w->xbudget[cls] = clamp_t(u64, b, VGPU_XPIECE_MIN, VGPU_XPIECE_MAX);
}

#endif /* VGPU_EXEC_POLICY_H */
