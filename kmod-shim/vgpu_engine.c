// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: the command engine of an instance (docs/engine-abi.md): the
 * engine registers, command fetch and validation, chunked execution of
 * FILL, COPY, CHECKSUM, GEMM, BLIT, FENCE and JUMP, the watchdog and the
 * engine's interrupts.
 *
 * Locking (see struct vgpu_engine): the registers are under vg->eng.lock,
 * a spinlock, so register accesses never wait for engine work. An engine
 * worker (vgpu_sched.c) holds vg->lock for one chunk of work at a time and
 * takes eng.lock only to fetch a command and to complete one; the control
 * operations that drop the command in flight (ENGINE_RESET, RING_CTL,
 * device reset, close) take vg->lock too, so they never see half a chunk
 * and no chunk of the old command runs after them. Commands are copied out
 * of the ring and validated on the private copy before any byte moves; the
 * command in flight and its progress live in vg->eng, so a command resumes
 * where it stopped the next time the instance gets an engine.
 *
 * VRAM pages never move or go away while the device is open (they are
 * freed at the last close, after the engine was reset). Pages the engine
 * writes are allocated (zeroed) on first touch, like a guest access, and
 * charged to the memory cgroup of the process that opened the device;
 * pages it only reads are read as zero while absent and stay unallocated.
 * Every page is mapped with kmap_local_page() for the span used, and
 * looked up again for each span, so a page allocated by a write in this
 * chunk is seen by the reads that follow.
 *
 * A chunk's work is counted by its real cost (see "Chunks" in
 * docs/engine-abi.md): a guest cannot make the budgets learnt on one shape
 * of work run much longer on another (1-pixel BLIT rows after wide ones,
 * tiny FILLs, thin GEMMs, first touches).
 */
#include <linux/bitops.h>
#include <linux/highmem.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/math64.h>
#include <linux/overflow.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include "vgpu.h"
#include "vgpu_exec_policy.h"

#define VGPU_FNV_OFFSET		0xcbf29ce484222325ULL
#define VGPU_FNV_PRIME		0x100000001b3ULL

/* A chunk aims at this much engine time (adapted per worker and class). */
#define VGPU_CHUNK_LOW_NS	(16 * NSEC_PER_USEC)
#define VGPU_CHUNK_HIGH_NS	(48 * NSEC_PER_USEC)

/* A command as it sits in the ring (little-endian). */
struct vgpu_cmd {
	__le32 op;
	__le32 rsvd;
	__le64 arg[7];
};

/*
 * Work per chunk of each class (the units of enum vgpu_chunk_class):
 * initial (tuned on the TCG rig), min, max.
 */
static const u32 vgpu_cc_budget[VGPU_NUM_CC][3] = {
	[VGPU_CC_CMD]		= { 16, 1, 4096 },
	[VGPU_CC_FILL]		= { SZ_64K, SZ_4K, SZ_16M },
	[VGPU_CC_COPY]		= { SZ_32K, SZ_4K, SZ_16M },
	[VGPU_CC_SUM]		= { SZ_8K, SZ_1K, SZ_4M },
	[VGPU_CC_GEMM]		= { SZ_8K, SZ_1K, SZ_4M },
	[VGPU_CC_GEMM_SERIAL]	= { SZ_1K, 64, SZ_1M },
	[VGPU_CC_BLIT]		= { SZ_32K, SZ_4K, SZ_16M },
	[VGPU_CC_SPAN]		= { 32, 1, SZ_64K },
	[VGPU_CC_PAGE]		= { 4, 1, SZ_4K },
};

enum { VGPU_STEP_DONE, VGPU_STEP_MORE, VGPU_STEP_NOMEM };

void vgpu_worker_budget_init(struct vgpu_worker *w)
{
	unsigned int i;

	for (i = 0; i < VGPU_NUM_CC; i++)
		w->budget[i] = vgpu_cc_budget[i][0];
	vgpu_xpiece_init(&w->xp);
}

/* Halve or double a class's budget to keep chunks in the target band. */
static void vgpu_chunk_adapt(struct vgpu_worker *w, int cls, u64 ns)
{
	if (ns < VGPU_CHUNK_LOW_NS && w->budget[cls] < vgpu_cc_budget[cls][2])
		w->budget[cls] *= 2;
	else if (ns > VGPU_CHUNK_HIGH_NS &&
		 w->budget[cls] > vgpu_cc_budget[cls][1])
		w->budget[cls] /= 2;
}

/* ---- VRAM access (validated offsets only) ---- */

/* VRAM byte @off for reading: its page, or the zero page while absent. */
static const void *eng_map_r(struct vgpu_device *vg, u64 off)
{
	struct page *page = vgpu_page_lookup(vg, &vg->vram, off >> PAGE_SHIFT,
					     false);

	if (!page)
		page = ZERO_PAGE(0);
	return kmap_local_page(page) + offset_in_page(off);
}

/*
 * VRAM byte @off for writing (page allocated if needed, and counted in
 * eng.allocs for the cost model); NULL: no memory.
 */
static void *eng_map_w(struct vgpu_device *vg, u64 off)
{
	long used = atomic_long_read(&vg->vram.used);
	struct page *page = vgpu_page_lookup(vg, &vg->vram, off >> PAGE_SHIFT,
					     true);

	if (atomic_long_read(&vg->vram.used) != used)
		vg->eng.allocs++;
	return page ? kmap_local_page(page) + offset_in_page(off) : NULL;
}

/* Allocate the page of VRAM byte @off if needed; false: no memory. */
static bool eng_prefault(struct vgpu_device *vg, u64 off)
{
	void *p = eng_map_w(vg, off);

	if (!p)
		return false;
	kunmap_local(p);
	return true;
}

/*
 * Store the u64 @v at VRAM @off (8-aligned) whose page eng_prefault()
 * allocated: eng.lock may be held, nothing is allocated here.
 */
static void eng_store64(struct vgpu_device *vg, u64 off, u64 v)
{
	struct page *page = vgpu_page_lookup(vg, &vg->vram, off >> PAGE_SHIFT,
					     false);
	__le64 *p;

	if (WARN_ON_ONCE(!page))
		return;
	p = kmap_local_page(page) + offset_in_page(off);
	*p = cpu_to_le64(v);
	kunmap_local(p);
}

static u32 eng_read32(struct vgpu_device *vg, u64 off)
{
	const __le32 *p = eng_map_r(vg, off);
	u32 v = le32_to_cpu(*p);

	kunmap_local(p);
	return v;
}

static bool eng_write32(struct vgpu_device *vg, u64 off, u32 v)
{
	__le32 *p = eng_map_w(vg, off);

	if (!p)
		return false;
	*p = cpu_to_le32(v);
	kunmap_local(p);
	return true;
}

/*
 * memmove of @n bytes that lie within one page at each end. When both ends
 * are in the same page it is mapped once, so memmove() sees the overlap.
 */
static bool eng_move(struct vgpu_device *vg, u64 dst, u64 src, size_t n)
{
	const void *s;
	void *d;

	d = eng_map_w(vg, dst);
	if (!d)
		return false;
	if (dst >> PAGE_SHIFT == src >> PAGE_SHIFT) {
		memmove(d, d - offset_in_page(dst) + offset_in_page(src), n);
	} else {
		s = eng_map_r(vg, src);
		memmove(d, s, n);
		kunmap_local(s);
	}
	kunmap_local(d);
	return true;
}

static size_t page_left(u64 off)
{
	return PAGE_SIZE - offset_in_page(off);
}

/* ---- registers and ring state (eng.lock held unless noted) ---- */

static u64 eng_base(const struct vgpu_engine *e)
{
	return (u64)e->base_hi << 32 | e->base_lo;
}

static bool eng_runnable(const struct vgpu_engine *e)
{
	return e->enabled && !e->stopped &&
	       (e->inflight || e->head != e->tail);
}

bool vgpu_engine_has_work(struct vgpu_device *vg)
{
	lockdep_assert_held(&vg->eng.lock);
	return eng_runnable(&vg->eng);
}

/* Counters for sysfs (no lock held). */
void vgpu_engine_counters(struct vgpu_device *vg, u64 *jobs, u64 *failed,
			  u64 *depth)
{
	struct vgpu_engine *e = &vg->eng;

	spin_lock(&e->lock);
	*jobs = e->jobs;
	*failed = e->cmds_failed;
	*depth = 0;
	if (e->enabled)
		*depth = ((e->tail - e->head) & (e->size - 1)) /
			 VGPU_CMD_SIZE + e->inflight;
	spin_unlock(&e->lock);
}

/* ---- submission latency (eng.lock held) ---- */

static unsigned int eng_lat_bucket(u64 ns)
{
	unsigned int msb;

	if (ns < VGPU_LAT_SUB)
		return ns;
	msb = fls64(ns) - 1;
	if (msb > VGPU_LAT_MAX_SHIFT)
		return VGPU_LAT_BUCKETS - 1;
	return (msb - VGPU_LAT_SUB_SHIFT + 1) * VGPU_LAT_SUB +
	       ((ns >> (msb - VGPU_LAT_SUB_SHIFT)) & (VGPU_LAT_SUB - 1));
}

/* The largest latency in ns that bucket @b holds. */
static u64 eng_lat_upper(unsigned int b)
{
	unsigned int o = b / VGPU_LAT_SUB, sub = b % VGPU_LAT_SUB;

	if (!o)
		return sub;
	return ((u64)(VGPU_LAT_SUB + sub + 1) << (o - 1)) - 1;
}

/* Forget the doorbells being timed: their commands will not complete. */
static void eng_lat_flush(struct vgpu_engine *e)
{
	e->lat_n = 0;
	e->lat_last = 0;
}

/*
 * A doorbell: time it until the commands pending now have completed
 * (counted in jobs; a JUMP makes the count approximate). A doorbell that
 * adds nothing, or finds all slots busy, is not timed.
 */
static void eng_lat_submit(struct vgpu_engine *e)
{
	unsigned int slot;
	u64 target;

	if (!eng_runnable(e))
		return;
	target = e->jobs + ((e->tail - e->head) & (e->size - 1)) /
		 VGPU_CMD_SIZE + e->inflight;
	if (target <= e->lat_last || e->lat_n == VGPU_LAT_INFLIGHT)
		return;
	slot = (e->lat_first + e->lat_n) % VGPU_LAT_INFLIGHT;
	e->lat_sub[slot].target = target;
	e->lat_sub[slot].t_ns = ktime_get_ns();
	e->lat_n++;
	e->lat_last = target;
}

/* Record the timed doorbells whose commands have completed, at @now. */
static void eng_lat_retire(struct vgpu_engine *e, u64 now)
{
	while (e->lat_n) {
		struct vgpu_lat_sub *ls = &e->lat_sub[e->lat_first];
		unsigned int b;

		if (ls->target > e->jobs)
			break;
		b = eng_lat_bucket(now > ls->t_ns ? now - ls->t_ns : 0);
		if (e->lat_hist[b] != U32_MAX)
			e->lat_hist[b]++;
		e->lat_first = (e->lat_first + 1) % VGPU_LAT_INFLIGHT;
		e->lat_n--;
	}
}

/* Signal the interrupt if IRQ_STATUS & IRQ_MASK gained a bit over @old. */
static void eng_irq_check(struct vgpu_device *vg, u32 old)
{
	struct vgpu_engine *e = &vg->eng;
	int index;

	if (!(e->irq_status & e->irq_mask & ~old))
		return;
	/* MSI if enabled, else INTx unless disabled (config space) */
	index = vgpu_cfg_irq_index(vg);
	if (index >= 0)
		vgpu_irq_raise(vg, index);
}

/*
 * An event of the sources @bits: sources in IRQ_EDGE signal the interrupt
 * at each event (if unmasked) and are not latched; the others set their
 * IRQ_STATUS bits.
 */
static void eng_irq(struct vgpu_device *vg, u32 bits)
{
	struct vgpu_engine *e = &vg->eng;
	u32 old = e->irq_status & e->irq_mask;
	int index;

	if (bits & e->irq_edge & e->irq_mask) {
		index = vgpu_cfg_irq_index(vg);
		if (index >= 0)
			vgpu_irq_raise(vg, index);
	}
	e->irq_status |= bits & ~e->irq_edge;
	eng_irq_check(vg, old);
}

/*
 * Stop the ring with error @code for the command at ring offset @at; only
 * the first error since a reset counts. The caller updates the scheduler.
 */
static void eng_fail(struct vgpu_device *vg, u32 code, u32 at)
{
	struct vgpu_engine *e = &vg->eng;

	if (e->stopped)
		return;
	e->stopped = true;
	e->error = code;
	e->error_head = at;
	e->inflight = false;
	e->cmds_failed++;
	eng_lat_flush(e);
	if (code == VGPU_ERR_WATCHDOG) {
		e->hung = true;
		eng_irq(vg, VGPU_IRQ_WATCHDOG);
	} else {
		eng_irq(vg, VGPU_IRQ_ERROR);
	}
}

/* Before the instance is visible (no lock needed). */
void vgpu_engine_init(struct vgpu_device *vg)
{
	memset(&vg->eng, 0, sizeof(vg->eng));
	spin_lock_init(&vg->eng.lock);
}

/*
 * ENGINE_RESET (@full false): stop the ring, clear ERROR, STATUS and
 * IRQ_STATUS, HEAD = TAIL = 0, ENABLE = 0. Device reset (@full): also the
 * ring base and size, FENCE, IRQ_MASK and CMDS_DONE. VRAM is kept. The
 * command in flight is dropped: vg->lock is held, so no chunk of it is
 * running and none runs after this.
 */
void vgpu_engine_reset(struct vgpu_device *vg, bool full)
{
	struct vgpu_engine *e = &vg->eng;

	lockdep_assert_held(&vg->lock);
	spin_lock(&e->lock);
	e->enabled = false;
	e->stopped = false;
	e->hung = false;
	e->error = VGPU_ERR_NONE;
	e->error_head = 0;
	e->irq_status = 0;
	e->head = 0;
	e->tail = 0;
	e->inflight = false;
	e->wd_ns = 0;
	eng_lat_flush(e);
	if (full) {
		e->base_lo = 0;
		e->base_hi = 0;
		e->size = 0;
		e->fence = 0;
		e->irq_mask = 0;
		e->cmds_done = 0;
		e->shadow_lo = 0;
		e->shadow_hi = 0;
		e->irq_edge = 0;
	}
	vgpu_sched_update(vg);
	spin_unlock(&e->lock);
}

static bool eng_ring_valid(struct vgpu_device *vg)
{
	const struct vgpu_engine *e = &vg->eng;
	u64 base = eng_base(e), end;

	return is_power_of_2(e->size) && e->size >= VGPU_RING_MIN &&
	       e->size <= VGPU_RING_MAX && IS_ALIGNED(base, SZ_4K) &&
	       !check_add_overflow(base, (u64)e->size, &end) &&
	       end <= vg->vram_size;
}

/* RING_CTL. vg->lock held too: disabling drops the command in flight. */
static void eng_write_ctl(struct vgpu_device *vg, bool enable)
{
	struct vgpu_engine *e = &vg->eng;

	if (enable && !e->enabled) {
		if (!eng_ring_valid(vg)) {
			eng_fail(vg, VGPU_ERR_BAD_RING, e->head);
		} else {
			e->enabled = true;
			e->head = 0;
			e->tail = 0;
			e->inflight = false;
			e->wd_ns = 0;
			eng_lat_flush(e);
		}
	} else if (!enable && e->enabled) {
		e->enabled = false;
		e->inflight = false;
		eng_lat_flush(e);
	}
	vgpu_sched_update(vg);
}

static void eng_write_tail(struct vgpu_device *vg, u32 val)
{
	struct vgpu_engine *e = &vg->eng;

	if (!e->enabled)
		return;
	if (!IS_ALIGNED(val, VGPU_CMD_SIZE) || val >= e->size) {
		eng_fail(vg, VGPU_ERR_BAD_RING, e->head);
		vgpu_sched_update(vg);
		return;
	}
	e->tail = val;
}

/* VRAM offset of the TAIL shadow word. */
static u64 eng_shadow(const struct vgpu_engine *e)
{
	return (u64)e->shadow_hi << 32 | (e->shadow_lo & ~VGPU_SHADOW_ENABLE);
}

/*
 * TAIL_SHADOW_LO. Setting ENABLE checks that the shadow word is 4-aligned
 * and inside VRAM; if not, ENABLE is not stored and the ring stops with
 * BAD_RING, as for a bad TAIL.
 */
static void eng_write_shadow(struct vgpu_device *vg, u32 val)
{
	struct vgpu_engine *e = &vg->eng;
	u64 off = (u64)e->shadow_hi << 32 | (val & ~VGPU_SHADOW_ENABLE);

	if ((val & VGPU_SHADOW_ENABLE) &&
	    (!IS_ALIGNED(off, VGPU_SHADOW_ALIGN) ||
	     off > vg->vram_size - sizeof(u32))) {
		e->shadow_lo = val & ~VGPU_SHADOW_ENABLE;
		eng_fail(vg, VGPU_ERR_BAD_RING, e->head);
		vgpu_sched_update(vg);
		return;
	}
	e->shadow_lo = val;
}

static u32 eng_read_reg(const struct vgpu_engine *e, unsigned int reg)
{
	u32 st;

	switch (reg) {
	case VGPU_ENG_RING_BASE_LO:
		return e->base_lo;
	case VGPU_ENG_RING_BASE_HI:
		return e->base_hi;
	case VGPU_ENG_RING_SIZE:
		return e->size;
	case VGPU_ENG_RING_HEAD:
		return e->head;
	case VGPU_ENG_RING_TAIL:
		return e->tail;
	case VGPU_ENG_RING_CTL:
		return e->enabled ? VGPU_CTL_ENABLE : 0;
	case VGPU_ENG_STATUS:
		st = 0;
		if (e->enabled)
			st |= VGPU_STATUS_ENABLED;
		if (eng_runnable(e))
			st |= VGPU_STATUS_BUSY;
		if (e->stopped)
			st |= VGPU_STATUS_ERROR;
		if (e->hung)
			st |= VGPU_STATUS_HUNG;
		return st;
	case VGPU_ENG_ERROR:
		return e->error;
	case VGPU_ENG_ERROR_HEAD:
		return e->error_head;
	case VGPU_ENG_FENCE_LO:
		return lower_32_bits(e->fence);
	case VGPU_ENG_FENCE_HI:
		return upper_32_bits(e->fence);
	case VGPU_ENG_IRQ_STATUS:
		return e->irq_status;
	case VGPU_ENG_IRQ_MASK:
		return e->irq_mask;
	case VGPU_ENG_CMDS_DONE:
		return e->cmds_done;
	case VGPU_ENG_TAIL_SHADOW_LO:
		return e->shadow_lo;
	case VGPU_ENG_TAIL_SHADOW_HI:
		return e->shadow_hi;
	case VGPU_ENG_IRQ_EDGE:
		return e->irq_edge;
	default:
		return 0;	/* DOORBELL, ENGINE_RESET (write-only), holes */
	}
}

/*
 * A read in the engine block: 1, 2 or 4 bytes, naturally aligned (checked
 * by the caller). Called without vg->lock, so polling a register never
 * waits for the engine.
 */
u32 vgpu_engine_read(struct vgpu_device *vg, unsigned int off,
		     unsigned int size)
{
	struct vgpu_engine *e = &vg->eng;
	u32 val;

	spin_lock(&e->lock);
	val = eng_read_reg(e, off & ~3U);
	spin_unlock(&e->lock);
	val >>= (off & 3) * 8;
	return size >= 4 ? val : val & ((1U << (size * 8)) - 1);
}

/*
 * A write in the engine block (no lock held). Registers take 32-bit
 * writes; a write of any size to DOORBELL rings it; other narrower writes
 * are ignored.
 */
void vgpu_engine_write(struct vgpu_device *vg, unsigned int off,
		       unsigned int size, u32 val)
{
	struct vgpu_engine *e = &vg->eng;
	unsigned int reg = off & ~3U;
	u32 old;

	if (reg != VGPU_ENG_DOORBELL && size != 4)
		return;

	switch (reg) {
	case VGPU_ENG_RING_CTL:
		vgpu_lock(vg);
		spin_lock(&e->lock);
		eng_write_ctl(vg, val & VGPU_CTL_ENABLE);
		spin_unlock(&e->lock);
		vgpu_unlock(vg);
		return;
	case VGPU_ENG_RESET:
		if (val & 1) {
			vgpu_lock(vg);
			vgpu_engine_reset(vg, false);
			vgpu_unlock(vg);
		}
		return;
	}

	spin_lock(&e->lock);
	switch (reg) {
	case VGPU_ENG_DOORBELL:
		/* the TAIL shadow in VRAM, taken as a write of RING_TAIL */
		if (e->shadow_lo & VGPU_SHADOW_ENABLE)
			eng_write_tail(vg, vgpu_vram_peek32(vg, eng_shadow(e)));
		eng_lat_submit(e);
		vgpu_sched_update(vg);
		break;
	case VGPU_ENG_RING_BASE_LO:
		if (!e->enabled)
			e->base_lo = val;
		break;
	case VGPU_ENG_RING_BASE_HI:
		if (!e->enabled)
			e->base_hi = val;
		break;
	case VGPU_ENG_RING_SIZE:
		if (!e->enabled)
			e->size = val;
		break;
	case VGPU_ENG_RING_TAIL:
		eng_write_tail(vg, val);
		break;
	case VGPU_ENG_IRQ_STATUS:
		e->irq_status &= ~(val & VGPU_IRQ_ALL);
		break;
	case VGPU_ENG_IRQ_MASK:
		/* IRQ_STATUS & IRQ_MASK may gain a bit this way too */
		old = e->irq_status & e->irq_mask;
		e->irq_mask = val & VGPU_IRQ_ALL;
		eng_irq_check(vg, old);
		break;
	case VGPU_ENG_TAIL_SHADOW_LO:
		eng_write_shadow(vg, val);
		break;
	case VGPU_ENG_TAIL_SHADOW_HI:
		if (!(e->shadow_lo & VGPU_SHADOW_ENABLE))
			e->shadow_hi = val;
		break;
	case VGPU_ENG_IRQ_EDGE:
		e->irq_edge = val & VGPU_IRQ_ALL;
		break;
	default:
		break;		/* read-only registers and holes */
	}
	spin_unlock(&e->lock);
}

/* ---- validation (on the private copy, before any byte moves) ---- */

/* [off, off + len) inside VRAM of @size bytes, without overflow. */
static u32 eng_range(u64 off, u64 len, u64 size)
{
	u64 end;

	if (check_add_overflow(off, len, &end))
		return VGPU_ERR_BAD_SIZE;
	return end > size ? VGPU_ERR_OUT_OF_RANGE : VGPU_ERR_NONE;
}

/* Operands an opcode does not use are reserved: they must be 0. */
static bool eng_unused_set(const u64 *arg, unsigned int from)
{
	for (; from < ARRAY_SIZE(((struct vgpu_eng_op *)NULL)->arg); from++)
		if (arg[from])
			return true;
	return false;
}

static bool eng_overlap(u64 a, u64 alen, u64 b, u64 blen)
{
	/* both ranges were checked to lie inside VRAM: no overflow */
	return a < b + blen && b < a + alen;
}

static u32 eng_validate_gemm(struct vgpu_device *vg, struct vgpu_eng_op *op)
{
	const u64 *a = op->arg;
	u64 m = a[3], n = a[4], k = a[5], la, lb, lc;
	u32 err;

	if (eng_unused_set(a, 6))
		return VGPU_ERR_BAD_FLAGS;
	if (!m || !n || !k || m > VGPU_GEMM_MAX_DIM ||
	    n > VGPU_GEMM_MAX_DIM || k > VGPU_GEMM_MAX_DIM)
		return VGPU_ERR_BAD_SIZE;
	if (!IS_ALIGNED(a[0] | a[1] | a[2], 4))
		return VGPU_ERR_BAD_ALIGN;
	/* dimensions <= 2^16: the byte sizes are < 2^35 */
	la = m * k * 4;
	lb = k * n * 4;
	lc = m * n * 4;
	err = eng_range(a[0], la, vg->vram_size);
	if (!err)
		err = eng_range(a[1], lb, vg->vram_size);
	if (!err)
		err = eng_range(a[2], lc, vg->vram_size);
	if (err)
		return err;
	op->serial = eng_overlap(a[2], lc, a[0], la) ||
		     eng_overlap(a[2], lc, a[1], lb);
	return VGPU_ERR_NONE;
}

static u32 eng_validate_blit(struct vgpu_device *vg, struct vgpu_eng_op *op)
{
	const u64 *a = op->arg;
	u64 stride = a[1], w = a[2], h = a[3], x = a[4], y = a[5], span;
	struct vgpu_mode *md = &op->mode;

	if (eng_unused_set(a, 6))
		return VGPU_ERR_BAD_FLAGS;
	if (!w || !h)
		return VGPU_ERR_BAD_SIZE;
	if (!vgpu_display_mode(vg, md))
		return VGPU_ERR_BAD_MODE;
	if (w > md->width || x > md->width - w ||
	    h > md->height || y > md->height - h)
		return VGPU_ERR_BAD_MODE;
	/* w, h < 2^16 now; the source spans (h - 1) rows plus one row */
	if (check_mul_overflow(h - 1, stride, &span) ||
	    check_add_overflow(span, w * md->bytepp, &span))
		return VGPU_ERR_BAD_SIZE;
	return eng_range(a[0], span, vg->vram_size);
}

/* Decode and check @cmd into @op; returns an ERROR code (0: valid). */
static u32 eng_validate(struct vgpu_device *vg, const struct vgpu_cmd *cmd,
			struct vgpu_eng_op *op)
{
	u32 word = le32_to_cpu(cmd->op);
	u64 size = vg->vram_size;
	const u64 *a = op->arg;
	unsigned int i;
	u8 allowed;
	u32 err;

	memset(op, 0, sizeof(*op));
	op->opcode = word & 0xff;
	op->flags = (word >> 8) & 0xff;
	for (i = 0; i < ARRAY_SIZE(op->arg); i++)
		op->arg[i] = le64_to_cpu(cmd->arg[i]);

	if (op->opcode >= VGPU_NUM_OPS)
		return VGPU_ERR_BAD_OPCODE;
	allowed = op->opcode == VGPU_OP_FENCE ?
		  VGPU_FENCE_IRQ | VGPU_FENCE_WRITE : 0;
	if ((word >> 16) || cmd->rsvd || (op->flags & ~allowed))
		return VGPU_ERR_BAD_FLAGS;

	switch (op->opcode) {
	case VGPU_OP_NOP:
		return eng_unused_set(a, 0) ? VGPU_ERR_BAD_FLAGS : 0;
	case VGPU_OP_FILL:		/* dst, len, value */
		if (eng_unused_set(a, 3) || upper_32_bits(a[2]))
			return VGPU_ERR_BAD_FLAGS;
		if (!a[1])
			return VGPU_ERR_BAD_SIZE;
		if (!IS_ALIGNED(a[0] | a[1], 4))
			return VGPU_ERR_BAD_ALIGN;
		return eng_range(a[0], a[1], size);
	case VGPU_OP_COPY:		/* dst, src, len */
		if (eng_unused_set(a, 3))
			return VGPU_ERR_BAD_FLAGS;
		if (!a[2])
			return VGPU_ERR_BAD_SIZE;
		err = eng_range(a[0], a[2], size);
		if (!err)
			err = eng_range(a[1], a[2], size);
		/* dst above an overlapping src: copy from the end down */
		op->backward = a[0] > a[1] && a[0] - a[1] < a[2];
		return err;
	case VGPU_OP_CHECKSUM:		/* src, len, dst */
		if (eng_unused_set(a, 3))
			return VGPU_ERR_BAD_FLAGS;
		if (!a[1])
			return VGPU_ERR_BAD_SIZE;
		if (!IS_ALIGNED(a[0] | a[1], 4) || !IS_ALIGNED(a[2], 8))
			return VGPU_ERR_BAD_ALIGN;
		err = eng_range(a[0], a[1], size);
		if (!err)
			err = eng_range(a[2], 8, size);
		op->hash = VGPU_FNV_OFFSET;
		return err;
	case VGPU_OP_GEMM:		/* A, B, C, m, n, k */
		return eng_validate_gemm(vg, op);
	case VGPU_OP_BLIT:		/* src, stride, w, h, x, y */
		return eng_validate_blit(vg, op);
	case VGPU_OP_FENCE:		/* seqno, addr */
		if (eng_unused_set(a, 2))
			return VGPU_ERR_BAD_FLAGS;
		if (!(op->flags & VGPU_FENCE_WRITE))
			return a[1] ? VGPU_ERR_BAD_FLAGS : 0;
		if (!IS_ALIGNED(a[1], 8))
			return VGPU_ERR_BAD_ALIGN;
		return eng_range(a[1], 8, size);
	case VGPU_OP_JUMP:		/* ring offset */
		if (eng_unused_set(a, 1))
			return VGPU_ERR_BAD_FLAGS;
		if (!IS_ALIGNED(a[0], VGPU_CMD_SIZE) || a[0] >= vg->eng.size)
			return VGPU_ERR_BAD_RING;
		return 0;
	}
	return VGPU_ERR_BAD_OPCODE;
}

/*
 * Copy the command at HEAD, validate it, make it the one in flight. Both
 * vg->lock (VRAM, DISPI) and eng.lock held; nothing here sleeps.
 */
static bool eng_fetch(struct vgpu_device *vg)
{
	struct vgpu_engine *e = &vg->eng;
	struct vgpu_cmd cmd;
	const void *va;
	u32 err;

	/* base 4 KiB aligned, head 64-aligned: one page */
	va = eng_map_r(vg, eng_base(e) + e->head);
	memcpy(&cmd, va, sizeof(cmd));
	kunmap_local(va);

	err = eng_validate(vg, &cmd, &e->op);
	if (err) {
		eng_fail(vg, err, e->head);
		return false;
	}
	e->op.at = e->head;
	/* the whole command runs in the mode it was fetched in */
	e->op.external = READ_ONCE(vg->parent->exec.external) &&
			 vgpu_exec_eligible(vg, &e->op);
	e->head = (e->head + VGPU_CMD_SIZE) & (e->size - 1);
	e->inflight = true;
	return true;
}

/*
 * ---- chunks: work counted by its real cost ----
 *
 * A chunk has an allowance of VGPU_CHUNK_FULL; @u units of class @c cost
 * @u * rate[c] of it, rate[c] = VGPU_CHUNK_FULL / budget[c], where
 * budget[c] is how many units of class c the worker has learnt fit in one
 * chunk of the target length (vgpu_chunk_adapt()). Work is charged in
 * every dimension it costs: a span of a FILL (the piece within one page)
 * costs its bytes (VGPU_CC_FILL), one span (VGPU_CC_SPAN: the page
 * lookups, mappings and calls around it) and the pages it allocated
 * (VGPU_CC_PAGE); a BLIT row is a span at least. Each class's budget is
 * learnt from the chunks it dominates, so 1-pixel BLIT rows are costed
 * from the time spans take, not from the bytes of wide rows.
 */
#define VGPU_CHUNK_FULL		(1ULL << 32)

struct vgpu_chunk {
	bool external;			/* a piece went to the executor */
	u64 left;			/* allowance left */
	u64 rate[VGPU_NUM_CC];		/* allowance per unit of each class */
	u64 spent[VGPU_NUM_CC];		/* allowance used per class */
};

static void eng_chunk_init(struct vgpu_chunk *ch, const struct vgpu_worker *w)
{
	unsigned int i;

	ch->left = VGPU_CHUNK_FULL;
	ch->external = false;
	for (i = 0; i < VGPU_NUM_CC; i++) {
		ch->rate[i] = div_u64(VGPU_CHUNK_FULL, w->budget[i]);
		ch->spent[i] = 0;
	}
}

/* Charge @units of class @cls (at most what is left). */
static void eng_use(struct vgpu_chunk *ch, int cls, u64 units)
{
	u64 cost;

	if (check_mul_overflow(units, ch->rate[cls], &cost))
		cost = U64_MAX;
	cost = min(cost, ch->left);
	ch->left -= cost;
	ch->spent[cls] += cost;
}

/*
 * @n units of class @cls, or fewer if the allowance left pays for fewer
 * (then at least one, rounded up to @align).
 */
static u64 eng_limit(const struct vgpu_chunk *ch, int cls, u64 n, u64 align)
{
	u64 cost;

	if (!check_mul_overflow(n, ch->rate[cls], &cost) && cost <= ch->left)
		return n;
	return min(n, ALIGN(div64_u64(ch->left, ch->rate[cls]) + 1, align));
}

/*
 * A span of @n units of class @cls is done: charge its units, one span and
 * the pages it allocated (eng.allocs).
 */
static void eng_span(struct vgpu_device *vg, struct vgpu_chunk *ch, int cls,
		     u64 n)
{
	eng_use(ch, cls, n);
	eng_use(ch, VGPU_CC_SPAN, 1);
	if (vg->eng.allocs) {
		eng_use(ch, VGPU_CC_PAGE, vg->eng.allocs);
		vg->eng.allocs = 0;
	}
}

/* The class that used most of a spent chunk is the one to adapt. */
static int eng_chunk_class(const struct vgpu_chunk *ch)
{
	int i, cls = 0;

	for (i = 1; i < VGPU_NUM_CC; i++)
		if (ch->spent[i] > ch->spent[cls])
			cls = i;
	return cls;
}

/*
 * ---- execution: each step runs the command in flight until it is done or
 * the chunk's allowance is used up (VGPU_STEP_MORE) ----
 */

static int eng_fill(struct vgpu_device *vg, struct vgpu_eng_op *op,
		    struct vgpu_chunk *ch)
{
	u64 dst = op->arg[0], len = op->arg[1];
	u32 val = (__force u32)cpu_to_le32(lower_32_bits(op->arg[2]));

	while (op->done < len) {
		u64 off = dst + op->done;
		size_t n;
		void *va;

		if (!ch->left)
			return VGPU_STEP_MORE;
		/* multiples of 4, like dst and len */
		n = eng_limit(ch, VGPU_CC_FILL,
			      min_t(u64, len - op->done, page_left(off)), 4);
		va = eng_map_w(vg, off);
		if (!va)
			return VGPU_STEP_NOMEM;
		memset32(va, val, n / 4);
		kunmap_local(va);
		op->done += n;
		eng_span(vg, ch, VGPU_CC_FILL, n);
	}
	return VGPU_STEP_DONE;
}

static int eng_copy(struct vgpu_device *vg, struct vgpu_eng_op *op,
		    struct vgpu_chunk *ch)
{
	u64 dst = op->arg[0], src = op->arg[1], len = op->arg[2];

	while (op->done < len) {
		u64 d, s, n;

		if (!ch->left)
			return VGPU_STEP_MORE;
		if (!op->backward) {
			d = dst + op->done;
			s = src + op->done;
			n = min3(len - op->done, (u64)page_left(d),
				 (u64)page_left(s));
			n = eng_limit(ch, VGPU_CC_COPY, n, 1);
		} else {
			u64 end = len - op->done;

			n = min3(end, offset_in_page(dst + end - 1) + 1ULL,
				 offset_in_page(src + end - 1) + 1ULL);
			n = eng_limit(ch, VGPU_CC_COPY, n, 1);
			d = dst + end - n;
			s = src + end - n;
		}
		if (!eng_move(vg, d, s, n))
			return VGPU_STEP_NOMEM;
		op->done += n;
		eng_span(vg, ch, VGPU_CC_COPY, n);
	}
	return VGPU_STEP_DONE;
}

static int eng_checksum(struct vgpu_device *vg, struct vgpu_eng_op *op,
			struct vgpu_chunk *ch)
{
	u64 src = op->arg[0], len = op->arg[1];
	u64 h = op->hash;

	while (op->done < len) {
		u64 off = src + op->done;
		const __le32 *p;
		size_t n, i;

		if (!ch->left) {
			op->hash = h;
			return VGPU_STEP_MORE;
		}
		n = eng_limit(ch, VGPU_CC_SUM,
			      min_t(u64, len - op->done, page_left(off)), 4);
		p = eng_map_r(vg, off);
		for (i = 0; i < n / 4; i++) {
			h ^= le32_to_cpu(p[i]);
			h *= VGPU_FNV_PRIME;
		}
		kunmap_local(p);
		op->done += n;
		eng_span(vg, ch, VGPU_CC_SUM, n);
	}
	op->hash = h;
	/* the result is stored as the command completes (eng_complete()) */
	if (!eng_prefault(vg, op->arg[2]))
		return VGPU_STEP_NOMEM;
	eng_span(vg, ch, VGPU_CC_SUM, 8);
	return VGPU_STEP_DONE;
}

/*
 * GEMM, C not overlapping A or B: the order of the work is invisible, so
 * C is built one block of up to VGPU_GEMM_BLOCK columns of a row at a
 * time, accumulating row p of B into e->acc for p = 0..k-1 (B is read
 * along its rows), then stored. Progress: row i, block start j, index p.
 * Each row of B and each store of a block is a span; a stored element
 * costs as a multiply-add.
 */
static int eng_gemm(struct vgpu_device *vg, struct vgpu_engine *e,
		    struct vgpu_chunk *ch, u64 *macs)
{
	struct vgpu_eng_op *op = &e->op;
	u64 A = op->arg[0], B = op->arg[1], C = op->arg[2];
	u32 m = op->arg[3], n = op->arg[4], k = op->arg[5];

	while (op->i < m) {
		u32 jb = min_t(u32, n - op->j, VGPU_GEMM_BLOCK);
		u32 x, cnt, t;
		u64 off;

		while (op->p < k) {
			u32 av;

			if (!ch->left)
				return VGPU_STEP_MORE;
			av = eng_read32(vg, A + ((u64)op->i * k + op->p) * 4);
			off = B + ((u64)op->p * n + op->j) * 4;
			for (x = 0; x < jb; x += cnt, off += cnt * 4) {
				const __le32 *bp = eng_map_r(vg, off);

				cnt = min_t(u32, jb - x, page_left(off) / 4);
				for (t = 0; t < cnt; t++)
					e->acc[x + t] += av * le32_to_cpu(bp[t]);
				kunmap_local(bp);
			}
			op->p++;
			*macs += jb;
			eng_span(vg, ch, VGPU_CC_GEMM, jb);
		}

		off = C + ((u64)op->i * n + op->j) * 4;
		for (x = 0; x < jb; x += cnt, off += cnt * 4) {
			__le32 *cp = eng_map_w(vg, off);

			if (!cp)
				return VGPU_STEP_NOMEM;	/* store again later */
			cnt = min_t(u32, jb - x, page_left(off) / 4);
			for (t = 0; t < cnt; t++)
				cp[t] = cpu_to_le32(e->acc[x + t]);
			kunmap_local(cp);
		}
		memset(e->acc, 0, jb * sizeof(e->acc[0]));
		eng_span(vg, ch, VGPU_CC_GEMM, jb);
		op->p = 0;
		op->j += jb;
		if (op->j >= n) {
			op->j = 0;
			op->i++;
		}
	}
	return VGPU_STEP_DONE;
}

/*
 * GEMM with C overlapping A or B: exactly the ABI's order, one element of
 * C at a time in row-major order, each stored before the next is computed.
 * A multiply-add (two reads) is the unit; each store is a span.
 */
static int eng_gemm_serial(struct vgpu_device *vg, struct vgpu_eng_op *op,
			   struct vgpu_chunk *ch, u64 *macs)
{
	u64 A = op->arg[0], B = op->arg[1], C = op->arg[2];
	u32 m = op->arg[3], n = op->arg[4], k = op->arg[5];

	while (op->i < m) {
		while (op->p < k) {
			if (!ch->left)
				return VGPU_STEP_MORE;
			op->sacc += eng_read32(vg, A + ((u64)op->i * k + op->p) * 4) *
				    eng_read32(vg, B + ((u64)op->p * n + op->j) * 4);
			op->p++;
			(*macs)++;
			eng_use(ch, VGPU_CC_GEMM_SERIAL, 1);
		}
		if (!eng_write32(vg, C + ((u64)op->i * n + op->j) * 4, op->sacc))
			return VGPU_STEP_NOMEM;
		eng_span(vg, ch, VGPU_CC_GEMM_SERIAL, 0);
		op->sacc = 0;
		op->p = 0;
		if (++op->j >= n) {
			op->j = 0;
			op->i++;
		}
	}
	return VGPU_STEP_DONE;
}

/* BLIT: row by row into the scanout of the mode seen at validation. */
static int eng_blit(struct vgpu_device *vg, struct vgpu_eng_op *op,
		    struct vgpu_chunk *ch)
{
	const struct vgpu_mode *md = &op->mode;
	u64 src = op->arg[0], stride = op->arg[1];
	u64 x = op->arg[4], y = op->arg[5];
	u32 row = op->arg[2] * md->bytepp;
	u64 total = (u64)row * op->arg[3];

	while (op->done < total) {
		u32 c;
		u64 r = div_u64_rem(op->done, row, &c);
		u64 s = src + r * stride + c;
		u64 d = md->offset + (y + r) * md->stride + x * md->bytepp + c;
		u64 n;

		if (!ch->left)
			return VGPU_STEP_MORE;
		n = min3((u64)(row - c), (u64)page_left(s), (u64)page_left(d));
		n = eng_limit(ch, VGPU_CC_BLIT, n, 1);
		if (!eng_move(vg, d, s, n))
			return VGPU_STEP_NOMEM;
		op->done += n;
		/* a row is a span at least: 1-pixel rows are not free */
		eng_span(vg, ch, VGPU_CC_BLIT, n);
	}
	return VGPU_STEP_DONE;
}

/*
 * Run the data part of the command in flight (vg->lock held, eng.lock
 * not: this may allocate pages) with what is left of the chunk's
 * allowance.
 */
static int eng_step(struct vgpu_device *vg, struct vgpu_chunk *ch)
{
	struct vgpu_engine *e = &vg->eng;
	struct vgpu_eng_op *op = &e->op;
	u64 macs = 0;
	int ret;

	e->allocs = 0;
	switch (op->opcode) {
	case VGPU_OP_FILL:
		ret = eng_fill(vg, op, ch);
		break;
	case VGPU_OP_COPY:
		ret = eng_copy(vg, op, ch);
		break;
	case VGPU_OP_CHECKSUM:
		ret = eng_checksum(vg, op, ch);
		break;
	case VGPU_OP_GEMM:
		if (op->serial) {
			ret = eng_gemm_serial(vg, op, ch, &macs);
			break;
		}
		if (!op->done) {	/* first step: clear the sums */
			memset(e->acc, 0, sizeof(e->acc));
			op->done = 1;
		}
		ret = eng_gemm(vg, e, ch, &macs);
		break;
	case VGPU_OP_BLIT:
		ret = eng_blit(vg, op, ch);
		break;
	case VGPU_OP_FENCE:
		if (!(op->flags & VGPU_FENCE_WRITE))
			return VGPU_STEP_DONE;
		/* the seqno is stored as the command completes */
		if (!eng_prefault(vg, op->arg[1]))
			return VGPU_STEP_NOMEM;
		eng_span(vg, ch, VGPU_CC_FILL, 8);
		return VGPU_STEP_DONE;
	default:
		return VGPU_STEP_DONE;		/* NOP, JUMP */
	}
	if (macs) {
		WRITE_ONCE(e->macs, e->macs + macs);
		atomic64_add(macs, &vg->parent->sched.macs);
	}
	return ret;
}

/*
 * The command in flight is done (both locks held). The results that are
 * not data moved by its steps take effect here, all at once: a FENCE's
 * WRITE, FENCE register and IRQ, a CHECKSUM's result, a JUMP's HEAD.
 */
static void eng_complete(struct vgpu_device *vg)
{
	struct vgpu_engine *e = &vg->eng;
	struct vgpu_eng_op *op = &e->op;

	switch (op->opcode) {
	case VGPU_OP_FENCE:
		if (op->flags & VGPU_FENCE_WRITE)
			eng_store64(vg, op->arg[1], op->arg[0]);
		e->fence = op->arg[0];
		if (op->flags & VGPU_FENCE_IRQ)
			eng_irq(vg, VGPU_IRQ_FENCE);
		break;
	case VGPU_OP_CHECKSUM:
		eng_store64(vg, op->arg[2], op->hash);
		break;
	case VGPU_OP_JUMP:
		e->head = op->arg[0];
		break;
	}
	e->inflight = false;
	e->cmds_done++;
	e->jobs++;
	/* a timed doorbell's last command: read the clock now */
	if (e->lat_n && e->lat_sub[e->lat_first].target <= e->jobs)
		eng_lat_retire(e, ktime_get_ns());
}

/*
 * The next piece of the command in flight on the external executor
 * (vg->lock held, eng.lock not): one handoff is a chunk, waiting at most
 * until the watchdog would stop the ring anyway (no daemon, or a hung one).
 */
static int eng_external(struct vgpu_device *vg, struct vgpu_worker *w,
			struct vgpu_chunk *ch)
{
	struct vgpu_engine *e = &vg->eng;
	u64 wd = (u64)vgpu_sched_watchdog_ms(vg) * NSEC_PER_MSEC;
	u64 spent = READ_ONCE(e->wd_ns);

	ch->left = 0;
	ch->external = true;
	switch (vgpu_exec_step(vg, w, &e->op,
			       (wd > spent ? wd - spent : 0) + NSEC_PER_MSEC)) {
	case VGPU_XSTEP_DONE:
		/* CHECKSUM's result is stored as the command completes */
		if (e->op.opcode == VGPU_OP_CHECKSUM &&
		    !eng_prefault(vg, e->op.arg[2]))
			return VGPU_STEP_NOMEM;
		return VGPU_STEP_DONE;
	case VGPU_XSTEP_FAILED:
		spin_lock(&e->lock);
		if (e->inflight)
			eng_fail(vg, VGPU_ERR_EXECUTOR, e->op.at);
		spin_unlock(&e->lock);
		return VGPU_STEP_MORE;
	default:
		return VGPU_STEP_MORE;
	}
}

/*
 * One chunk of @vg's ring on engine @w, started at time @t0 (vg->lock
 * held): commands are fetched and run until the chunk's allowance is used
 * up (see eng_use(); the budgets of @w make that 16-48 us of work) or
 * the ring has nothing left. *@t1 is the time at its end: the only clock
 * read (under TCG with an HPET clocksource one costs about a microsecond).
 * Returns whether the engine should go on with this instance (false: idle,
 * stopped, or out of memory for now).
 */
bool vgpu_engine_chunk(struct vgpu_device *vg, struct vgpu_worker *w, u64 t0,
		       u64 *t1)
{
	struct vgpu_engine *e = &vg->eng;
	struct vgpu_chunk ch;
	bool nomem = false, fenced = false, more;
	struct mem_cgroup *old_memcg;
	u64 ns;

	lockdep_assert_held(&vg->lock);
	eng_chunk_init(&ch, w);
	/* first touches by the engine are charged to the opener's cgroup */
	old_memcg = set_active_memcg(vg->memcg);
	spin_lock(&e->lock);
	while (eng_runnable(e) && ch.left) {
		int ret;

		if (!e->inflight) {
			eng_use(&ch, VGPU_CC_CMD, 1);
			if (!eng_fetch(vg))
				break;
		}
		/*
		 * Only the holder of vg->lock drops or replaces the command
		 * in flight, so it stays ours while eng.lock is let go.
		 */
		spin_unlock(&e->lock);
		if (e->op.external)
			ret = eng_external(vg, w, &ch);
		else
			ret = eng_step(vg, &ch);
		spin_lock(&e->lock);
		/*
		 * A bad TAIL (the one write that stops the ring without
		 * vg->lock) may have stopped it during the step: the command
		 * was dropped then (eng_fail()) and must not complete now,
		 * after the ERROR.
		 */
		if (!e->inflight)
			break;
		if (ret == VGPU_STEP_MORE)
			break;
		if (ret == VGPU_STEP_NOMEM) {
			nomem = true;
			break;
		}
		if (e->op.opcode == VGPU_OP_FENCE)
			fenced = true;
		eng_complete(vg);
	}
	spin_unlock(&e->lock);
	set_active_memcg(old_memcg);

	*t1 = ktime_get_ns();
	ns = *t1 - t0;
	if (!ch.left && !ch.external)
		vgpu_chunk_adapt(w, eng_chunk_class(&ch), ns);

	spin_lock(&e->lock);
	/*
	 * The watchdog counts engine time since the last completed FENCE;
	 * at chunk granularity (a chunk that completed one counts as 0).
	 */
	e->wd_ns = fenced ? 0 : e->wd_ns + ns;
	if (eng_runnable(e) &&
	    e->wd_ns > (u64)vgpu_sched_watchdog_ms(vg) * NSEC_PER_MSEC)
		eng_fail(vg, VGPU_ERR_WATCHDOG,
			 e->inflight ? e->op.at : e->head);
	more = eng_runnable(e);
	if (!more)
		vgpu_sched_update(vg);
	spin_unlock(&e->lock);
	return more && !nomem;
}

/* ---- instance sysfs: /sys/bus/mdev/devices/<uuid>/vgpu/ ---- */

static ssize_t macs_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%llu\n", READ_ONCE(vg->eng.macs));
}

/*
 * "<upper bound ns> <count>" per non-empty bucket, ascending. Should the
 * lines not fit in a page, the last one is "more <samples not listed>".
 * The buckets are copied under eng.lock (which the engine and register
 * accesses take) and formatted after: a world-readable file must not hold
 * the engine up for hundreds of lines of formatting.
 */
static ssize_t latency_hist_show(struct device *dev,
				 struct device_attribute *attr, char *buf)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);
	struct vgpu_engine *e = &vg->eng;
	unsigned int b;
	u64 more = 0;
	u32 *hist;
	int len = 0;

	hist = kmalloc(sizeof(e->lat_hist), GFP_KERNEL);
	if (!hist)
		return -ENOMEM;
	spin_lock(&e->lock);
	memcpy(hist, e->lat_hist, sizeof(e->lat_hist));
	spin_unlock(&e->lock);
	for (b = 0; b < VGPU_LAT_BUCKETS; b++) {
		char line[40];
		int n;

		if (!hist[b])
			continue;
		n = scnprintf(line, sizeof(line), "%llu %u\n",
			      eng_lat_upper(b), hist[b]);
		if (more || len + n > PAGE_SIZE - (int)sizeof(line)) {
			more += hist[b];
			continue;
		}
		memcpy(buf + len, line, n);
		len += n;
	}
	kfree(hist);
	if (more)
		len += sysfs_emit_at(buf, len, "more %llu\n", more);
	return len;
}

/* Writing 0 clears the histogram. */
static ssize_t latency_hist_store(struct device *dev,
				  struct device_attribute *attr,
				  const char *buf, size_t count)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);
	struct vgpu_engine *e = &vg->eng;
	unsigned int val;
	int ret;

	ret = vgpu_parse_uint(buf, count, 0, 0, &val);
	if (ret)
		return ret;
	spin_lock(&e->lock);
	memset(e->lat_hist, 0, sizeof(e->lat_hist));
	spin_unlock(&e->lock);
	return count;
}

struct device_attribute vgpu_attr_macs = __ATTR_RO(macs);
struct device_attribute vgpu_attr_latency_hist = __ATTR_RW(latency_hist);
