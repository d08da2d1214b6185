// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: VFIO_DEVICE_IOEVENTFD for the engine's DOORBELL register.
 *
 * The user hands us an eventfd (typically the one it also gives KVM as a
 * KVM_IOEVENTFD for the guest-physical address of DOORBELL): each signal of
 * it is the write of @data, @count bytes, at DOORBELL, exactly as if it had
 * come through the device fd, but with no exit to the VMM. Semantics and
 * errors follow vfio-pci (drivers/vfio/pci/vfio_pci_rdwr.c); see
 * docs/device-abi.md.
 *
 * vfio-pci builds this on vfio_virqfd_enable(), which is exported on 6.1
 * and 6.12 but lives in the module vfio_virqfd on 6.1 (built in on 6.12)
 * and only exists with CONFIG_VFIO_VIRQFD, which the vfio-pci drivers
 * select: an mdev driver cannot count on it. So here is the small
 * equivalent: a wait-queue entry on the eventfd whose callback queues a
 * work item. The doorbell itself is not written from the callback: it runs
 * with the eventfd's wait-queue lock held and interrupts off, and the
 * engine raises MSI (an eventfd signal, the same lock class) under its own
 * eng.lock, so ringing it there would invert that order.
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/kernel.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "vgpu.h"

/* Registered ioeventfds per instance (vfio-pci allows 1000 per device). */
#define VGPU_IOEVENTFD_MAX	16

struct vgpu_ioeventfd {
	struct list_head node;		/* vg->ioeventfds, vg->ioeventfd_lock */
	struct vgpu_device *vg;
	struct eventfd_ctx *ctx;
	wait_queue_entry_t wait;
	poll_table pt;
	struct work_struct inject;
	unsigned int pos;		/* offset in BAR2 */
	unsigned int count;		/* 1, 2 or 4 bytes */
	u64 data;
};

static void vgpu_ioeventfd_inject(struct work_struct *work)
{
	struct vgpu_ioeventfd *ioev = container_of(work, struct vgpu_ioeventfd,
						   inject);

	vgpu_engine_write(ioev->vg, ioev->pos, ioev->count, (u32)ioev->data);
}

/* Called by the eventfd's wake-up with its wait-queue lock held. */
static int vgpu_ioeventfd_wakeup(wait_queue_entry_t *wait, unsigned int mode,
				 int sync, void *key)
{
	struct vgpu_ioeventfd *ioev = container_of(wait, struct vgpu_ioeventfd,
						   wait);
	__poll_t flags = key_to_poll(key);

	if (flags & EPOLLIN) {
		u64 cnt;

		/* Signals not yet injected coalesce: a doorbell is idempotent. */
		eventfd_ctx_do_read(ioev->ctx, &cnt);
		queue_work(system_highpri_wq, &ioev->inject);
	}
	/*
	 * The eventfd's file is being released (like vfio-pci: the ioeventfd
	 * stops, its registration stays until removed or the device closes).
	 * We hold the lock of the queue we are on: unhook ourselves.
	 */
	if (flags & EPOLLHUP)
		list_del_init(&wait->entry);
	return 0;
}

static void vgpu_ioeventfd_queue_proc(struct file *file,
				      wait_queue_head_t *wqh, poll_table *pt)
{
	struct vgpu_ioeventfd *ioev = container_of(pt, struct vgpu_ioeventfd,
						   pt);

	add_wait_queue(wqh, &ioev->wait);
}

static int vgpu_ioeventfd_enable(struct vgpu_ioeventfd *ioev, int fd)
{
	struct eventfd_ctx *ctx;
	struct file *file;
	__poll_t events;

	file = fget(fd);
	if (!file)
		return -EBADF;
	ctx = eventfd_ctx_fileget(file);
	if (IS_ERR(ctx)) {
		fput(file);
		return PTR_ERR(ctx);
	}
	ioev->ctx = ctx;
	INIT_WORK(&ioev->inject, vgpu_ioeventfd_inject);
	init_waitqueue_func_entry(&ioev->wait, vgpu_ioeventfd_wakeup);
	init_poll_funcptr(&ioev->pt, vgpu_ioeventfd_queue_proc);
	events = vfs_poll(file, &ioev->pt);
	/* signalled before we were hooked: as if we had seen it */
	if (events & EPOLLIN)
		queue_work(system_highpri_wq, &ioev->inject);
	/* keep the file until we are hooked, or we could miss its EPOLLHUP */
	fput(file);
	return 0;
}

/*
 * Unhook, let a queued or running doorbell finish, drop the eventfd. After
 * the wait-queue entry is off the queue (under its lock) no wake-up can
 * queue the work again.
 */
static void vgpu_ioeventfd_free(struct vgpu_ioeventfd *ioev)
{
	u64 cnt;

	eventfd_ctx_remove_wait_queue(ioev->ctx, &ioev->wait, &cnt);
	flush_work(&ioev->inject);
	eventfd_ctx_put(ioev->ctx);
	kfree(ioev);
}

/*
 * The doorbell as the trapped path takes it (vgpu_reg_access_ok() and
 * vgpu_engine_write()): a naturally aligned 1, 2 or 4 byte write within
 * the DOORBELL dword. Anything else, including other engine registers,
 * is refused: their writes depend on state an ioeventfd cannot see.
 */
static bool vgpu_ioeventfd_pos_ok(u64 pos, unsigned int count)
{
	return count <= 4 && IS_ALIGNED(pos, count) &&
	       pos >= VGPU_ENG_DOORBELL && pos + count <= VGPU_ENG_DOORBELL + 4;
}

static int vgpu_ioeventfd(struct vgpu_device *vg, u64 offset, u64 data,
			  unsigned int count, int fd)
{
	u64 index = offset >> VGPU_REGION_SHIFT;
	u64 pos = offset & VGPU_REGION_MASK;
	struct vgpu_ioeventfd *ioev;
	int ret;

	if (index != VFIO_PCI_BAR2_REGION_INDEX ||
	    !vgpu_ioeventfd_pos_ok(pos, count))
		return -EINVAL;

	mutex_lock(&vg->ioeventfd_lock);
	list_for_each_entry(ioev, &vg->ioeventfds, node) {
		if (ioev->pos == pos && ioev->data == data &&
		    ioev->count == count) {
			if (fd == -1) {
				list_del(&ioev->node);
				vg->ioeventfds_nr--;
				vgpu_ioeventfd_free(ioev);
				ret = 0;
			} else {
				ret = -EEXIST;
			}
			goto out;
		}
	}
	if (fd < 0) {
		ret = -ENODEV;
		goto out;
	}
	if (vg->ioeventfds_nr >= VGPU_IOEVENTFD_MAX) {
		ret = -ENOSPC;
		goto out;
	}
	ioev = kzalloc(sizeof(*ioev), GFP_KERNEL_ACCOUNT);
	if (!ioev) {
		ret = -ENOMEM;
		goto out;
	}
	ioev->vg = vg;
	ioev->pos = pos;
	ioev->count = count;
	ioev->data = data;
	ret = vgpu_ioeventfd_enable(ioev, fd);
	if (ret) {
		kfree(ioev);
		goto out;
	}
	list_add_tail(&ioev->node, &vg->ioeventfds);
	vg->ioeventfds_nr++;
out:
	mutex_unlock(&vg->ioeventfd_lock);
	return ret;
}

int vgpu_ioctl_ioeventfd(struct vgpu_device *vg, void __user *arg)
{
	unsigned long minsz = offsetofend(struct vfio_device_ioeventfd, fd);
	struct vfio_device_ioeventfd req;
	unsigned int count;

	if (copy_from_user(&req, arg, minsz))
		return -EFAULT;
	if (req.argsz < minsz)
		return -EINVAL;
	if (req.flags & ~VFIO_DEVICE_IOEVENTFD_SIZE_MASK)
		return -EINVAL;
	count = req.flags & VFIO_DEVICE_IOEVENTFD_SIZE_MASK;
	if (hweight8(count) != 1 || req.fd < -1)
		return -EINVAL;
	return vgpu_ioeventfd(vg, req.offset, req.data, count, req.fd);
}

/* Wait until no doorbell signalled so far is still queued or running. */
void vgpu_ioeventfd_flush(struct vgpu_device *vg)
{
	struct vgpu_ioeventfd *ioev;

	mutex_lock(&vg->ioeventfd_lock);
	list_for_each_entry(ioev, &vg->ioeventfds, node)
		flush_work(&ioev->inject);
	mutex_unlock(&vg->ioeventfd_lock);
}

/* Last close: drop every registration (vfio-pci does it at disable). */
void vgpu_ioeventfd_release_all(struct vgpu_device *vg)
{
	struct vgpu_ioeventfd *ioev, *tmp;

	mutex_lock(&vg->ioeventfd_lock);
	list_for_each_entry_safe(ioev, tmp, &vg->ioeventfds, node) {
		list_del(&ioev->node);
		vgpu_ioeventfd_free(ioev);
	}
	vg->ioeventfds_nr = 0;
	mutex_unlock(&vg->ioeventfd_lock);
}
