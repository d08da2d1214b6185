// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: KUnit tests of the scheduler's policy arithmetic
 * (vgpu_sched_policy.h), above all with virtual times around the u64
 * wrap-around. Part of a module of its own (vgpu_shim_kunit.ko, with
 * vgpu_kunit_xpiece.c), built only for kernels with CONFIG_KUNIT; loading
 * it runs the suites "vgpu_shim_sched" and "vgpu_shim_xpiece" and logs
 * KTAP results.
 */
#include <kunit/test.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/string.h>

#include "vgpu.h"
#include "vgpu_sched_policy.h"

#define SLICE_NS	(1000 * NSEC_PER_USEC)	/* slice_us 1000 */
#define VT_SLICE	(SLICE_NS * 1024)	/* a slice of vt at weight 1 */

struct sched_fixture {
	struct vgpu_sched s;
	struct vgpu_worker w;
	struct vgpu_sched_ent e[3];
	u64 now;
};

/* A parent with one engine and instances e[0..n), runnable, weights @wt. */
static void fixture_init(struct sched_fixture *f, unsigned int n,
			 const unsigned int *wt, u64 vt)
{
	unsigned int i;

	memset(f, 0, sizeof(*f));
	INIT_LIST_HEAD(&f->s.ents);
	f->s.runq = RB_ROOT_CACHED;
	f->s.throttleq = RB_ROOT_CACHED;
	f->s.policy = VGPU_POLICY_BEST_EFFORT;
	f->s.slice_us = SLICE_NS / NSEC_PER_USEC;
	f->s.nr_workers = 1;
	f->s.vt_floor = vt;
	f->s.sweep_floor = vt;
	f->w.parent = NULL;
	f->now = 1000 * NSEC_PER_SEC;
	for (i = 0; i < n; i++) {
		struct vgpu_sched_ent *se = &f->e[i];

		se->seq = i + 1;
		se->weight = wt[i];
		se->vt = vt;
		se->refill_ns = f->now;
		se->attached = true;
		se->runnable = true;
		list_add_tail(&se->node, &f->s.ents);
		f->s.sum_weight += wt[i];
		vgpu_sched_enqueue(&f->s, se, f->now);
	}
}

/* Give @se virtual time @vt, keeping it in its place in the run queue. */
static void set_vt(struct sched_fixture *f, struct vgpu_sched_ent *se, u64 vt)
{
	bool queued = se->queued != VGPU_Q_NONE;

	vgpu_sched_dequeue(&f->s, se);
	se->vt = vt;
	if (queued)
		vgpu_sched_enqueue(&f->s, se, f->now);
}

/* One slice: pick, run it for a slice (or its limit), charge. */
static struct vgpu_sched_ent *run_slice(struct sched_fixture *f)
{
	struct vgpu_sched_ent *se;
	u64 limit, wake_at;

	se = vgpu_sched_pick(&f->s, &f->w, f->now, &limit, &wake_at);
	if (!se)
		return NULL;
	f->now += limit;
	vgpu_sched_charge(&f->s, se, limit, f->now);
	return se;
}

static void vt_compare_wraps(struct kunit *test)
{
	u64 late = U64_MAX - 5;		/* 16 before 10, through the wrap */

	KUNIT_EXPECT_TRUE(test, vgpu_vt_before(late, 10));
	KUNIT_EXPECT_FALSE(test, vgpu_vt_before(10, late));
	KUNIT_EXPECT_FALSE(test, vgpu_vt_before(10, 10));
	KUNIT_EXPECT_EQ(test, vgpu_vt_max(late, 10), 10ULL);
	KUNIT_EXPECT_EQ(test, vgpu_vt_max(10, late), 10ULL);
	KUNIT_EXPECT_EQ(test, vgpu_vt_min(late, 10), late);
	KUNIT_EXPECT_TRUE(test, vgpu_vt_before(5, 10));
	KUNIT_EXPECT_EQ(test, vgpu_vt_max(5, 10), 10ULL);
}

/* The earlier of two vts straddling the wrap is picked. */
static void pick_across_wrap(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 1 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	u64 limit, wake_at;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 2, wt, U64_MAX - 1000);
	set_vt(f, &f->e[1], 1000);	/* 2001 after e[0] */
	KUNIT_EXPECT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now,
						  &limit, &wake_at), &f->e[0]);
	set_vt(f, &f->e[0], 2000);	/* now e[0] is the later one */
	KUNIT_EXPECT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now,
						  &limit, &wake_at), &f->e[1]);
}

/*
 * Weights 1 and 2 from 10 slices of vt below the wrap, for 600 slices:
 * engine time 1:2 all along (within two slices each), and the floor
 * follows through the wrap.
 */
static void shares_across_wrap(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 2 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	unsigned int i;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 2, wt, U64_MAX - 10 * VT_SLICE);
	for (i = 1; i <= 600; i++) {
		s64 d;

		KUNIT_ASSERT_NOT_NULL(test, run_slice(f));
		d = 2 * (s64)f->e[0].busy_ns - (s64)f->e[1].busy_ns;
		if (abs(d) > 4 * SLICE_NS) {
			KUNIT_FAIL(test,
				   "slice %u: busy %llu vs %llu ns (weights 1:2), vt %llu %llu",
				   i, f->e[0].busy_ns, f->e[1].busy_ns,
				   f->e[0].vt, f->e[1].vt);
			return;
		}
	}
	/* both wrapped; the floor is within a slice of the smallest vt */
	KUNIT_EXPECT_LT(test, f->e[0].vt, 1000 * VT_SLICE);
	KUNIT_EXPECT_LT(test, f->e[1].vt, 1000 * VT_SLICE);
	KUNIT_EXPECT_LE(test, min(f->e[0].vt, f->e[1].vt) - f->s.vt_floor,
			VT_SLICE);
}

/* An instance created after the wrap (at vt_floor) gets its share. */
static void new_instance_after_wrap(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 1, 1 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	unsigned int i, got = 0;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 3, wt, U64_MAX - 5 * VT_SLICE);
	vgpu_sched_dequeue(&f->s, &f->e[2]);
	list_del(&f->e[2].node);	/* not created yet */
	f->s.sum_weight--;
	for (i = 0; i < 100; i++)
		KUNIT_ASSERT_NOT_NULL(test, run_slice(f));
	f->e[2].vt = f->s.vt_floor;	/* as vgpu_sched_attach() does */
	list_add_tail(&f->e[2].node, &f->s.ents);
	f->s.sum_weight++;
	vgpu_sched_enqueue(&f->s, &f->e[2], f->now);
	for (i = 0; i < 300; i++)
		got += run_slice(f) == &f->e[2];
	/* a third of the slices, give or take the catch-up */
	KUNIT_EXPECT_GE(test, got, 90U);
	KUNIT_EXPECT_LE(test, got, 110U);
}

/*
 * An instance idle while the others' vt moves on by more than 2^63 (200
 * days of engine time at weight 1, done here in big steps) is not left
 * so far behind that it compares as ahead: woken, it shares fairly.
 */
static void long_idle_stays_in_reach(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 1 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	struct vgpu_sched_ent *a, *c;
	unsigned int i, got = 0;
	u64 limit, wake_at;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 2, wt, 1ULL << 62);
	a = &f->e[0];
	c = &f->e[1];
	vgpu_sched_sleep(&f->s, c, f->now);
	for (i = 0; i < 12; i++) {
		/* 2^50 ns at weight 1: vt += 2^60 */
		KUNIT_ASSERT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w,
							  f->now, &limit,
							  &wake_at), a);
		f->now += 1ULL << 50;
		vgpu_sched_charge(&f->s, a, 1ULL << 50, f->now);
	}
	KUNIT_ASSERT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now,
						  &limit, &wake_at), a);
	vgpu_sched_wake(&f->s, c, f->now);
	for (i = 0; i < 100; i++)
		got += run_slice(f) == c;
	KUNIT_EXPECT_GE(test, got, 45U);
	KUNIT_EXPECT_LE(test, got, 55U);
}

/*
 * Back from waiting for its lock, an instance keeps at most one slice of
 * lead, also across the wrap, and never jumps ahead of the others.
 */
static void lock_back_bounded(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 1 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	struct vgpu_sched_ent *a, *b;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 2, wt, 0);
	a = &f->e[0];
	b = &f->e[1];
	/* a waits for its lock: off the run queue */
	vgpu_sched_set_lockwait(&f->s, a, true, f->now);
	/* near 0: a little behind b keeps its place */
	a->vt = 50;
	set_vt(f, b, 100);
	vgpu_sched_lock_back(&f->s, a);
	KUNIT_EXPECT_EQ(test, a->vt, 50ULL);
	/* far behind (across the wrap): one slice of lead left */
	set_vt(f, b, 5);
	a->vt = U64_MAX - 20 * VT_SLICE;
	vgpu_sched_lock_back(&f->s, a);
	KUNIT_EXPECT_EQ(test, a->vt, 5 - VT_SLICE);
	/* ahead: unchanged */
	a->vt = 10 * VT_SLICE;
	vgpu_sched_lock_back(&f->s, a);
	KUNIT_EXPECT_EQ(test, a->vt, 10 * VT_SLICE);
}

/*
 * While it waits for its lock an instance takes no part in the pick, but
 * it keeps the lead the hand-over grants (one slice) when it is back.
 */
static void lock_lead_kept_across_picks(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 1 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	struct vgpu_sched_ent *a, *b;
	unsigned int i;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 2, wt, U64_MAX - VT_SLICE);
	a = &f->e[0];
	b = &f->e[1];
	vgpu_sched_set_lockwait(&f->s, a, true, f->now);
	for (i = 0; i < 5; i++)
		KUNIT_ASSERT_PTR_EQ(test, run_slice(f), b);
	vgpu_sched_lock_back(&f->s, a);
	vgpu_sched_set_lockwait(&f->s, a, false, f->now);
	KUNIT_EXPECT_EQ(test, a->vt, b->vt - VT_SLICE);
	KUNIT_EXPECT_PTR_EQ(test, run_slice(f), a);
}

/*
 * Wake-up preemption: vgpu_sched_preempt_after() is exactly the run after
 * which the pick prefers the waking instance (at weights 3 and 1, with vts
 * around the wrap), never less than the granularity, and 0 when the slice
 * would end first.
 */
static void preempt_after_exact(struct kunit *test)
{
	static const unsigned int wt[] = { 3, 1 };
	static const s64 ahead[] = { 0, 1, 1023, 1024, 7777, 40 * 1024 * 1024,
				     100 * 1024 * 1024, -1, -VT_SLICE };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	u64 gran, after, limit, wake_at, vt0;
	struct vgpu_sched_ent *a, *b;
	unsigned int i;

	KUNIT_ASSERT_NOT_NULL(test, f);
	gran = SLICE_NS / VGPU_PREEMPT_GRAN_DIV;
	for (i = 0; i < ARRAY_SIZE(ahead); i++) {
		fixture_init(f, 2, wt, U64_MAX - 3 * 1024 * 1024);
		a = &f->e[0];		/* running, charged at its slice start */
		b = &f->e[1];		/* waking */
		vt0 = a->vt;
		set_vt(f, b, vt0 + ahead[i]);
		after = vgpu_sched_preempt_after(&f->s, b->vt, a, SLICE_NS);
		if (ahead[i] * 3 / 1024 >= (s64)SLICE_NS) {
			KUNIT_EXPECT_EQ(test, after, 0ULL);
			continue;
		}
		KUNIT_ASSERT_GE(test, after, gran);
		KUNIT_ASSERT_LT(test, after, (u64)SLICE_NS);
		if (after > gran) {
			/* one ns less: a still wins the pick */
			vgpu_sched_charge(&f->s, a, after - 1, f->now);
			KUNIT_EXPECT_PTR_EQ(test,
					    vgpu_sched_pick(&f->s, &f->w, f->now,
							    &limit, &wake_at),
					    a);
			set_vt(f, a, vt0);
		}
		vgpu_sched_charge(&f->s, a, after, f->now);
		KUNIT_EXPECT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now,
							  &limit, &wake_at), b);
	}
	/* a short slice (a budget): out of reach within it */
	fixture_init(f, 2, wt, 0);
	KUNIT_EXPECT_EQ(test, vgpu_sched_preempt_after(&f->s, f->e[1].vt,
						       &f->e[0], gran), 0ULL);
	/* equal_share: vt runs at weight 1 (100 us ahead: above the granularity) */
	f->s.policy = VGPU_POLICY_EQUAL_SHARE;
	set_vt(f, &f->e[1], 100 * 1024 * 1024);
	KUNIT_EXPECT_EQ(test, vgpu_sched_preempt_after(&f->s, f->e[1].vt,
						       &f->e[0], SLICE_NS),
			100ULL * 1024 + 1);
}

/*
 * An instance that wakes after idling catches up with the runner
 * (vgpu_sched_wake()): it preempts after the granularity, not sooner, and
 * two instances that keep waking each other switch at most once per
 * granularity of engine time.
 */
static void preempt_granularity(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 1 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	u64 gran = SLICE_NS / VGPU_PREEMPT_GRAN_DIV, after, busy = 0;
	struct vgpu_sched_ent *run, *wake;
	unsigned int i, switches = 0;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 2, wt, U64_MAX - VT_SLICE);
	run = &f->e[0];
	wake = &f->e[1];
	vgpu_sched_sleep(&f->s, wake, f->now);
	wake->vt -= 50 * VT_SLICE;	/* idle long: no credit for it */
	for (i = 0; i < 100; i++) {
		vgpu_sched_wake(&f->s, wake, f->now);
		after = vgpu_sched_preempt_after(&f->s, wake->vt, run,
						 SLICE_NS);
		if (!i) {
			/* caught up with the runner: a tie, the granularity */
			KUNIT_ASSERT_EQ(test, wake->vt, run->vt);
			KUNIT_ASSERT_EQ(test, after, gran);
		}
		KUNIT_ASSERT_GE(test, after, gran);
		vgpu_sched_charge(&f->s, run, after, f->now);
		busy += after;
		/* the runner goes idle in turn */
		vgpu_sched_sleep(&f->s, run, f->now);
		swap(run, wake);
		switches++;
	}
	KUNIT_EXPECT_LE(test, (u64)switches, div64_u64(busy, gran));
}

/*
 * The run queue is in wrap-safe (vt, seq) order: instances queued in a
 * scrambled order with vts on both sides of the u64 wrap come out of the
 * tree earliest first (ties to the older), and the pick takes the leftmost,
 * passing over one another engine runs.
 */
static void runq_order_across_wrap(struct kunit *test)
{
	/* queue order scrambled; in vt order: e4 e0 e2(=e3 by vt, older) e3 e1 */
	static const u64 vts[] = { U64_MAX - 5, 7, U64_MAX, U64_MAX, U64_MAX - 9 };
	static const unsigned int want[] = { 4, 0, 2, 3, 1 };
	struct vgpu_sched_ent *e = kunit_kcalloc(test, 5, sizeof(*e), GFP_KERNEL);
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	static const unsigned int order[] = { 1, 3, 4, 0, 2 };
	struct vgpu_worker other = {};
	struct vgpu_sched_ent *se;
	u64 limit, wake_at;
	struct rb_node *n;
	unsigned int i = 0;

	KUNIT_ASSERT_NOT_NULL(test, e);
	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 0, NULL, U64_MAX - 20);
	for (i = 0; i < 5; i++) {
		se = &e[order[i]];
		se->seq = order[i] + 1;
		se->weight = 1;
		se->vt = vts[order[i]];
		se->refill_ns = f->now;
		se->attached = true;
		se->runnable = true;
		list_add_tail(&se->node, &f->s.ents);
		vgpu_sched_enqueue(&f->s, se, f->now);
	}
	i = 0;
	for (n = rb_first_cached(&f->s.runq); n; n = rb_next(n), i++) {
		KUNIT_ASSERT_LT(test, i, 5U);
		KUNIT_EXPECT_PTR_EQ(test, rb_entry(n, struct vgpu_sched_ent, rb),
				    &e[want[i]]);
	}
	KUNIT_EXPECT_EQ(test, i, 5U);
	KUNIT_EXPECT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now, &limit,
						  &wake_at), &e[4]);
	e[4].on = &other;	/* another engine runs it */
	KUNIT_EXPECT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now, &limit,
						  &wake_at), &e[0]);
	e[4].on = NULL;
	/* charged past 7 (through the wrap), e4 moves behind e0 */
	vgpu_sched_charge(&f->s, &e[4], 13, f->now);	/* vt 13 * 1024 - 10 */
	KUNIT_EXPECT_PTR_EQ(test, vgpu_runq_first(&f->s), &e[0]);
	KUNIT_EXPECT_PTR_EQ(test,
			    rb_entry(rb_last(&f->s.runq.rb_root),
				     struct vgpu_sched_ent, rb), &e[4]);
}

/*
 * Over 3000 slices of three instances at weights 1, 3 and 5 (vts crossing
 * the wrap, on both sides of it in some picks), one capped at 20 %,
 * instances going idle and waking and waiting for their lock now and then
 * at random: the pick is always the instance a scan
 * of all of them in creation order finds (the smallest vt among the
 * runnable, within budget, not waiting for their lock, ties to the older),
 * and an instance out of budget is never picked.
 */
static void pick_matches_scan(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 3, 5 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	struct vgpu_sched_ent *se, *got, *want;
	unsigned int i, straddles = 0;
	u32 rnd = 12345;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 3, wt, U64_MAX - 50 * VT_SLICE);
	f->e[2].cap = 20;
	vgpu_sched_requeue(&f->s, f->now);
	for (i = 0; i < 3000; i++) {
		u64 limit, wake_at, rate;
		unsigned int wrap, op;

		rnd = rnd * 1103515245 + 12345;
		se = &f->e[(rnd >> 16) % 3];
		op = (rnd >> 8) % 32;
		if (op == 0 && se->runnable) {
			vgpu_sched_sleep(&f->s, se, f->now);
		} else if (op == 1 && se->runnable && !se->lockwait) {
			vgpu_sched_set_lockwait(&f->s, se, true, f->now);
		} else if (op < 10) {
			/* short episodes: all back, most of the time all race */
			list_for_each_entry(se, &f->s.ents, node) {
				if (!se->runnable)
					vgpu_sched_wake(&f->s, se, f->now);
				if (!se->lockwait)
					continue;
				vgpu_sched_lock_back(&f->s, se);
				vgpu_sched_set_lockwait(&f->s, se, false,
							f->now);
			}
		}
		got = vgpu_sched_pick(&f->s, &f->w, f->now, &limit, &wake_at);
		want = NULL;
		wrap = 0;
		list_for_each_entry(se, &f->s.ents, node) {
			if (!se->runnable || se->lockwait || se->throttled)
				continue;
			rate = vgpu_sched_rate(&f->s, se);
			if (rate && se->budget <= 0)
				continue;
			wrap |= se->vt >> 63 ? 2 : 1;
			if (!want || vgpu_vt_before(se->vt, want->vt))
				want = se;
		}
		straddles += wrap == 3;
		if (got != want) {
			KUNIT_FAIL(test, "slice %u: picked e%ld, a scan finds e%ld",
				   i, got ? (long)(got - f->e) : -1L,
				   want ? (long)(want - f->e) : -1L);
			return;
		}
		rate = got ? vgpu_sched_rate(&f->s, got) : 0;
		if (rate && got->budget <= 0) {
			KUNIT_FAIL(test, "slice %u: picked e%ld with budget %lld",
				   i, (long)(got - f->e), got->budget);
			return;
		}
		if (!got) {
			f->now = wake_at ? wake_at : f->now + SLICE_NS;
			continue;
		}
		f->now += limit;
		vgpu_sched_charge(&f->s, got, limit, f->now);
	}
	/* eligible vts were on both sides of the wrap in some picks */
	KUNIT_EXPECT_GT(test, straddles, 0U);
	/* the cap held: at most 20 % of the time, plus one bucket */
	KUNIT_EXPECT_LE(test, f->e[2].busy_ns,
			(f->now - 1000 * NSEC_PER_SEC) / 5 + 10 * NSEC_PER_MSEC);
	KUNIT_EXPECT_GT(test, f->e[2].busy_ns, 0ULL);
}

/*
 * A capped instance out of budget leaves the run queue for the throttled
 * one: not picked, the pick tells when its budget returns, and from then
 * it is eligible again, caught up with the others (no credit).
 */
static void throttled_off_runq(struct kunit *test)
{
	static const unsigned int wt[] = { 1, 1 };
	struct sched_fixture *f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	struct vgpu_sched_ent *a, *b;
	u64 limit, wake_at;

	KUNIT_ASSERT_NOT_NULL(test, f);
	fixture_init(f, 2, wt, U64_MAX - VT_SLICE);
	a = &f->e[0];
	b = &f->e[1];
	a->cap = 10;			/* 10 %: 100 ppm of each ns */
	a->budget = SLICE_NS;
	vgpu_sched_requeue(&f->s, f->now);
	KUNIT_ASSERT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now, &limit,
						  &wake_at), a);
	KUNIT_EXPECT_EQ(test, limit, (u64)SLICE_NS);
	f->now += SLICE_NS;
	vgpu_sched_charge(&f->s, a, SLICE_NS + 100, f->now);	/* budget -100 */
	KUNIT_EXPECT_EQ(test, a->queued, (u8)VGPU_Q_THROTTLED);
	KUNIT_EXPECT_TRUE(test, a->throttled);
	/* 101 ns of budget to earn at 10 %: back after 1010 ns */
	KUNIT_EXPECT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now, &limit,
						  &wake_at), b);
	KUNIT_EXPECT_EQ(test, wake_at, f->now + 1010);
	/* b runs 20 slices meanwhile: a gets no credit for them */
	f->now += 20 * SLICE_NS;
	vgpu_sched_charge(&f->s, b, 20 * SLICE_NS, f->now);
	KUNIT_EXPECT_PTR_EQ(test, vgpu_sched_pick(&f->s, &f->w, f->now, &limit,
						  &wake_at), a);
	KUNIT_EXPECT_EQ(test, a->queued, (u8)VGPU_Q_RUN);
	KUNIT_EXPECT_FALSE(test, a->throttled);
	KUNIT_EXPECT_EQ(test, a->vt, b->vt);
	KUNIT_EXPECT_EQ(test, wake_at, 0ULL);
	/* gone idle while throttled: off both queues, not throttled */
	f->now += limit;
	vgpu_sched_charge(&f->s, a, limit + 50, f->now);
	KUNIT_EXPECT_EQ(test, a->queued, (u8)VGPU_Q_THROTTLED);
	vgpu_sched_sleep(&f->s, a, f->now);
	KUNIT_EXPECT_EQ(test, a->queued, (u8)VGPU_Q_NONE);
	KUNIT_EXPECT_FALSE(test, a->throttled);
	KUNIT_EXPECT_TRUE(test, RB_EMPTY_ROOT(&f->s.throttleq.rb_root));
}

static struct kunit_case vgpu_sched_cases[] = {
	KUNIT_CASE(vt_compare_wraps),
	KUNIT_CASE(pick_across_wrap),
	KUNIT_CASE(shares_across_wrap),
	KUNIT_CASE(new_instance_after_wrap),
	KUNIT_CASE(long_idle_stays_in_reach),
	KUNIT_CASE(lock_back_bounded),
	KUNIT_CASE(lock_lead_kept_across_picks),
	KUNIT_CASE(preempt_after_exact),
	KUNIT_CASE(preempt_granularity),
	KUNIT_CASE(runq_order_across_wrap),
	KUNIT_CASE(pick_matches_scan),
	KUNIT_CASE(throttled_off_runq),
	{}
};

static struct kunit_suite vgpu_sched_suite = {
	.name = "vgpu_shim_sched",
	.test_cases = vgpu_sched_cases,
};
kunit_test_suite(vgpu_sched_suite);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("KUnit tests of vgpu_shim's scheduler and piece-size policies");
