// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: interrupts (VFIO_DEVICE_GET_IRQ_INFO / SET_IRQS) and the
 * VFIO request callback.
 *
 * INTX, MSI and REQ have one vector each, delivered through an eventfd the
 * user sets with ACTION_TRIGGER. vgpu_irq_raise() may be called from any
 * context (the engine will use it).
 */
#include <linux/eventfd.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "vgpu.h"

static void vgpu_eventfd_signal(struct eventfd_ctx *ctx)
{
#if KERNEL_VERSION(6, 8, 0) <= LINUX_VERSION_CODE
	eventfd_signal(ctx);
#else
	eventfd_signal(ctx, 1);
#endif
}

static unsigned int vgpu_irq_count(unsigned int index)
{
	switch (index) {
	case VFIO_PCI_INTX_IRQ_INDEX:
	case VFIO_PCI_MSI_IRQ_INDEX:
	case VFIO_PCI_REQ_IRQ_INDEX:
		return 1;
	default:
		return 0;	/* MSIX, ERR */
	}
}

int vgpu_ioctl_get_irq_info(struct vgpu_device *vg, void __user *arg)
{
	unsigned long minsz = offsetofend(struct vfio_irq_info, count);
	struct vfio_irq_info info;

	if (copy_from_user(&info, arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_IRQS)
		return -EINVAL;

	info.count = vgpu_irq_count(info.index);
	switch (info.index) {
	case VFIO_PCI_INTX_IRQ_INDEX:
		info.flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE;
		break;
	case VFIO_PCI_MSI_IRQ_INDEX:
		info.flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE;
		break;
	case VFIO_PCI_REQ_IRQ_INDEX:
		info.flags = VFIO_IRQ_INFO_EVENTFD;
		break;
	default:
		info.flags = 0;
		break;
	}

	return copy_to_user(arg, &info, minsz) ? -EFAULT : 0;
}

/* Signal @index now (INTx: unless masked, then it stays pending). */
void vgpu_irq_raise(struct vgpu_device *vg, unsigned int index)
{
	unsigned long flags;

	if (index >= VFIO_PCI_NUM_IRQS)
		return;
	spin_lock_irqsave(&vg->irq_lock, flags);
	if (index == VFIO_PCI_INTX_IRQ_INDEX && vg->intx_masked)
		vg->intx_pending = true;
	else if (vg->irq_trigger[index])
		vgpu_eventfd_signal(vg->irq_trigger[index]);
	spin_unlock_irqrestore(&vg->irq_lock, flags);
}

/* Install @ctx (may be NULL) as the trigger of @index; drops the old one. */
static void vgpu_irq_set_ctx(struct vgpu_device *vg, unsigned int index,
			     struct eventfd_ctx *ctx)
{
	struct eventfd_ctx *old;
	unsigned long flags;

	spin_lock_irqsave(&vg->irq_lock, flags);
	old = vg->irq_trigger[index];
	vg->irq_trigger[index] = ctx;
	if (index == VFIO_PCI_INTX_IRQ_INDEX && !ctx) {
		vg->intx_masked = false;
		vg->intx_pending = false;
	}
	spin_unlock_irqrestore(&vg->irq_lock, flags);
	if (old)
		eventfd_ctx_put(old);
}

void vgpu_irq_release_all(struct vgpu_device *vg)
{
	unsigned int i;

	for (i = 0; i < VFIO_PCI_NUM_IRQS; i++)
		vgpu_irq_set_ctx(vg, i, NULL);
}

static int vgpu_irq_trigger(struct vgpu_device *vg, struct vfio_irq_set *hdr,
			    const u8 *data)
{
	struct eventfd_ctx *ctx;
	s32 fd;

	switch (hdr->flags & VFIO_IRQ_SET_DATA_TYPE_MASK) {
	case VFIO_IRQ_SET_DATA_NONE:
		if (hdr->count == 0)
			vgpu_irq_set_ctx(vg, hdr->index, NULL);
		else
			vgpu_irq_raise(vg, hdr->index);
		return 0;
	case VFIO_IRQ_SET_DATA_BOOL:
		if (hdr->count != 1)
			return -EINVAL;
		if (data[0])
			vgpu_irq_raise(vg, hdr->index);
		return 0;
	case VFIO_IRQ_SET_DATA_EVENTFD:
		if (hdr->count != 1)
			return -EINVAL;
		memcpy(&fd, data, sizeof(fd));
		if (fd == -1) {
			vgpu_irq_set_ctx(vg, hdr->index, NULL);
			return 0;
		}
		if (fd < 0)
			return -EINVAL;
		ctx = eventfd_ctx_fdget(fd);
		if (IS_ERR(ctx))
			return PTR_ERR(ctx);
		vgpu_irq_set_ctx(vg, hdr->index, ctx);
		return 0;
	}
	return -EINVAL;
}

/* INTx only: MASK / UNMASK with DATA_NONE or DATA_BOOL, one vector. */
static int vgpu_irq_mask(struct vgpu_device *vg, struct vfio_irq_set *hdr,
			 const u8 *data, bool mask)
{
	unsigned long flags;
	bool fire = false;

	if (hdr->index != VFIO_PCI_INTX_IRQ_INDEX || hdr->count != 1)
		return -EINVAL;
	switch (hdr->flags & VFIO_IRQ_SET_DATA_TYPE_MASK) {
	case VFIO_IRQ_SET_DATA_NONE:
		break;
	case VFIO_IRQ_SET_DATA_BOOL:
		if (!data[0])
			return 0;
		break;
	default:
		return -EINVAL;		/* no irqfd-style unmask eventfd */
	}

	spin_lock_irqsave(&vg->irq_lock, flags);
	if (mask) {
		vg->intx_masked = true;
	} else {
		vg->intx_masked = false;
		fire = vg->intx_pending;
		vg->intx_pending = false;
	}
	spin_unlock_irqrestore(&vg->irq_lock, flags);
	if (fire)
		vgpu_irq_raise(vg, VFIO_PCI_INTX_IRQ_INDEX);
	return 0;
}

int vgpu_ioctl_set_irqs(struct vgpu_device *vg, void __user *arg)
{
	unsigned long minsz = offsetofend(struct vfio_irq_set, count);
	struct vfio_irq_set hdr;
	size_t data_size = 0;
	u8 *data = NULL;
	int ret;

	if (copy_from_user(&hdr, arg, minsz))
		return -EFAULT;
	ret = vfio_set_irqs_validate_and_prepare(&hdr,
						 vgpu_irq_count(hdr.index),
						 VFIO_PCI_NUM_IRQS, &data_size);
	if (ret)
		return ret;
	if (data_size) {
		data = memdup_user(arg + minsz, data_size);
		if (IS_ERR(data))
			return PTR_ERR(data);
	}

	switch (hdr.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) {
	case VFIO_IRQ_SET_ACTION_TRIGGER:
		ret = vgpu_irq_trigger(vg, &hdr, data);
		break;
	case VFIO_IRQ_SET_ACTION_MASK:
		ret = vgpu_irq_mask(vg, &hdr, data, true);
		break;
	case VFIO_IRQ_SET_ACTION_UNMASK:
		ret = vgpu_irq_mask(vg, &hdr, data, false);
		break;
	default:
		ret = -EINVAL;
		break;
	}
	kfree(data);
	return ret;
}

/*
 * Called by vfio_unregister_group_dev() (and again every 10 s) while a
 * remove waits for the user to close the device: ask it to let go.
 */
void vgpu_request(struct vfio_device *vdev, unsigned int count)
{
	struct vgpu_device *vg = to_vgpu(vdev);
	unsigned long flags;
	bool has_req, log;

	spin_lock_irqsave(&vg->irq_lock, flags);
	has_req = vg->irq_trigger[VFIO_PCI_REQ_IRQ_INDEX];
	log = !vg->req_logged;
	vg->req_logged = true;
	spin_unlock_irqrestore(&vg->irq_lock, flags);

	if (log)
		dev_info(vdev->dev,
			 "removal requested while in use: %s\n",
			 has_req ? "signalling the user (REQ)" :
				   "no REQ eventfd, waiting for the user");
	vgpu_irq_raise(vg, VFIO_PCI_REQ_IRQ_INDEX);
}
