/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vgpu_shim: the scheduler's policy arithmetic (docs/scheduler.md): rates
 * and token buckets, virtual time, the pick and the charge. Functions of
 * the scheduler state only, all called with vgpu_sched.lock held; used by
 * vgpu_sched.c and tested by the KUnit module (vgpu_shim_kunit.c).
 */
#ifndef VGPU_SCHED_POLICY_H
#define VGPU_SCHED_POLICY_H

#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/rbtree.h>

#include "vgpu.h"

#define VGPU_PPM		1000000ULL	/* rate unit: parts per million */
#define VGPU_BUCKET_MIN_NS	(10 * NSEC_PER_MSEC)

/* ---- virtual time ---- */

#define VGPU_VT_REACH	(1ULL << 62)	/* how far behind vt_floor a vt may be */

/*
 * Virtual time grows by d * 1024 / w for d ns of engine time at weight w:
 * at weight 1 it passes 2^64 after about 208 days of busy time, and then
 * wraps around. So virtual times are compared as CFS compares vruntime, by
 * the sign of their difference: right as long as the times compared are
 * less than 2^63 apart (about 104 days at weight 1). Runnable instances
 * stay within a few slices of each other; an instance that does not take
 * part in the pick (idle, or waiting for its lock) is never left more than
 * VGPU_VT_REACH (2^62, ~52 days at weight 1) behind vt_floor (see
 * vgpu_sched_pick()).
 *
 * vgpu_vt_before(): whether virtual time @a comes before @b.
 */
static inline bool vgpu_vt_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

static inline u64 vgpu_vt_max(u64 a, u64 b)
{
	return vgpu_vt_before(a, b) ? b : a;
}

static inline u64 vgpu_vt_min(u64 a, u64 b)
{
	return vgpu_vt_before(b, a) ? b : a;
}

/* ---- budgets, the pick, the charge ---- */

/* Rate limit of @se in ppm of one engine; 0: none. */
static inline u64 vgpu_sched_rate(struct vgpu_sched *s,
				  struct vgpu_sched_ent *se)
{
	u64 rate = se->cap ? se->cap * (VGPU_PPM / 100) : 0;

	if (s->policy == VGPU_POLICY_FIXED_SHARE && s->sum_weight) {
		u64 share = div_u64((u64)s->nr_workers * se->weight * VGPU_PPM,
				    s->sum_weight);

		share = clamp_t(u64, share, 1, VGPU_PPM);
		rate = rate ? min(rate, share) : share;
	}
	return rate;
}

static inline u64 vgpu_sched_depth(struct vgpu_sched *s, u64 rate)
{
	u64 win = max_t(u64, 2ULL * s->slice_us * NSEC_PER_USEC,
			VGPU_BUCKET_MIN_NS);

	return div_u64(win * rate, VGPU_PPM);
}

/* Token bucket: accrue @rate ns per ns of wall time up to the depth. */
static inline void vgpu_sched_refill(struct vgpu_sched *s,
				     struct vgpu_sched_ent *se,
				     u64 rate, u64 now)
{
	s64 depth = vgpu_sched_depth(s, rate);
	u64 dt;
	u32 rem;

	if (now <= se->refill_ns)
		return;
	dt = now - se->refill_ns;
	se->refill_ns = now;
	/* the bucket is at most 60 ms deep: 10 s of accrual fills any */
	dt = min_t(u64, dt, 10 * NSEC_PER_SEC);
	se->budget += div_u64_rem(dt * rate + se->budget_frac, VGPU_PPM, &rem);
	se->budget_frac = rem;
	if (se->budget >= depth) {
		se->budget = depth;
		se->budget_frac = 0;
	}
}

/*
 * When a throttled instance's budget turned (or turns) positive, as seen
 * at @now: the end of its throttled interval. Read-only, so a sysfs read
 * and the scheduler agree and throttled_ns never goes back.
 */
static inline u64 vgpu_sched_throttle_end(struct vgpu_sched *s,
					  struct vgpu_sched_ent *se, u64 now)
{
	u64 rate = vgpu_sched_rate(s, se), dt, ago;
	s64 budget = se->budget;

	/* two engines' clock readings may cross by a little */
	if (now <= se->throttled_since)
		return se->throttled_since;
	if (!rate)
		return now;
	dt = now > se->refill_ns ? now - se->refill_ns : 0;
	dt = min_t(u64, dt, 10 * NSEC_PER_SEC);
	budget += div_u64(dt * rate + se->budget_frac, VGPU_PPM);
	budget = min_t(s64, budget, vgpu_sched_depth(s, rate));
	if (budget <= 0)
		return now;
	ago = div_u64((u64)budget * VGPU_PPM, rate);
	if (now - se->throttled_since <= ago)
		return se->throttled_since;
	return now - ago;
}

static inline u64 vgpu_sched_throttled_ns(struct vgpu_sched *s,
					  struct vgpu_sched_ent *se, u64 now)
{
	if (!se->throttled)
		return se->throttled_ns;
	return se->throttled_ns +
	       (vgpu_sched_throttle_end(s, se, now) - se->throttled_since);
}

/* End a throttled interval (eligible again, or no longer runnable). */
static inline void vgpu_sched_unthrottle(struct vgpu_sched *s,
					 struct vgpu_sched_ent *se, u64 now)
{
	if (!se->throttled)
		return;
	se->throttled_ns = vgpu_sched_throttled_ns(s, se, now);
	se->throttled = false;
}

/* ---- the queues (docs/scheduler.md, "The pick") ---- */

/*
 * The order of the run queue: by virtual time, compared wrap-safe (the
 * eligible instances are within a few slices of each other, far less than
 * 2^63 apart), ties to the older instance (the smaller seq), as the list
 * of instances in creation order gave them before the queue existed.
 */
static inline bool vgpu_se_before(const struct vgpu_sched_ent *a,
				  const struct vgpu_sched_ent *b)
{
	if (a->vt != b->vt)
		return vgpu_vt_before(a->vt, b->vt);
	return a->seq < b->seq;
}

static inline bool vgpu_runq_less(struct rb_node *a, const struct rb_node *b)
{
	return vgpu_se_before(rb_entry(a, struct vgpu_sched_ent, rb),
			      rb_entry(b, struct vgpu_sched_ent, rb));
}

/* The throttled queue: by when the budget returns (ktime ns: no wrap). */
static inline bool vgpu_throttleq_less(struct rb_node *a,
				       const struct rb_node *b)
{
	return rb_entry(a, struct vgpu_sched_ent, rb)->unthrottle_at <
	       rb_entry(b, struct vgpu_sched_ent, rb)->unthrottle_at;
}

static inline struct vgpu_sched_ent *vgpu_runq_first(struct vgpu_sched *s)
{
	struct rb_node *n = rb_first_cached(&s->runq);

	return n ? rb_entry(n, struct vgpu_sched_ent, rb) : NULL;
}

/* Take @se off whichever queue it is on. */
static inline void vgpu_sched_dequeue(struct vgpu_sched *s,
				      struct vgpu_sched_ent *se)
{
	if (se->queued == VGPU_Q_RUN)
		rb_erase_cached(&se->rb, &s->runq);
	else if (se->queued == VGPU_Q_THROTTLED)
		rb_erase_cached(&se->rb, &s->throttleq);
	se->queued = VGPU_Q_NONE;
}

/*
 * Queue @se (off both queues) as throttled at @now: it waits until its
 * budget turns positive at @rate (at once if it is positive, or @rate 0:
 * the next pick makes it eligible).
 */
static inline void vgpu_sched_throttle(struct vgpu_sched *s,
				       struct vgpu_sched_ent *se, u64 rate,
				       u64 now)
{
	if (!se->throttled) {
		se->throttled = true;
		se->throttled_since = now;
	}
	se->unthrottle_at = now;
	if (rate && se->budget <= 0)
		se->unthrottle_at += div64_u64((1 - se->budget) * VGPU_PPM +
					       rate - 1, rate);
	rb_add_cached(&se->rb, &s->throttleq, vgpu_throttleq_less);
	se->queued = VGPU_Q_THROTTLED;
}

/*
 * Queue @se (runnable, not waiting for its lock, off both queues) at @now:
 * throttled if it is out of budget, else eligible. Eligible again after
 * being throttled, it catches up with the eligible ones, as a waking
 * instance does: time held back by a cap or fixed share earns no credit.
 */
static inline void vgpu_sched_enqueue(struct vgpu_sched *s,
				      struct vgpu_sched_ent *se, u64 now)
{
	u64 rate = vgpu_sched_rate(s, se);
	struct vgpu_sched_ent *first;

	if (rate) {
		vgpu_sched_refill(s, se, rate, now);
		if (se->budget <= 0) {
			vgpu_sched_throttle(s, se, rate, now);
			return;
		}
	}
	if (se->throttled) {
		vgpu_sched_unthrottle(s, se, now);
		first = vgpu_runq_first(s);
		if (first)
			se->vt = vgpu_vt_max(se->vt, first->vt);
	}
	rb_add_cached(&se->rb, &s->runq, vgpu_runq_less);
	se->queued = VGPU_Q_RUN;
}

/*
 * Budgets or rates changed for all (a knob, the policy, an instance came
 * or went): every queued instance is queued again at @now, an eligible one
 * out of budget as throttled, a throttled one with its new return time
 * (now, if it has budget again: the next pick makes it eligible). O(N), on
 * knob changes only.
 */
static inline void vgpu_sched_requeue(struct vgpu_sched *s, u64 now)
{
	struct vgpu_sched_ent *se;

	list_for_each_entry(se, &s->ents, node) {
		u64 rate;

		if (se->queued == VGPU_Q_NONE)
			continue;
		rate = vgpu_sched_rate(s, se);
		if (rate)
			vgpu_sched_refill(s, se, rate, now);
		if (se->queued == VGPU_Q_RUN && (!rate || se->budget > 0))
			continue;
		vgpu_sched_dequeue(s, se);
		vgpu_sched_throttle(s, se, rate, now);
	}
}

/* Refill every rate-limited bucket at its current rate, before it changes. */
static inline void vgpu_sched_refill_all(struct vgpu_sched *s, u64 now)
{
	struct vgpu_sched_ent *se;

	list_for_each_entry(se, &s->ents, node) {
		u64 rate = vgpu_sched_rate(s, se);

		if (rate)
			vgpu_sched_refill(s, se, rate, now);
		else
			se->refill_ns = now;
	}
}

/*
 * How far vt_floor moves between two reach sweeps: an instance out of the
 * race is then at most VGPU_VT_REACH + VGPU_VT_SWEEP (+ one step of the
 * floor) behind it, well below 2^63.
 */
#define VGPU_VT_SWEEP	(1ULL << 61)

/*
 * The smallest eligible vt is @vt: move vt_floor up to it. Every
 * VGPU_VT_SWEEP of floor (26 days of engine time at weight 1), instances
 * out of the race (idle, or waiting for their lock; they catch up when
 * they are back anyway) are pulled up to VGPU_VT_REACH behind the floor,
 * so that none falls so far behind that it would compare as ahead. O(N)
 * once in 2^61 of virtual time: O(1) a pick, amortised.
 */
static inline void vgpu_sched_floor(struct vgpu_sched *s, u64 vt)
{
	struct vgpu_sched_ent *se;

	if (!vgpu_vt_before(s->vt_floor, vt))
		return;
	s->vt_floor = vt;
	if (vt - s->sweep_floor < VGPU_VT_SWEEP)
		return;
	s->sweep_floor = vt;
	list_for_each_entry(se, &s->ents, node)
		if (se->queued == VGPU_Q_NONE &&
		    vgpu_vt_before(se->vt, vt - VGPU_VT_REACH))
			se->vt = vt - VGPU_VT_REACH;
}

/*
 * Pick the next instance for engine @w (see the file comment) and its
 * slice limit; the instance @w has now (if any) may win again. Instances
 * waiting for their lock are on no queue. *@wake_at is when the earliest
 * throttled instance gets budget again (0: none). Throttled instances
 * whose budget has returned become eligible first, catching up with the
 * eligible ones (vgpu_sched_enqueue()).
 *
 * O(log N): the leftmost of the run queue, passing over at most the
 * instances the other engines run; plus O(log N) for each throttled
 * instance that becomes eligible (once per throttled interval).
 */
static inline struct vgpu_sched_ent *
vgpu_sched_pick(struct vgpu_sched *s, struct vgpu_worker *w, u64 now,
		u64 *limit, u64 *wake_at)
{
	u64 slice = (u64)s->slice_us * NSEC_PER_USEC, rate;
	struct vgpu_sched_ent *se, *first = vgpu_runq_first(s);
	struct rb_node *n;

	*wake_at = 0;
	*limit = slice;
	if (first)
		vgpu_sched_floor(s, first->vt);
	while ((n = rb_first_cached(&s->throttleq))) {
		se = rb_entry(n, struct vgpu_sched_ent, rb);
		if (se->unthrottle_at > now) {
			*wake_at = se->unthrottle_at;
			break;
		}
		vgpu_sched_dequeue(s, se);
		rate = vgpu_sched_rate(s, se);
		if (rate) {
			vgpu_sched_refill(s, se, rate, now);
			if (se->budget <= 0) {
				/* back later than it looked: from now */
				vgpu_sched_throttle(s, se, rate, now);
				continue;
			}
		}
		/* catches up with those eligible before this pick */
		vgpu_sched_unthrottle(s, se, now);
		if (first)
			se->vt = vgpu_vt_max(se->vt, first->vt);
		rb_add_cached(&se->rb, &s->runq, vgpu_runq_less);
		se->queued = VGPU_Q_RUN;
	}
	for (n = rb_first_cached(&s->runq); n; n = rb_next(n)) {
		se = rb_entry(n, struct vgpu_sched_ent, rb);
		if (!se->on || se->on == w)
			break;
	}
	if (!n)
		return NULL;
	rate = vgpu_sched_rate(s, se);
	if (rate) {
		vgpu_sched_refill(s, se, rate, now);
		*limit = min_t(u64, slice, se->budget);
	}
	return se;
}

/*
 * The smallest vt among the runnable, eligible instances other than @skip
 * (vt_floor if there is none): what an instance that becomes runnable or
 * eligible again catches up with.
 */
static inline u64 vgpu_sched_min_vt(struct vgpu_sched *s,
				    struct vgpu_sched_ent *skip)
{
	struct rb_node *n = rb_first_cached(&s->runq);

	if (n && rb_entry(n, struct vgpu_sched_ent, rb) == skip)
		n = rb_next(n);
	return n ? rb_entry(n, struct vgpu_sched_ent, rb)->vt : s->vt_floor;
}

/* The weight @se's virtual time runs at under the current policy. */
static inline unsigned int vgpu_sched_vt_weight(struct vgpu_sched *s,
						struct vgpu_sched_ent *se)
{
	return s->policy == VGPU_POLICY_EQUAL_SHARE ? 1 : se->weight;
}

/*
 * @se waited for its lock (another task held it) and is eligible again. As
 * a waking instance it earns no credit for the wait, but it keeps up to one
 * slice of lead over the others: what it may have lost of its slice when
 * it left for the lock holder.
 */
static inline void vgpu_sched_lock_back(struct vgpu_sched *s,
					struct vgpu_sched_ent *se)
{
	u64 lead = div_u64((u64)s->slice_us * NSEC_PER_USEC * 1024,
			   vgpu_sched_vt_weight(s, se));

	/* wraps like virtual time itself: compared as such */
	se->vt = vgpu_vt_max(se->vt, vgpu_sched_min_vt(s, se) - lead);
}

/*
 * Wake-up preemption (docs/scheduler.md): a slice runs at least
 * 1/VGPU_PREEMPT_GRAN_DIV of slice_us (50 us at the default 1 ms) before a
 * waking instance may take its engine, so an engine switches at most once
 * per granularity however often instances wake.
 */
#define VGPU_PREEMPT_GRAN_DIV	20

static inline u64 vgpu_sched_preempt_gran(struct vgpu_sched *s)
{
	return div_u64((u64)s->slice_us * NSEC_PER_USEC, VGPU_PREEMPT_GRAN_DIV);
}

/*
 * An instance became runnable with virtual time @vt while @cur runs a slice
 * of at most @limit ns, charged up to the start of that slice. After how
 * many ns of that slice @cur's virtual time passes @vt (so that the pick
 * prefers the waking instance), but no sooner than the granularity; 0 if
 * not before the slice ends anyway.
 *
 * Charging u ns adds floor(u * 1024 / w) to @cur's vt; @vt comes before it
 * once that exceeds d = vt - cur->vt, i.e. from u = ceil((d + 1) * w / 1024).
 */
static inline u64 vgpu_sched_preempt_after(struct vgpu_sched *s, u64 vt,
					   struct vgpu_sched_ent *cur,
					   u64 limit)
{
	u64 w = vgpu_sched_vt_weight(s, cur), after = 0, d;

	if (!vgpu_vt_before(vt, cur->vt)) {
		d = vt - cur->vt;
		/* d / 1024 * w >= limit: out of reach (and no overflow below) */
		if ((d >> 10) >= limit)
			return 0;
		after = div_u64((d + 1) * w + 1023, 1024);
	}
	after = max(after, vgpu_sched_preempt_gran(s));
	return after < limit ? after : 0;
}

/*
 * Charge @d ns of engine time to @se: its vt moves on, so it moves in the
 * run queue; out of budget, it is throttled.
 */
static inline void vgpu_sched_charge(struct vgpu_sched *s,
				     struct vgpu_sched_ent *se, u64 d, u64 now)
{
	unsigned int w = vgpu_sched_vt_weight(s, se);
	u64 rate = vgpu_sched_rate(s, se);
	bool queued = se->queued != VGPU_Q_NONE;

	vgpu_sched_dequeue(s, se);
	se->busy_ns += d;
	s->busy_ns += d;
	se->vt += div_u64(d * 1024, w);
	if (rate) {
		vgpu_sched_refill(s, se, rate, now);
		se->budget -= d;
		/* waiting for its lock: throttled from now all the same */
		if (se->budget <= 0 && se->runnable && !se->throttled) {
			se->throttled = true;
			se->throttled_since = now;
		}
	}
	if (queued)
		vgpu_sched_enqueue(s, se, now);
}

/*
 * @se becomes runnable at @now: no credit for idling, it catches up; on a
 * queue unless it waits for its lock.
 */
static inline void vgpu_sched_wake(struct vgpu_sched *s,
				   struct vgpu_sched_ent *se, u64 now)
{
	se->vt = vgpu_vt_max(se->vt, vgpu_sched_min_vt(s, se));
	se->runnable = true;
	if (!se->lockwait)
		vgpu_sched_enqueue(s, se, now);
}

/* @se is no longer runnable (its ring is idle, or it is being removed). */
static inline void vgpu_sched_sleep(struct vgpu_sched *s,
				    struct vgpu_sched_ent *se, u64 now)
{
	vgpu_sched_dequeue(s, se);
	vgpu_sched_unthrottle(s, se, now);
	se->runnable = false;
}

/*
 * @se starts (@wait) or stops waiting for its lock at @now: off the queues
 * meanwhile.
 */
static inline void vgpu_sched_set_lockwait(struct vgpu_sched *s,
					   struct vgpu_sched_ent *se,
					   bool wait, u64 now)
{
	WRITE_ONCE(se->lockwait, wait);
	if (wait)
		vgpu_sched_dequeue(s, se);
	else if (se->runnable && se->queued == VGPU_Q_NONE)
		vgpu_sched_enqueue(s, se, now);
}

#endif /* VGPU_SCHED_POLICY_H */
