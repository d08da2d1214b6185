// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: the engines of a parent and their time-slice scheduler
 * (docs/scheduler.md).
 *
 * Each parent runs `engines` worker kthreads over one runqueue: an rbtree
 * of its eligible instances (runnable, within budget, not waiting for their
 * lock) ordered by virtual time, next to an rbtree of the throttled ones
 * ordered by when their budget returns (vgpu_sched_policy.h). A worker
 * picks, among the eligible instances no other engine runs, the one with
 * the smallest virtual time (the leftmost: O(log N)), runs its ring chunk
 * by chunk (vgpu_engine_chunk(), under that instance's vg->lock) until the
 * slice or its budget is used up or the ring is idle, charges the engine
 * time, and picks again. With nothing eligible it sleeps, until a doorbell
 * or knob change wakes it or, when instances are throttled, until the
 * earliest budget turns positive.
 *
 * Wake-up preemption: a doorbell that makes an instance runnable while no
 * engine is idle may ask a running engine to end its slice early, at a
 * chunk boundary once the pick would prefer the waking instance and the
 * slice has run at least the granularity (vgpu_sched_preempt_check()).
 * The request is a number in the worker (preempt_after, written under the
 * sched lock, read by the engine between chunks); the engine itself ends
 * the slice and picks, as at any slice end: no new lock, and the doorbell
 * never touches the running instance.
 *
 * Locking: vgpu_sched.lock (a spinlock) protects the runqueue, every
 * vgpu_sched_ent, the knobs and the counters. It is the innermost lock:
 * taken inside vg->lock (a worker charging and picking at a slice end) and
 * inside vg->eng.lock (vgpu_sched_update()), never the other way round.
 * An engine takes vg->lock only with mutex_trylock(): if another task
 * holds it or waits for it, the instance waits for its lock (se->lockwait)
 * and the engine runs something else (vgpu_run()).
 *
 * Lifetime: a worker claims the instance it runs (se->on). Removal takes
 * the instance off the runqueue and waits until no engine has it claimed
 * (at most the rest of one chunk) before it is freed; so a worker drops
 * vg->lock first and releases the claim last, and touches nothing of the
 * instance after (vgpu_sched_release()).
 *
 * Times are ktime_get_ns(). A worker reads the clock once per chunk, and
 * passes that time on to the charge and the next pick.
 */
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/moduleparam.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include "vgpu.h"
#include "vgpu_sched_policy.h"

#define VGPU_SLICE_US_DEFAULT	1000
#define VGPU_SLICE_US_MIN	100
#define VGPU_SLICE_US_MAX	30000
#define VGPU_WATCHDOG_MS_DEFAULT 2000
#define VGPU_WATCHDOG_MS_MIN	10
#define VGPU_WATCHDOG_MS_MAX	60000
#define VGPU_TIMER_SLACK_NS	(5 * NSEC_PER_USEC)

static bool vgpu_preempt_default = true;
module_param_named(preempt, vgpu_preempt_default, bool, 0444);
MODULE_PARM_DESC(preempt,
		 "initial vgpu/preempt of each parent: wake-up preemption, 0 or 1 (default 1)");

/*
 * Test hooks, built only with VGPU_TEST_HOOKS (the rig's builds): a delay at
 * the end of a slice that hands the engine to another instance (it widens
 * the window in which a slice end races with the instance's removal), and
 * the virtual time new instances start at (to reach the u64 wrap-around).
 */
#ifdef VGPU_TEST_HOOKS
static unsigned int vgpu_test_slice_end_delay_us;
module_param_named(test_slice_end_delay_us, vgpu_test_slice_end_delay_us,
		   uint, 0644);
MODULE_PARM_DESC(test_slice_end_delay_us,
		 "test only: sleep this long at a slice end that leaves an instance");
static unsigned long long vgpu_test_vt_start;
module_param_named(test_vt_start, vgpu_test_vt_start, ullong, 0444);
MODULE_PARM_DESC(test_vt_start,
		 "test only: virtual time of the first instances (default 0)");

static void vgpu_test_slice_end_delay(void)
{
	unsigned int us = READ_ONCE(vgpu_test_slice_end_delay_us);

	if (us)
		fsleep(us);
}

static u64 vgpu_test_vt_floor(void)
{
	return vgpu_test_vt_start;
}

/*
 * The cost of the pick, for the benchmark: with test_pick_stats set, every
 * pick is timed and summed into test_pick_ns and test_picks (over all
 * parents, unlocked across parents: exact with one parent).
 */
static bool vgpu_test_pick_stats;
module_param_named(test_pick_stats, vgpu_test_pick_stats, bool, 0644);
MODULE_PARM_DESC(test_pick_stats, "test only: time every pick");
static unsigned long long vgpu_test_pick_ns, vgpu_test_picks;
module_param_named(test_pick_ns, vgpu_test_pick_ns, ullong, 0444);
MODULE_PARM_DESC(test_pick_ns, "test only: ns spent in picks (test_pick_stats)");
module_param_named(test_picks, vgpu_test_picks, ullong, 0444);
MODULE_PARM_DESC(test_picks, "test only: picks timed (test_pick_stats)");

static bool vgpu_test_pick_timed(void)
{
	return READ_ONCE(vgpu_test_pick_stats);
}

static void vgpu_test_pick_account(u64 ns)
{
	WRITE_ONCE(vgpu_test_pick_ns, vgpu_test_pick_ns + ns);
	WRITE_ONCE(vgpu_test_picks, vgpu_test_picks + 1);
}
#else
static void vgpu_test_slice_end_delay(void)
{
}

static u64 vgpu_test_vt_floor(void)
{
	return 0;
}

static bool vgpu_test_pick_timed(void)
{
	return false;
}

static void vgpu_test_pick_account(u64 ns)
{
}
#endif

/* vgpu_sched_pick(), timed for the benchmark (test hooks). Sched lock held. */
static struct vgpu_sched_ent *vgpu_pick(struct vgpu_sched *s,
					struct vgpu_worker *w, u64 now,
					u64 *limit, u64 *wake_at)
{
	struct vgpu_sched_ent *se;
	u64 t0;

	if (!vgpu_test_pick_timed())
		return vgpu_sched_pick(s, w, now, limit, wake_at);
	t0 = ktime_get_ns();
	se = vgpu_sched_pick(s, w, now, limit, wake_at);
	vgpu_test_pick_account(ktime_get_ns() - t0);
	return se;
}

static const char * const vgpu_policy_names[] = {
	[VGPU_POLICY_BEST_EFFORT] = "best_effort",
	[VGPU_POLICY_EQUAL_SHARE] = "equal_share",
	[VGPU_POLICY_FIXED_SHARE] = "fixed_share",
};

static struct vgpu_device *se_to_vgpu(struct vgpu_sched_ent *se)
{
	return container_of(se, struct vgpu_device, se);
}

unsigned int vgpu_sched_watchdog_ms(struct vgpu_device *vg)
{
	return READ_ONCE(vg->parent->sched.watchdog_ms);
}

/*
 * Wake idle workers: one (a ring became runnable) or all (knobs changed).
 * Whether one was woken.
 */
static bool vgpu_sched_kick(struct vgpu_sched *s, bool all)
{
	bool woken = false;
	unsigned int i;

	for (i = 0; i < s->nr_workers; i++) {
		struct vgpu_worker *w = &s->workers[i];

		if (!w->idle)
			continue;
		w->idle = false;
		wake_up_process(w->task);
		woken = true;
		if (!all)
			break;
	}
	return woken;
}

/*
 * Wake-up preemption (docs/scheduler.md). @se just became runnable and no
 * engine was idle. If it is eligible (within its budget), and its virtual
 * time comes before that of an instance an engine runs before that slice
 * ends (and after the granularity), ask the engine where that happens first
 * to end the slice then: the engine looks between chunks (vgpu_run()) and
 * picks again. Sched lock held.
 */
static void vgpu_sched_preempt_check(struct vgpu_sched *s,
				     struct vgpu_sched_ent *se)
{
	struct vgpu_worker *best = NULL;
	u64 after, best_after = 0;
	unsigned int i;

	/* throttled (capped or out of its share): it waits */
	if (!s->preempt || se->on || se->queued != VGPU_Q_RUN)
		return;
	for (i = 0; i < s->nr_workers; i++) {
		struct vgpu_worker *w = &s->workers[i];

		if (!w->cur || w->cur == se)
			continue;
		after = vgpu_sched_preempt_after(s, se->vt, w->cur, w->limit);
		if (after && (!best || after < best_after)) {
			best = w;
			best_after = after;
		}
	}
	if (best && (!best->preempt_after || best_after < best->preempt_after))
		WRITE_ONCE(best->preempt_after, best_after);
}

/* ---- the engine workers ---- */

/*
 * Claim @se for engine @w for a slice of at most @limit ns (sched lock
 * held); @se may be the one @w has. A new slice: no preemption asked yet.
 */
static void vgpu_sched_claim(struct vgpu_sched *s, struct vgpu_worker *w,
			     struct vgpu_sched_ent *se, u64 limit)
{
	se->on = w;
	se->slices++;
	if (w->last_seq && w->last_seq != se->seq)
		s->switches++;
	w->last_seq = se->seq;
	w->cur = se;
	w->limit = limit;
	WRITE_ONCE(w->preempt_after, 0);
}

/*
 * Engine @w lets go of @se, which it claimed (vg->lock not held). Once the
 * sched lock is dropped here, vgpu_sched_detach() may return and the
 * instance be freed: this is the engine's last access to it.
 */
static void vgpu_sched_release(struct vgpu_sched *s, struct vgpu_worker *w,
			       struct vgpu_sched_ent *se)
{
	spin_lock(&s->lock);
	se->on = NULL;
	if (w->cur == se)
		w->cur = NULL;
	if (se->detached)
		wake_up_all(&s->drain_wq);
	else if (se->runnable && !se->lockwait && !se->throttled)
		vgpu_sched_kick(s, false);	/* another engine may run it */
	spin_unlock(&s->lock);
}

/*
 * Take the lock of @se's instance for its engine without waiting. If
 * another task holds it, mark @se as waiting for its lock, so that no
 * engine picks it until that task's vgpu_unlock() hands it back (see
 * vgpu_sched_unlocked()), and return false.
 */
static bool vgpu_engine_trylock(struct vgpu_sched *s,
				struct vgpu_sched_ent *se, struct vgpu_device *vg)
{
	if (mutex_trylock(&vg->lock))
		return true;
	spin_lock(&s->lock);
	vgpu_sched_set_lockwait(s, se, true, 0);
	spin_unlock(&s->lock);
	/*
	 * The holder may have unlocked before the mark was there: look
	 * again. With the barrier in vgpu_sched_unlocked(), either the
	 * holder sees the mark or this sees the lock free.
	 */
	smp_mb();
	if (!mutex_trylock(&vg->lock))
		return false;
	spin_lock(&s->lock);
	vgpu_sched_set_lockwait(s, se, false, ktime_get_ns());
	spin_unlock(&s->lock);
	return true;
}

/*
 * End @se's slice on @w at time @t: charge it @used ns of engine time;
 * with @yield, it waits for its lock (tasks are waiting for it); with
 * @pick (and unless @w is stopping), choose what @w runs next: @se again,
 * or another instance, claimed for @w with its limit in *@limit, or NULL.
 * @preempt: the slice ends early for a waking instance (counted if another
 * instance wins the pick).
 */
static struct vgpu_sched_ent *vgpu_slice_end(struct vgpu_worker *w,
					     struct vgpu_sched_ent *se,
					     u64 used, u64 t, bool yield,
					     bool pick, bool preempt,
					     u64 *limit)
{
	struct vgpu_sched *s = &w->parent->sched;
	struct vgpu_sched_ent *next = NULL;
	u64 wake_at;

	spin_lock(&s->lock);
	vgpu_sched_charge(s, se, used, t);
	if (yield)
		vgpu_sched_set_lockwait(s, se, true, t);
	if (pick && !kthread_should_stop()) {
		next = vgpu_pick(s, w, t, limit, &wake_at);
		if (next)
			vgpu_sched_claim(s, w, next, *limit);
		if (preempt && next && next != se) {
			s->preemptions++;
			next->preemptions++;
		}
	}
	spin_unlock(&s->lock);
	return next;
}

/*
 * Run @se, claimed for @w, from time *@now for *@limit ns of engine time,
 * slice after slice while it keeps winning the pick; return the next
 * instance, already claimed for @w with its limit in *@limit, or NULL.
 * *@now is the time at the end.
 *
 * The engine never waits for an instance's lock (a task holding it could
 * otherwise stall the engine for everyone, charging nobody): if the lock
 * is taken, or a vgpu_lock() caller is waiting for it after a chunk, the
 * instance waits instead, uncharged, until the lock is free again (see
 * vgpu_sched_unlocked()), and the engine moves on.
 *
 * A waking instance that should run before @se (vgpu_sched_preempt_check())
 * sets w->preempt_after: once @se has run that much of its slice, the slice
 * ends at the next chunk boundary and the engine picks again.
 *
 * Engine time is the sum of chunk times: the clock is read once per chunk,
 * a chunk's end is the next one's start, and the first chunk of a slice
 * starts once the engine has the lock; time off the CPU between chunks is
 * not counted. vg->lock is held from chunk to chunk and dropped when the
 * engine gives up the CPU or leaves the instance; it is always dropped
 * before the instance is released, so the instance outlives every access
 * (vgpu_sched_detach() waits for the release).
 */
static struct vgpu_sched_ent *vgpu_run(struct vgpu_worker *w,
				       struct vgpu_sched_ent *se, u64 *limit,
				       u64 *now)
{
	struct vgpu_device *vg = se_to_vgpu(se);
	struct vgpu_sched *s = &w->parent->sched;
	struct vgpu_sched_ent *next = NULL;
	u64 used = 0, t = *now, end, pre;
	bool more, yield, preempt;

	if (!vgpu_engine_trylock(s, se, vg))
		goto release;
	/* engine time starts with the lock in hand (one clock read a slice) */
	t = ktime_get_ns();
	for (;;) {
		more = vgpu_engine_chunk(vg, w, t, &end);
		used += end - t;
		t = end;
		/* tasks waiting for the lock go first; the engine moves on */
		yield = vgpu_lock_waiters(vg) > 0;
		/* a waking instance's turn (docs/scheduler.md) */
		pre = READ_ONCE(w->preempt_after);
		preempt = pre && used >= pre && more && !yield &&
			  used < *limit;
		if (!more || yield || used >= *limit || preempt ||
		    READ_ONCE(se->detached) || kthread_should_stop()) {
			next = vgpu_slice_end(w, se, used, t, yield, true,
					      preempt, limit);
			used = 0;
			if (next != se)
				break;
		}
		if (!need_resched())
			continue;
		/* give up the CPU between chunks, without the lock */
		mutex_unlock(&vg->lock);
		cond_resched();
		t = ktime_get_ns();
		if (!vgpu_engine_trylock(s, se, vg)) {
			/* taken meanwhile: charge what ran, pick afresh */
			vgpu_slice_end(w, se, used, t, false, false, false,
				       limit);
			goto release;
		}
	}
	vgpu_test_slice_end_delay();
	mutex_unlock(&vg->lock);
release:
	vgpu_sched_release(s, w, se);	/* from here on @vg may be freed */
	*now = t;
	return next;
}

static int vgpu_worker_fn(void *data)
{
	struct vgpu_worker *w = data;
	struct vgpu_sched *s = &w->parent->sched;
	struct vgpu_sched_ent *se = NULL;
	u64 now = ktime_get_ns(), limit, wake_at;

	while (!kthread_should_stop()) {
		if (se) {
			se = vgpu_run(w, se, &limit, &now);
			if (cond_resched())
				now = ktime_get_ns();
			continue;
		}

		spin_lock(&s->lock);
		se = vgpu_pick(s, w, now, &limit, &wake_at);
		if (se) {
			vgpu_sched_claim(s, w, se, limit);
			spin_unlock(&s->lock);
			continue;
		}
		/*
		 * Nothing eligible: sleep until kicked or a budget returns.
		 * The state is set under the lock a kick takes, so a kick
		 * after this point makes schedule() return at once.
		 */
		set_current_state(TASK_IDLE);
		w->idle = true;
		w->sleeping = true;
		w->idle_since = now;
		spin_unlock(&s->lock);
		if (!kthread_should_stop()) {
			if (wake_at) {
				ktime_t t = ns_to_ktime(wake_at);

				schedule_hrtimeout_range(&t, VGPU_TIMER_SLACK_NS,
							 HRTIMER_MODE_ABS);
			} else {
				schedule();
			}
		}
		__set_current_state(TASK_RUNNING);
		now = ktime_get_ns();
		spin_lock(&s->lock);
		s->idle_ns += now - w->idle_since;
		w->idle = false;
		w->sleeping = false;
		spin_unlock(&s->lock);
	}
	/* stopped with an instance claimed: give it back */
	if (se)
		vgpu_sched_release(s, w, se);
	return 0;
}

int vgpu_sched_init(struct vgpu_parent *parent)
{
	struct vgpu_sched *s = &parent->sched;
	unsigned int i;
	int ret;

	spin_lock_init(&s->lock);
	INIT_LIST_HEAD(&s->ents);
	s->runq = RB_ROOT_CACHED;
	s->throttleq = RB_ROOT_CACHED;
	init_waitqueue_head(&s->drain_wq);
	s->policy = VGPU_POLICY_BEST_EFFORT;
	s->slice_us = VGPU_SLICE_US_DEFAULT;
	s->watchdog_ms = VGPU_WATCHDOG_MS_DEFAULT;
	s->preempt = vgpu_preempt_default;
	s->vt_floor = vgpu_test_vt_floor();
	s->sweep_floor = s->vt_floor;
	s->nr_workers = 0;
	atomic64_set(&s->macs, 0);

	for (i = 0; i < vgpu_nr_engines; i++) {
		struct vgpu_worker *w = &s->workers[i];
		struct task_struct *task;

		w->parent = parent;
		w->index = i;
		vgpu_worker_budget_init(w);
		task = kthread_run(vgpu_worker_fn, w, "vgpu%u/e%u",
				   parent->index, i);
		if (IS_ERR(task)) {
			ret = PTR_ERR(task);
			goto err;
		}
		w->task = task;
		s->nr_workers = i + 1;
	}
	return 0;

err:
	vgpu_sched_fini(parent);
	return ret;
}

/* Stop the workers (no instance exists any more). */
void vgpu_sched_fini(struct vgpu_parent *parent)
{
	struct vgpu_sched *s = &parent->sched;

	WARN_ON(!list_empty(&s->ents));
	while (s->nr_workers) {
		struct vgpu_worker *w = &s->workers[--s->nr_workers];

		kthread_stop(w->task);
		w->task = NULL;
	}
}

/* ---- instances ---- */

void vgpu_sched_attach(struct vgpu_device *vg)
{
	struct vgpu_sched *s = &vg->parent->sched;
	struct vgpu_sched_ent *se = &vg->se;
	u64 now;

	memset(se, 0, sizeof(*se));
	RB_CLEAR_NODE(&se->rb);
	spin_lock(&s->lock);
	now = ktime_get_ns();
	/* budgets accrued so far count at the old fixed shares */
	vgpu_sched_refill_all(s, now);
	se->seq = ++s->next_seq;
	se->weight = vg->weight;
	se->cap = vg->cap;
	se->refill_ns = now;
	se->vt = s->vt_floor;
	list_add_tail(&se->node, &s->ents);
	s->sum_weight += se->weight;
	se->attached = true;
	vgpu_sched_requeue(s, now);
	vgpu_sched_kick(s, true);	/* fixed shares changed */
	spin_unlock(&s->lock);
}

static bool vgpu_sched_released(struct vgpu_sched *s,
				struct vgpu_sched_ent *se)
{
	bool released;

	spin_lock(&s->lock);
	released = !se->on;
	spin_unlock(&s->lock);
	return released;
}

/*
 * Take @vg off the runqueue for good and wait until no engine runs it (at
 * most the rest of one chunk). Called on release, before its pages go.
 */
void vgpu_sched_detach(struct vgpu_device *vg)
{
	struct vgpu_sched *s = &vg->parent->sched;
	struct vgpu_sched_ent *se = &vg->se;
	u64 now;

	spin_lock(&s->lock);
	if (!se->attached) {
		spin_unlock(&s->lock);
		return;
	}
	now = ktime_get_ns();
	vgpu_sched_refill_all(s, now);
	se->detached = true;
	vgpu_sched_sleep(s, se, now);
	list_del(&se->node);
	s->sum_weight -= se->weight;
	vgpu_sched_requeue(s, now);
	vgpu_sched_kick(s, true);	/* fixed shares changed */
	spin_unlock(&s->lock);

	wait_event(s->drain_wq, vgpu_sched_released(s, se));
	se->attached = false;
}

/*
 * The instance's ring may have changed state (doorbell, enable, reset,
 * error, idle): make it runnable or not. vg->eng.lock held.
 */
void vgpu_sched_update(struct vgpu_device *vg)
{
	struct vgpu_sched *s = &vg->parent->sched;
	struct vgpu_sched_ent *se = &vg->se;
	bool want = vgpu_engine_has_work(vg);

	spin_lock(&s->lock);
	if (!se->attached || se->detached || want == se->runnable)
		goto out;
	if (want) {
		/* no credit for idling: catch up with the eligible ones */
		vgpu_sched_wake(s, se, ktime_get_ns());
		if (!se->lockwait && !vgpu_sched_kick(s, false))
			vgpu_sched_preempt_check(s, se);
	} else {
		vgpu_sched_sleep(s, se, ktime_get_ns());
	}
out:
	spin_unlock(&s->lock);
}

/*
 * A new weight or cap for @vg, effective from the next pick. The knobs are
 * written under the sched lock and read without a lock (sysfs, BAR2).
 */
static void vgpu_sched_set_knob(struct vgpu_device *vg, unsigned int *knob,
				unsigned int val)
{
	struct vgpu_sched *s = &vg->parent->sched;
	struct vgpu_sched_ent *se = &vg->se;
	u64 now;

	spin_lock(&s->lock);
	now = ktime_get_ns();
	if (se->attached && !se->detached) {
		/* budgets accrued so far at the old rates (fixed shares) */
		vgpu_sched_refill_all(s, now);
	}
	WRITE_ONCE(*knob, val);
	if (se->attached && !se->detached) {
		s->sum_weight = s->sum_weight - se->weight + vg->weight;
		se->weight = vg->weight;
		se->cap = vg->cap;
		vgpu_sched_requeue(s, now);
		vgpu_sched_kick(s, true);
	}
	spin_unlock(&s->lock);
}

void vgpu_sched_set_weight(struct vgpu_device *vg, unsigned int weight)
{
	vgpu_sched_set_knob(vg, &vg->weight, weight);
}

void vgpu_sched_set_cap(struct vgpu_device *vg, unsigned int cap)
{
	vgpu_sched_set_knob(vg, &vg->cap, cap);
}

/*
 * Called by vgpu_unlock() after it dropped @vg->lock. An engine that found
 * the lock taken, or tasks waiting for it, left the instance marked
 * (se->lockwait) instead of waiting: the last of those tasks hands it back
 * here, making it eligible again and waking an idle engine or, with none
 * idle, weighing it for wake-up preemption as a doorbell would (it may have
 * lost its turn to the lock holder, e.g. a guest reading its registers).
 */
void vgpu_sched_unlocked(struct vgpu_device *vg)
{
	struct vgpu_sched *s = &vg->parent->sched;
	struct vgpu_sched_ent *se = &vg->se;

	/* the unlock before reading the mark: see vgpu_engine_trylock() */
	smp_mb();
	if (!READ_ONCE(se->lockwait) || vgpu_lock_waiters(vg) > 0)
		return;
	spin_lock(&s->lock);
	if (se->lockwait) {
		WRITE_ONCE(se->lockwait, false);
		if (se->attached && !se->detached && se->runnable) {
			vgpu_sched_lock_back(s, se);
			if (se->queued == VGPU_Q_NONE)
				vgpu_sched_enqueue(s, se, ktime_get_ns());
			/* it lost its turn to the lock holder: as a wake-up */
			if (!vgpu_sched_kick(s, false))
				vgpu_sched_preempt_check(s, se);
		}
	}
	spin_unlock(&s->lock);
}

/* ---- parent sysfs: /sys/class/mdev_bus/vgpu_shimN/vgpu/ ---- */

static struct vgpu_sched *dev_to_sched(struct device *dev)
{
	struct vgpu_parent *parent = dev_get_drvdata(dev);

	return &parent->sched;
}

static ssize_t policy_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct vgpu_sched *s = dev_to_sched(dev);

	return sysfs_emit(buf, "%s\n", vgpu_policy_names[READ_ONCE(s->policy)]);
}

static ssize_t policy_store(struct device *dev, struct device_attribute *attr,
			    const char *buf, size_t count)
{
	struct vgpu_sched *s = dev_to_sched(dev);
	int i;

	/* exactly a name, optionally with one trailing newline */
	if (!count || strnlen(buf, count) != count)
		return -EINVAL;
	i = sysfs_match_string(vgpu_policy_names, buf);
	if (i < 0)
		return -EINVAL;

	spin_lock(&s->lock);
	if (s->policy != i) {
		u64 now = ktime_get_ns();

		/* budgets accrued so far count at the old rates */
		vgpu_sched_refill_all(s, now);
		s->policy = i;
		vgpu_sched_requeue(s, now);
		vgpu_sched_kick(s, true);
	}
	spin_unlock(&s->lock);
	return count;
}

static ssize_t slice_us_show(struct device *dev,
			     struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", READ_ONCE(dev_to_sched(dev)->slice_us));
}

static ssize_t slice_us_store(struct device *dev,
			      struct device_attribute *attr, const char *buf,
			      size_t count)
{
	struct vgpu_sched *s = dev_to_sched(dev);
	unsigned int val;
	int ret;

	ret = vgpu_parse_uint(buf, count, VGPU_SLICE_US_MIN,
			      VGPU_SLICE_US_MAX, &val);
	if (ret)
		return ret;
	spin_lock(&s->lock);
	s->slice_us = val;
	vgpu_sched_kick(s, true);
	spin_unlock(&s->lock);
	return count;
}

static ssize_t watchdog_ms_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n",
			  READ_ONCE(dev_to_sched(dev)->watchdog_ms));
}

static ssize_t watchdog_ms_store(struct device *dev,
				 struct device_attribute *attr,
				 const char *buf, size_t count)
{
	struct vgpu_sched *s = dev_to_sched(dev);
	unsigned int val;
	int ret;

	ret = vgpu_parse_uint(buf, count, VGPU_WATCHDOG_MS_MIN,
			      VGPU_WATCHDOG_MS_MAX, &val);
	if (ret)
		return ret;
	WRITE_ONCE(s->watchdog_ms, val);
	return count;
}

static ssize_t preempt_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%u\n", READ_ONCE(dev_to_sched(dev)->preempt));
}

static ssize_t preempt_store(struct device *dev, struct device_attribute *attr,
			     const char *buf, size_t count)
{
	struct vgpu_sched *s = dev_to_sched(dev);
	unsigned int val, i;
	int ret;

	ret = vgpu_parse_uint(buf, count, 0, 1, &val);
	if (ret)
		return ret;
	spin_lock(&s->lock);
	WRITE_ONCE(s->preempt, val);
	if (!val)	/* preemptions already asked for are withdrawn */
		for (i = 0; i < s->nr_workers; i++)
			WRITE_ONCE(s->workers[i].preempt_after, 0);
	spin_unlock(&s->lock);
	return count;
}

static ssize_t engines_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%u\n", dev_to_sched(dev)->nr_workers);
}

/* Which parent counter to show. */
enum {
	VGPU_PSTAT_BUSY,
	VGPU_PSTAT_IDLE,
	VGPU_PSTAT_SWITCHES,
	VGPU_PSTAT_MACS,
	VGPU_PSTAT_PREEMPTIONS,
};

static ssize_t vgpu_parent_stat_show(struct device *dev, char *buf, int which)
{
	struct vgpu_sched *s = dev_to_sched(dev);
	unsigned int i;
	u64 val, now;

	spin_lock(&s->lock);
	switch (which) {
	case VGPU_PSTAT_BUSY:
		val = s->busy_ns;
		break;
	case VGPU_PSTAT_IDLE:
		/* include the idle periods in progress: never goes back */
		now = ktime_get_ns();
		val = s->idle_ns;
		for (i = 0; i < s->nr_workers; i++)
			if (s->workers[i].sleeping)
				val += now - s->workers[i].idle_since;
		break;
	case VGPU_PSTAT_MACS:
		val = atomic64_read(&s->macs);
		break;
	case VGPU_PSTAT_PREEMPTIONS:
		val = s->preemptions;
		break;
	default:
		val = s->switches;
		break;
	}
	spin_unlock(&s->lock);
	return sysfs_emit(buf, "%llu\n", val);
}

static ssize_t parent_busy_ns_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	return vgpu_parent_stat_show(dev, buf, VGPU_PSTAT_BUSY);
}

static ssize_t parent_idle_ns_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	return vgpu_parent_stat_show(dev, buf, VGPU_PSTAT_IDLE);
}

static ssize_t parent_switches_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	return vgpu_parent_stat_show(dev, buf, VGPU_PSTAT_SWITCHES);
}

static ssize_t parent_preemptions_show(struct device *dev,
				       struct device_attribute *attr,
				       char *buf)
{
	return vgpu_parent_stat_show(dev, buf, VGPU_PSTAT_PREEMPTIONS);
}

static ssize_t parent_macs_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return vgpu_parent_stat_show(dev, buf, VGPU_PSTAT_MACS);
}

struct device_attribute vgpu_attr_policy = __ATTR_RW(policy);
struct device_attribute vgpu_attr_slice_us = __ATTR_RW(slice_us);
struct device_attribute vgpu_attr_watchdog_ms = __ATTR_RW(watchdog_ms);
struct device_attribute vgpu_attr_preempt = __ATTR_RW(preempt);
struct device_attribute vgpu_attr_engines = __ATTR_RO(engines);
struct device_attribute vgpu_attr_parent_busy_ns =
	__ATTR(busy_ns, 0444, parent_busy_ns_show, NULL);
struct device_attribute vgpu_attr_parent_idle_ns =
	__ATTR(idle_ns, 0444, parent_idle_ns_show, NULL);
struct device_attribute vgpu_attr_parent_switches =
	__ATTR(switches, 0444, parent_switches_show, NULL);
struct device_attribute vgpu_attr_parent_preemptions =
	__ATTR(preemptions, 0444, parent_preemptions_show, NULL);
struct device_attribute vgpu_attr_parent_macs =
	__ATTR(macs, 0444, parent_macs_show, NULL);

/* ---- instance sysfs: /sys/bus/mdev/devices/<uuid>/vgpu/ ---- */

enum {
	VGPU_ISTAT_BUSY,
	VGPU_ISTAT_SLICES,
	VGPU_ISTAT_THROTTLED,
	VGPU_ISTAT_JOBS,
	VGPU_ISTAT_FAILED,
	VGPU_ISTAT_DEPTH,
	VGPU_ISTAT_PREEMPTIONS,
};

static ssize_t vgpu_inst_stat_show(struct device *dev, char *buf, int which)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);
	struct vgpu_sched *s = &vg->parent->sched;
	struct vgpu_sched_ent *se = &vg->se;
	u64 val, jobs, failed, depth;

	switch (which) {
	case VGPU_ISTAT_JOBS:
	case VGPU_ISTAT_FAILED:
	case VGPU_ISTAT_DEPTH:
		vgpu_engine_counters(vg, &jobs, &failed, &depth);
		if (which == VGPU_ISTAT_JOBS)
			val = jobs;
		else if (which == VGPU_ISTAT_FAILED)
			val = failed;
		else
			val = depth;
		break;
	default:
		spin_lock(&s->lock);
		if (which == VGPU_ISTAT_BUSY)
			val = se->busy_ns;
		else if (which == VGPU_ISTAT_SLICES)
			val = se->slices;
		else if (which == VGPU_ISTAT_PREEMPTIONS)
			val = se->preemptions;
		else
			val = vgpu_sched_throttled_ns(s, se, ktime_get_ns());
		spin_unlock(&s->lock);
		break;
	}
	return sysfs_emit(buf, "%llu\n", val);
}

static ssize_t busy_ns_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return vgpu_inst_stat_show(dev, buf, VGPU_ISTAT_BUSY);
}

static ssize_t slices_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	return vgpu_inst_stat_show(dev, buf, VGPU_ISTAT_SLICES);
}

static ssize_t throttled_ns_show(struct device *dev,
				 struct device_attribute *attr, char *buf)
{
	return vgpu_inst_stat_show(dev, buf, VGPU_ISTAT_THROTTLED);
}

static ssize_t jobs_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	return vgpu_inst_stat_show(dev, buf, VGPU_ISTAT_JOBS);
}

static ssize_t cmds_failed_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return vgpu_inst_stat_show(dev, buf, VGPU_ISTAT_FAILED);
}

static ssize_t queue_depth_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return vgpu_inst_stat_show(dev, buf, VGPU_ISTAT_DEPTH);
}

static ssize_t preemptions_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return vgpu_inst_stat_show(dev, buf, VGPU_ISTAT_PREEMPTIONS);
}

struct device_attribute vgpu_attr_busy_ns = __ATTR_RO(busy_ns);
struct device_attribute vgpu_attr_slices = __ATTR_RO(slices);
struct device_attribute vgpu_attr_throttled_ns = __ATTR_RO(throttled_ns);
struct device_attribute vgpu_attr_jobs = __ATTR_RO(jobs);
struct device_attribute vgpu_attr_cmds_failed = __ATTR_RO(cmds_failed);
struct device_attribute vgpu_attr_queue_depth = __ATTR_RO(queue_depth);
struct device_attribute vgpu_attr_preemptions = __ATTR_RO(preemptions);
