// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: the external executor (docs/executor.md, "External mode").
 *
 * In `external` mode a parent's engines still fetch, validate, schedule
 * and complete every command; the bytes a command moves are computed by a
 * host daemon, vgpu-executor, piece by piece (vgpu_engine.c decides the
 * pieces). This file is the daemon's side of it: the per-parent device
 * /dev/vgpu-exec/<parent>, its shared-memory queue (vgpu_exec_abi.h), the
 * instances' VRAM mapped into the daemon, and the wait of an engine for
 * its piece.
 *
 * An engine hands one piece at a time and waits for it (vgpu_exec_run(),
 * vg->lock held, as for a chunk on the CPU): the piece is its slot; the
 * engine posts it to the connected daemon, and posts it again, unchanged,
 * to the next daemon if that one goes away first (pieces are idempotent).
 * It gives up after the time it is allowed to wait (the watchdog's).
 *
 * Locking: exec.lock (mutex) protects the executor ids and (dis)connecting,
 * and is held by the daemon's VRAM faults, so nothing holding it may wait
 * for an engine (an engine waiting for the daemon would wait for the
 * fault). exec.qlock (spinlock) protects the queue, the slots and the
 * counters; it nests inside vg->lock and exec.lock.
 *
 * The daemon is not trusted with anything but the bytes of the VRAM it
 * was handed: its indices are clamped, its completions matched by
 * sequence number to a piece in flight (anything else is counted in
 * executor_errors and dropped), and its mappings of an instance are zapped
 * at the instance's last close, before the pages are freed.
 */
#include <linux/fs.h>
#include <linux/kthread.h>
#include <linux/log2.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "vgpu.h"

#define VGPU_EXEC_VRAM_PGSHIFT	(VGPU_EXEC_VRAM_SHIFT - PAGE_SHIFT)
#define VGPU_EXEC_VRAM_PGMASK	((1UL << VGPU_EXEC_VRAM_PGSHIFT) - 1)
/* an engine waiting for its piece looks at the clock this often */
#define VGPU_EXEC_POLL		msecs_to_jiffies(10)

static char *vgpu_exec_param = "cpu";
module_param_named(executor, vgpu_exec_param, charp, 0444);
MODULE_PARM_DESC(executor,
		 "executor of every parent at load: cpu (default) or external (docs/executor.md)");
#ifdef VGPU_TEST_HOOKS
/* test hook (the rig's builds): reach the last executor id */
static unsigned int vgpu_test_exec_id_start;
module_param_named(test_exec_id_start, vgpu_test_exec_id_start, uint, 0444);
MODULE_PARM_DESC(test_exec_id_start,
		 "test only: executor ids already used at load (default 0)");
#else
#define vgpu_test_exec_id_start	0U
#endif

/* One open of the device: the connected daemon. */
struct vgpu_exec_conn {
	struct vgpu_exec *x;
	struct file *file;
	struct vgpu_exec_header *hdr;	/* the shared queue (vmalloc_user) */
	struct page *scratch;		/* behind mappings of closed instances */
	u64 epoch;
	u32 sq_tail;			/* the kernel's own copies */
	u32 cq_head;
};

static struct vgpu_parent *exec_parent(struct vgpu_exec *x)
{
	return container_of(x, struct vgpu_parent, exec);
}

static struct vgpu_exec_sqe *exec_sqe(struct vgpu_exec_conn *c, u32 i)
{
	return (void *)c->hdr + VGPU_EXEC_SQ_OFF +
	       (i & (VGPU_EXEC_SQ_ENTRIES - 1)) * VGPU_EXEC_SQE_SIZE;
}

static struct vgpu_exec_cqe *exec_cqe(struct vgpu_exec_conn *c, u32 i)
{
	return (void *)c->hdr + VGPU_EXEC_CQ_OFF +
	       (i & (VGPU_EXEC_CQ_ENTRIES - 1)) * VGPU_EXEC_CQE_SIZE;
}

static int exec_parse(const char *s, bool *external)
{
	if (sysfs_streq(s, "cpu"))
		*external = false;
	else if (sysfs_streq(s, "external"))
		*external = true;
	else
		return -EINVAL;
	return 0;
}

int vgpu_exec_param_check(void)
{
	bool ext;

	if (exec_parse(vgpu_exec_param, &ext)) {
		pr_err("invalid executor=%s (must be cpu or external)\n",
		       vgpu_exec_param);
		return -EINVAL;
	}
	return 0;
}

/*
 * Post @sqe to the connected daemon (qlock held). False if the ring is
 * full, or the daemon's sq_head is nonsense (then it gets nothing more).
 */
static bool exec_post(struct vgpu_exec *x, const struct vgpu_exec_sqe *sqe)
{
	struct vgpu_exec_conn *c = x->conn;
	u32 head, used;

	lockdep_assert_held(&x->qlock);
	head = le32_to_cpu(READ_ONCE(c->hdr->sq_head));
	used = c->sq_tail - head;
	if (used >= VGPU_EXEC_SQ_ENTRIES) {
		if (used > VGPU_EXEC_SQ_ENTRIES)
			x->errors++;
		return false;
	}
	memcpy(exec_sqe(c, c->sq_tail), sqe, sizeof(*sqe));
	c->sq_tail++;
	/* the entry before the index that publishes it */
	smp_store_release(&c->hdr->sq_tail, cpu_to_le32(c->sq_tail));
	wake_up_interruptible(&x->poll_wq);
	return true;
}

/* The piece @w waits for is done, or should go to a new daemon. */
static bool exec_slot_wake(struct vgpu_exec *x, struct vgpu_exec_slot *sl)
{
	bool ret;

	spin_lock(&x->qlock);
	ret = sl->done || (x->conn && sl->epoch != x->conn->epoch);
	spin_unlock(&x->qlock);
	return ret;
}

/*
 * Hand @sqe (a piece of @vg's command in flight; vg->lock held) to the
 * daemon and wait for it, at most @wait_ns. Returns 0 with the
 * completion's value in *@value and the daemon's time for it in
 * *@work_ns (0: not reported), -EIO if the executor refused or failed
 * it, -ETIMEDOUT if it did not complete in time (no daemon, or a hung
 * one: the piece is dropped), -EINTR if the engine stops or the instance
 * goes away meanwhile, -EAGAIN if no daemon is there and a task waits for
 * vg->lock.
 */
int vgpu_exec_run(struct vgpu_worker *w, struct vgpu_device *vg,
		  const struct vgpu_exec_sqe *sqe, u64 wait_ns, u64 *value,
		  u64 *work_ns)
{
	struct vgpu_exec *x = &vg->parent->exec;
	struct vgpu_exec_slot *sl = &w->xslot;
	u64 deadline = ktime_get_ns() + wait_ns;
	int ret;

	spin_lock(&x->qlock);
	sl->sqe = *sqe;
	sl->seq = ++x->next_seq;
	sl->sqe.seq = cpu_to_le64(sl->seq);
	sl->sqe.kind = cpu_to_le32(VGPU_EXEC_PIECE);
	sl->sqe.id = cpu_to_le32(vg->exec_id);
	sl->sqe.vram_size = cpu_to_le64(vg->vram_size);
	sl->epoch = 0;
	sl->done = false;
	spin_unlock(&x->qlock);

	for (;;) {
		u64 now;

		spin_lock(&x->qlock);
		if (sl->done) {
			ret = sl->status == VGPU_EXEC_OK ? 0 : -EIO;
			*value = sl->value;
			*work_ns = sl->work_ns;
			sl->seq = 0;
			spin_unlock(&x->qlock);
			return ret;
		}
		if (x->conn && sl->epoch != x->conn->epoch) {
			u64 was = sl->epoch;

			/* the daemon may map @vg's VRAM from now on */
			WRITE_ONCE(vg->exec_epoch, x->conn->epoch);
			if (exec_post(x, &sl->sqe)) {
				sl->epoch = x->conn->epoch;
				if (was)
					x->requeues++;
				else
					x->handoffs++;
			}
		}
		spin_unlock(&x->qlock);

		now = ktime_get_ns();
		if (now >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		if (kthread_should_stop() || READ_ONCE(vg->se.detached)) {
			ret = -EINTR;
			break;
		}
		/*
		 * No daemon, and tasks wait for the instance's lock (a reset,
		 * a close): let them in rather than wait for a daemon.
		 */
		if (!READ_ONCE(x->conn) && vgpu_lock_waiters(vg) > 0) {
			ret = -EAGAIN;
			break;
		}
		wait_event_timeout(x->done_wq, exec_slot_wake(x, sl),
				   min_t(unsigned long, VGPU_EXEC_POLL,
					 nsecs_to_jiffies(deadline - now) + 1));
	}
	/* dropped: a late completion matches nothing */
	spin_lock(&x->qlock);
	sl->seq = 0;
	spin_unlock(&x->qlock);
	return ret;
}

/* ---- instances: executor ids ---- */

/*
 * First open of @vg: a new executor id (never reused while the module is
 * loaded), under which the daemon maps its VRAM. After VGPU_EXEC_ID_MAX
 * first opens of a parent's instances, opens fail (-ENOSPC) until the
 * module is reloaded: an id may not come back while a daemon could still
 * hold a mapping under it.
 */
int vgpu_exec_open_instance(struct vgpu_device *vg)
{
	struct vgpu_exec *x = &vg->parent->exec;
	int ret;

	mutex_lock(&x->lock);
	if (x->next_id >= VGPU_EXEC_ID_MAX) {
		ret = -ENOSPC;
		goto out;
	}
	ret = xa_err(xa_store(&x->ids, x->next_id + 1, vg, GFP_KERNEL));
	if (!ret) {
		vg->exec_id = ++x->next_id;
		WRITE_ONCE(vg->exec_epoch, 0);
	}
out:
	mutex_unlock(&x->lock);
	return ret;
}

/*
 * Last close of @vg, after its engine reset (no piece in flight) and
 * before its pages are freed: no daemon mapping or fault reaches them
 * after this. The daemon is told to drop its mapping (RETIRE).
 */
void vgpu_exec_close_instance(struct vgpu_device *vg)
{
	struct vgpu_exec *x = &vg->parent->exec;
	struct vgpu_exec_conn *c;

	mutex_lock(&x->lock);
	xa_erase(&x->ids, vg->exec_id);
	c = x->conn;
	if (c && READ_ONCE(vg->exec_epoch) == c->epoch) {
		struct vgpu_exec_sqe sqe = {
			.seq = cpu_to_le64(0),
			.kind = cpu_to_le32(VGPU_EXEC_RETIRE),
			.id = cpu_to_le32(vg->exec_id),
			.vram_size = cpu_to_le64(vg->vram_size),
		};

		spin_lock(&x->qlock);
		sqe.seq = cpu_to_le64(++x->next_seq);
		exec_post(x, &sqe);	/* best effort: ids are not reused */
		spin_unlock(&x->qlock);
		/* mappings of this connection's file: the only ones there are */
		unmap_mapping_range(c->file->f_mapping,
				    (loff_t)vg->exec_id << VGPU_EXEC_VRAM_SHIFT,
				    vg->vram_size, 1);
	}
	vg->exec_id = 0;
	mutex_unlock(&x->lock);
}

/* ---- the device ---- */

static vm_fault_t exec_vram_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct vgpu_exec_conn *c = vma->vm_file->private_data;
	struct vgpu_exec *x = c->x;
	unsigned long id = vmf->pgoff >> VGPU_EXEC_VRAM_PGSHIFT;
	unsigned long idx = vmf->pgoff & VGPU_EXEC_VRAM_PGMASK;
	struct vgpu_device *vg;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	struct page *page;
	int err;

	mutex_lock(&x->lock);
	vg = xa_load(&x->ids, id);
	if (!vg || READ_ONCE(vg->exec_epoch) != c->epoch) {
		/*
		 * The instance was closed after this mapping was made (an
		 * mmap of an id needs it open): its pages are gone, and a
		 * daemon still finishing a piece of it reads and writes its
		 * own scratch page rather than dying of SIGBUS.
		 */
		page = c->scratch;
		get_page(page);
	} else if (idx >= vg->vram.npages) {
		goto out;
	} else {
		page = vgpu_page_get_unlocked(vg, &vg->vram, idx);
		if (!page) {
			ret = VM_FAULT_OOM;
			goto out;
		}
	}
	/*
	 * Inserted here, under exec.lock, rather than returned to the
	 * core: vgpu_exec_close_instance() then zaps every PTE there is.
	 */
	err = vm_insert_page(vma, vmf->address & PAGE_MASK, page);
	put_page(page);
	ret = (!err || err == -EBUSY) ? VM_FAULT_NOPAGE :
	      err == -ENOMEM ? VM_FAULT_OOM : VM_FAULT_SIGBUS;
out:
	mutex_unlock(&x->lock);
	return ret;
}

static const struct vm_operations_struct exec_vram_vm_ops = {
	.fault = exec_vram_fault,
};

static int exec_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vgpu_exec_conn *c = file->private_data;
	struct vgpu_exec *x = c->x;
	unsigned long id = vma->vm_pgoff >> VGPU_EXEC_VRAM_PGSHIFT;
	unsigned long idx = vma->vm_pgoff & VGPU_EXEC_VRAM_PGMASK;
	unsigned long npages = vma_pages(vma);
	struct vgpu_device *vg;
	int ret = 0;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (!vma->vm_pgoff) {
		if (npages != PAGE_ALIGN(VGPU_EXEC_QUEUE_BYTES) >> PAGE_SHIFT)
			return -EINVAL;
		return remap_vmalloc_range(vma, c->hdr, 0);
	}

	mutex_lock(&x->lock);
	vg = xa_load(&x->ids, id);
	if (!vg || READ_ONCE(vg->exec_epoch) != c->epoch)
		ret = -EACCES;	/* not open, or no work of it handed here */
	else if (idx >= vg->vram.npages || npages > vg->vram.npages - idx)
		ret = -EINVAL;
	mutex_unlock(&x->lock);
	if (ret)
		return ret;
	vgpu_vm_flags_set(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = &exec_vram_vm_ops;
	return 0;
}

/* Take the completions up to cq_tail; returns how many. */
static long exec_kick(struct vgpu_exec_conn *c)
{
	struct vgpu_exec *x = c->x;
	struct vgpu_sched *s = &exec_parent(x)->sched;
	u32 tail, n, i;

	spin_lock(&x->qlock);
	/* the index before the entries it publishes */
	tail = le32_to_cpu(smp_load_acquire(&c->hdr->cq_tail));
	n = tail - c->cq_head;
	if (n > VGPU_EXEC_CQ_ENTRIES) {
		/* nonsense: drop it all */
		x->errors++;
		c->cq_head = tail;
		n = 0;
	}
	for (i = 0; i < n; i++) {
		struct vgpu_exec_cqe *cqe = exec_cqe(c, c->cq_head + i);
		u64 seq = le64_to_cpu(READ_ONCE(cqe->seq));
		u32 status = le32_to_cpu(READ_ONCE(cqe->status));
		struct vgpu_exec_slot *sl = NULL;
		unsigned int k;

		for (k = 0; seq && k < s->nr_workers; k++) {
			struct vgpu_exec_slot *cand = &s->workers[k].xslot;

			if (cand->seq == seq && cand->epoch == c->epoch &&
			    !cand->done)
				sl = cand;
		}
		if (!sl || status > VGPU_EXEC_FAILED) {
			x->errors++;	/* stale, unknown or garbled */
			if (!sl)
				continue;
			status = VGPU_EXEC_FAILED;
		}
		if (status != VGPU_EXEC_OK)
			x->errors++;
		sl->status = status;
		sl->value = le64_to_cpu(READ_ONCE(cqe->value));
		sl->work_ns = le64_to_cpu(READ_ONCE(cqe->work_ns));
		sl->done = true;
	}
	c->cq_head += n;
	WRITE_ONCE(c->hdr->cq_head, cpu_to_le32(c->cq_head));
	spin_unlock(&x->qlock);
	if (n)
		wake_up_all(&x->done_wq);
	return n;
}

static long exec_set_window(struct vgpu_exec_conn *c, u64 __user *arg)
{
	u64 w;

	if (get_user(w, arg))
		return -EFAULT;
	if (w && (!is_power_of_2(w) || w < VGPU_EXEC_WINDOW_MIN ||
		  w > VGPU_EXEC_WINDOW_MAX))
		return -EINVAL;
	/* commands fetched from now on are cut to fit it */
	WRITE_ONCE(c->x->window, w);
	return 0;
}

static long exec_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case VGPU_EXEC_IOC_KICK:
		return exec_kick(file->private_data);
	case VGPU_EXEC_IOC_SET_WINDOW:
		return exec_set_window(file->private_data,
				       (u64 __user *)arg);
	default:
		return -ENOTTY;
	}
}

static __poll_t exec_poll(struct file *file, poll_table *wait)
{
	struct vgpu_exec_conn *c = file->private_data;
	struct vgpu_exec *x = c->x;
	__poll_t mask = 0;

	poll_wait(file, &x->poll_wq, wait);
	spin_lock(&x->qlock);
	if (le32_to_cpu(READ_ONCE(c->hdr->sq_head)) != c->sq_tail)
		mask = EPOLLIN | EPOLLRDNORM;
	spin_unlock(&x->qlock);
	return mask;
}

static int exec_open(struct inode *inode, struct file *file)
{
	struct vgpu_exec *x = container_of(file->private_data,
					   struct vgpu_exec, misc);
	struct vgpu_exec_conn *c;
	int ret = 0;

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	c->hdr = vmalloc_user(VGPU_EXEC_QUEUE_BYTES);
	if (!c->hdr)
		goto err_conn;
	c->scratch = alloc_page(GFP_KERNEL | __GFP_ZERO | __GFP_ACCOUNT);
	if (!c->scratch)
		goto err_hdr;
	c->x = x;
	c->file = file;
	c->hdr->magic = cpu_to_le32(VGPU_EXEC_MAGIC);
	c->hdr->version = cpu_to_le32(VGPU_EXEC_VERSION);
	c->hdr->sq_entries = cpu_to_le32(VGPU_EXEC_SQ_ENTRIES);
	c->hdr->cq_entries = cpu_to_le32(VGPU_EXEC_CQ_ENTRIES);
	c->hdr->sqe_size = cpu_to_le32(VGPU_EXEC_SQE_SIZE);
	c->hdr->cqe_size = cpu_to_le32(VGPU_EXEC_CQE_SIZE);
	c->hdr->sq_off = cpu_to_le32(VGPU_EXEC_SQ_OFF);
	c->hdr->cq_off = cpu_to_le32(VGPU_EXEC_CQ_OFF);

	mutex_lock(&x->lock);
	spin_lock(&x->qlock);
	if (x->conn) {
		ret = -EBUSY;	/* one daemon per parent */
	} else {
		c->epoch = ++x->epoch;
		x->conn = c;
	}
	spin_unlock(&x->qlock);
	mutex_unlock(&x->lock);
	if (ret)
		goto err_scratch;
	file->private_data = c;
	/* engines waiting for a daemon hand their pieces (again) */
	wake_up_all(&x->done_wq);
	return nonseekable_open(inode, file);

err_scratch:
	__free_page(c->scratch);
err_hdr:
	vfree(c->hdr);
err_conn:
	kfree(c);
	return ret ?: -ENOMEM;
}

/*
 * The daemon is gone (every mapping of this file too: each holds the
 * file). Pieces it did not complete go to the next one.
 */
static int exec_release(struct inode *inode, struct file *file)
{
	struct vgpu_exec_conn *c = file->private_data;
	struct vgpu_exec *x = c->x;

	mutex_lock(&x->lock);
	spin_lock(&x->qlock);
	x->conn = NULL;
	spin_unlock(&x->qlock);
	mutex_unlock(&x->lock);
	put_page(c->scratch);
	vfree(c->hdr);
	kfree(c);
	return 0;
}

static const struct file_operations vgpu_exec_fops = {
	.owner = THIS_MODULE,
	.open = exec_open,
	.release = exec_release,
	.mmap = exec_mmap,
	.poll = exec_poll,
	.unlocked_ioctl = exec_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/* Before the parent's sysfs files exist. */
void vgpu_exec_init(struct vgpu_parent *parent)
{
	struct vgpu_exec *x = &parent->exec;

	mutex_init(&x->lock);
	xa_init(&x->ids);
	spin_lock_init(&x->qlock);
	init_waitqueue_head(&x->poll_wq);
	init_waitqueue_head(&x->done_wq);
	x->next_id = min(vgpu_test_exec_id_start, VGPU_EXEC_ID_MAX);
	exec_parse(vgpu_exec_param, &x->external);
}

/* The device node, once the parent device is added. */
int vgpu_exec_register(struct vgpu_parent *parent)
{
	struct vgpu_exec *x = &parent->exec;
	int ret;

	snprintf(x->name, sizeof(x->name), "vgpu_exec%u", parent->index);
	snprintf(x->nodename, sizeof(x->nodename), "vgpu-exec/%s",
		 dev_name(&parent->dev));
	x->misc.minor = MISC_DYNAMIC_MINOR;
	x->misc.name = x->name;
	x->misc.nodename = x->nodename;
	x->misc.mode = 0600;
	x->misc.fops = &vgpu_exec_fops;
	x->misc.parent = &parent->dev;
	ret = misc_register(&x->misc);
	if (ret)
		return ret;
	x->registered = true;
	return 0;
}

/* No instance is left; a daemon may still be connected (it holds the module). */
void vgpu_exec_fini(struct vgpu_parent *parent)
{
	struct vgpu_exec *x = &parent->exec;

	if (x->registered)
		misc_deregister(&x->misc);
	x->registered = false;
	xa_destroy(&x->ids);
}

/* ---- parent sysfs ---- */

static struct vgpu_exec *dev_to_exec(struct device *dev)
{
	return &((struct vgpu_parent *)dev_get_drvdata(dev))->exec;
}

static ssize_t executor_show(struct device *dev, struct device_attribute *attr,
			     char *buf)
{
	return sysfs_emit(buf, "%s\n", READ_ONCE(dev_to_exec(dev)->external) ?
			  "external" : "cpu");
}

/*
 * Any time: a command runs wholly in the mode it was fetched in, so one in
 * flight finishes where it started.
 */
static ssize_t executor_store(struct device *dev, struct device_attribute *attr,
			      const char *buf, size_t count)
{
	bool ext;
	int ret;

	ret = exec_parse(buf, &ext);
	if (ret)
		return ret;
	WRITE_ONCE(dev_to_exec(dev)->external, ext);
	return count;
}

static ssize_t exec_stat_show(struct device *dev, char *buf, int which)
{
	struct vgpu_exec *x = dev_to_exec(dev);
	u64 v;

	spin_lock(&x->qlock);
	switch (which) {
	case 0:
		v = !!x->conn;
		break;
	case 1:
		v = x->handoffs;
		break;
	case 2:
		v = x->requeues;
		break;
	default:
		v = x->errors;
		break;
	}
	spin_unlock(&x->qlock);
	return sysfs_emit(buf, "%llu\n", v);
}

static ssize_t executor_connected_show(struct device *dev,
				       struct device_attribute *attr, char *buf)
{
	return exec_stat_show(dev, buf, 0);
}

static ssize_t executor_handoffs_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	return exec_stat_show(dev, buf, 1);
}

static ssize_t executor_requeues_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	return exec_stat_show(dev, buf, 2);
}

static ssize_t executor_errors_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	return exec_stat_show(dev, buf, 3);
}

struct device_attribute vgpu_attr_executor = __ATTR_RW(executor);
struct device_attribute vgpu_attr_executor_connected =
	__ATTR_RO(executor_connected);
struct device_attribute vgpu_attr_executor_handoffs =
	__ATTR_RO(executor_handoffs);
struct device_attribute vgpu_attr_executor_requeues =
	__ATTR_RO(executor_requeues);
struct device_attribute vgpu_attr_executor_errors = __ATTR_RO(executor_errors);
