// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: the VFIO device of one instance: lifetime, region access
 * dispatch and the device ioctls.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>

#include "vgpu.h"

static int vgpu_init_dev(struct vfio_device *vdev)
{
	struct vgpu_device *vg = to_vgpu(vdev);
	struct mdev_device *mdev = to_mdev_device(vdev->dev);
	struct vgpu_type *type = container_of(mdev->type, struct vgpu_type,
					      type);
	struct vgpu_parent *parent = container_of(mdev->type->parent,
						  struct vgpu_parent,
						  mdev_parent);
	int ret;

	/* One module reference per instance: rmmod fails while any exists. */
	if (!try_module_get(THIS_MODULE))
		return -ENODEV;

	/* Admission: reserve the quota or fail with nothing changed. */
	ret = vgpu_pool_reserve(parent, type->vram_mb);
	if (ret)
		goto err_module;

	vg->parent = parent;
	vg->type = type;
	vg->vram_size = (u64)type->vram_mb * SZ_1M;
	vg->weight = type->weight;
	vg->cap = 0;
	mutex_init(&vg->lock);
	atomic_long_set(&vg->lock_asked, 0);
	atomic_long_set(&vg->lock_got, 0);
	spin_lock_init(&vg->irq_lock);
	mutex_init(&vg->ioeventfd_lock);
	INIT_LIST_HEAD(&vg->ioeventfds);

	ret = vgpu_pages_init(&vg->vram, vg->vram_size, true);
	if (ret)
		goto err_pool;
	ret = vgpu_pages_init(&vg->disp, vgpu_display_size(vg->vram_size),
			      false);
	if (ret)
		goto err_vram;

	vgpu_cfg_init(vg);
	vgpu_dispi_reset(vg);
	vgpu_engine_init(vg);
	vgpu_sched_attach(vg);

	dev_dbg(vdev->dev, "created: %s, %u MiB on %s\n",
		type->type.pretty_name, type->vram_mb, dev_name(&parent->dev));
	return 0;

err_vram:
	vgpu_pages_fini(vg, &vg->vram);
err_pool:
	mutex_destroy(&vg->ioeventfd_lock);
	mutex_destroy(&vg->lock);
	vgpu_pool_release(parent, type->vram_mb);
err_module:
	module_put(THIS_MODULE);
	return ret;
}

static void vgpu_release_dev(struct vfio_device *vdev)
{
	struct vgpu_device *vg = to_vgpu(vdev);

	/* No engine may touch the pages from here on. */
	vgpu_sched_detach(vg);
	vgpu_ioeventfd_release_all(vg);
	vgpu_irq_release_all(vg);
	vgpu_pages_fini(vg, &vg->disp);
	vgpu_pages_fini(vg, &vg->vram);
	vgpu_pool_release(vg->parent, vg->type->vram_mb);
	mutex_destroy(&vg->ioeventfd_lock);
	mutex_destroy(&vg->lock);
#if KERNEL_VERSION(6, 2, 0) > LINUX_VERSION_CODE
	vfio_free_device(vdev);
#endif
	module_put(THIS_MODULE);
}

/*
 * First open (VFIO serializes open and close of a device): the device is
 * as created (see vgpu_close_device()). Remember the opener's memory
 * cgroup: the engine charges the pages it allocates to it.
 */
static int vgpu_open_device(struct vfio_device *vdev)
{
	struct vgpu_device *vg = to_vgpu(vdev);

	int ret;

	ret = vgpu_exec_open_instance(vg);
	if (ret)
		return ret;
	vgpu_lock(vg);
	WARN_ON_ONCE(atomic_long_read(&vg->vram.used) ||
		     atomic_long_read(&vg->disp.used));
	vg->memcg = get_mem_cgroup_from_mm(current->mm);
	vgpu_unlock(vg);
	return 0;
}

/*
 * Last close: VFIO calls it once no fd is open and no mapping is left
 * (each mapping holds a reference on the file). Persistent mdevs go from
 * one VM to the next, so nothing of this tenant may stay: the engine stops
 * (a ring left running would go on using engine time), config space, DISPI
 * and every engine register return to their state at creation, the
 * eventfds and ioeventfds are dropped (like vfio-pci; the ioeventfds
 * first, so that no doorbell of theirs lands after the reset) and every VRAM and display page is
 * freed, so the next open finds zeroed VRAM and no frame, and a closed
 * device holds no host memory but its page arrays. Host counters (busy_ns,
 * jobs, latency_hist, ...) and the host's knobs (weight, cap) stay.
 */
static void vgpu_close_device(struct vfio_device *vdev)
{
	struct vgpu_device *vg = to_vgpu(vdev);
	struct mem_cgroup *memcg;

	vgpu_ioeventfd_release_all(vg);
	vgpu_lock(vg);
	vgpu_engine_reset(vg, true);
	vgpu_cfg_init(vg);
	vgpu_dispi_reset(vg);
	vgpu_unlock(vg);
	/* the external executor's mappings go before the pages */
	vgpu_exec_close_instance(vg);
	vgpu_lock(vg);
	memcg = vg->memcg;
	vg->memcg = NULL;
	vgpu_unlock(vg);
	vgpu_irq_release_all(vg);
	/* no engine chunk touches VRAM after the reset: the ring is off */
	vgpu_pages_free(vg, &vg->disp);
	vgpu_pages_free(vg, &vg->vram);
	mem_cgroup_put(memcg);
}

/*
 * Clears DISPI, engine state, config command and MSI enable; VRAM content
 * is kept. A chunk of engine work runs under vg->lock, so none is half
 * done here and none runs after this for the old ring. Registered
 * ioeventfds stay (as with vfio-pci: the user paired them with KVM and a
 * reset must not silently cut the guest's doorbell off), but a doorbell
 * signalled before the reset is rung before it, never after.
 */
void vgpu_device_reset(struct vgpu_device *vg)
{
	vgpu_ioeventfd_flush(vg);
	vgpu_lock(vg);
	vgpu_engine_reset(vg, true);
	vgpu_cfg_reset(vg);
	vgpu_dispi_reset(vg);
	vgpu_unlock(vg);
}

/* ---- region read/write ---- */

/*
 * Config space and BAR2: one naturally aligned 1, 2 or 4 byte access, or a
 * run of aligned dwords (QEMU reads all of config space in one pread).
 */
static bool vgpu_reg_access_ok(u64 off, size_t count, u64 size)
{
	bool shape;

	if (count == 1 || count == 2 || count == 4)
		shape = IS_ALIGNED(off, count);
	else
		shape = count && IS_ALIGNED(count, 4) && IS_ALIGNED(off, 4);
	return shape && off < size && count <= size - off;
}

/*
 * One register access. The engine block has its own lock, so that polling
 * FENCE or STATUS and ringing the doorbell never wait for engine work.
 */
static bool vgpu_is_engine_reg(unsigned int index, unsigned int off)
{
	return index == VFIO_PCI_BAR2_REGION_INDEX &&
	       off >= VGPU_MMIO_ENGINE && off < VGPU_MMIO_ENGINE_END;
}

static u32 vgpu_reg_read(struct vgpu_device *vg, unsigned int index,
			 unsigned int off, unsigned int size)
{
	u32 val;

	if (vgpu_is_engine_reg(index, off))
		return vgpu_engine_read(vg, off, size);
	vgpu_lock(vg);
	if (index == VFIO_PCI_CONFIG_REGION_INDEX)
		val = vgpu_cfg_read(vg, off, size);
	else
		val = vgpu_mmio_read(vg, off, size);
	vgpu_unlock(vg);
	return val;
}

static void vgpu_reg_write(struct vgpu_device *vg, unsigned int index,
			   unsigned int off, unsigned int size, u32 val)
{
	if (vgpu_is_engine_reg(index, off)) {
		vgpu_engine_write(vg, off, size, val);
		return;
	}
	vgpu_lock(vg);
	if (index == VFIO_PCI_CONFIG_REGION_INDEX)
		vgpu_cfg_write(vg, off, size, val);
	else
		vgpu_mmio_write(vg, off, size, val);
	vgpu_unlock(vg);
}

static ssize_t vgpu_reg_rw(struct vgpu_device *vg, unsigned int index,
			   char __user *buf, size_t count, u64 off, bool write)
{
	u64 size = index == VFIO_PCI_CONFIG_REGION_INDEX ? VGPU_CONFIG_SIZE :
							   VGPU_MMIO_SIZE;
	unsigned int step = min_t(size_t, count, 4);
	size_t done;

	if (!vgpu_reg_access_ok(off, count, size))
		return -EINVAL;

	for (done = 0; done < count; done += step) {
		unsigned int o = off + done;
		u8 b[4] = { 0 };
		u32 val;

		if (write) {
			if (copy_from_user(b, buf + done, step))
				return done ? done : -EFAULT;
			val = b[0] | b[1] << 8 | b[2] << 16 | (u32)b[3] << 24;
			vgpu_reg_write(vg, index, o, step, val);
		} else {
			val = vgpu_reg_read(vg, index, o, step);
			b[0] = val;
			b[1] = val >> 8;
			b[2] = val >> 16;
			b[3] = val >> 24;
			if (copy_to_user(buf + done, b, step))
				return done ? done : -EFAULT;
		}
	}
	return count;
}

static ssize_t vgpu_rw(struct vgpu_device *vg, char __user *buf, size_t count,
		       loff_t *ppos, bool write)
{
	u64 pos = *ppos;
	u64 index = pos >> VGPU_REGION_SHIFT;
	u64 off = pos & VGPU_REGION_MASK;
	ssize_t ret;

	if (*ppos < 0)
		return -EINVAL;
	if (!count)
		return 0;

	switch (index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		ret = vgpu_pages_rw(vg, &vg->vram, buf, count, off, write);
		break;
	case VFIO_PCI_BAR2_REGION_INDEX:
	case VFIO_PCI_CONFIG_REGION_INDEX:
		ret = vgpu_reg_rw(vg, index, buf, count, off, write);
		break;
	case VGPU_DISPLAY_REGION:
		if (write)
			return -EINVAL;
		ret = vgpu_pages_rw(vg, &vg->disp, buf, count, off, false);
		break;
	default:
		return -EINVAL;
	}
	if (ret > 0)
		*ppos += ret;
	return ret;
}

static ssize_t vgpu_read(struct vfio_device *vdev, char __user *buf,
			 size_t count, loff_t *ppos)
{
	return vgpu_rw(to_vgpu(vdev), buf, count, ppos, false);
}

static ssize_t vgpu_write(struct vfio_device *vdev, const char __user *buf,
			  size_t count, loff_t *ppos)
{
	return vgpu_rw(to_vgpu(vdev), (char __user *)buf, count, ppos, true);
}

/* ---- ioctls ---- */

static int vgpu_ioctl_get_info(struct vgpu_device *vg, void __user *arg)
{
	unsigned long minsz = offsetofend(struct vfio_device_info, num_irqs);
	struct vfio_device_info info;

	if (copy_from_user(&info, arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;

	info.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;
	info.num_regions = VGPU_NUM_REGIONS;
	info.num_irqs = VFIO_PCI_NUM_IRQS;

	return copy_to_user(arg, &info, minsz) ? -EFAULT : 0;
}

static int vgpu_ioctl_get_region_info(struct vgpu_device *vg,
				      void __user *arg)
{
	unsigned long minsz = offsetofend(struct vfio_region_info, offset);
	struct vfio_info_cap caps = { .buf = NULL, .size = 0 };
	struct vfio_region_info info;
	int ret;

	if (copy_from_user(&info, arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz || info.index >= VGPU_NUM_REGIONS)
		return -EINVAL;

	info.offset = VGPU_REGION_OFFSET(info.index);
	info.size = 0;
	info.flags = 0;
	info.cap_offset = 0;

	switch (info.index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		info.size = vg->vram_size;
		info.flags = VFIO_REGION_INFO_FLAG_READ |
			     VFIO_REGION_INFO_FLAG_WRITE |
			     VFIO_REGION_INFO_FLAG_MMAP;
		break;
	case VFIO_PCI_BAR2_REGION_INDEX:
		info.size = VGPU_MMIO_SIZE;
		info.flags = VFIO_REGION_INFO_FLAG_READ |
			     VFIO_REGION_INFO_FLAG_WRITE;
		break;
	case VFIO_PCI_CONFIG_REGION_INDEX:
		info.size = VGPU_CONFIG_SIZE;
		info.flags = VFIO_REGION_INFO_FLAG_READ |
			     VFIO_REGION_INFO_FLAG_WRITE;
		break;
	case VGPU_DISPLAY_REGION: {
		struct vfio_region_info_cap_type cap_type = {
			.header.id = VFIO_REGION_INFO_CAP_TYPE,
			.header.version = 1,
			.type = VGPU_DISPLAY_REGION_TYPE,
			.subtype = VGPU_DISPLAY_REGION_SUBTYPE,
		};

		info.size = (u64)vg->disp.npages << PAGE_SHIFT;
		info.flags = VFIO_REGION_INFO_FLAG_READ |
			     VFIO_REGION_INFO_FLAG_MMAP;
		ret = vfio_info_add_capability(&caps, &cap_type.header,
					       sizeof(cap_type));
		if (ret)
			return ret;
		break;
	}
	default:
		/* BAR1 (upper half of BAR0), BAR3-5, ROM, VGA: size 0 */
		break;
	}

	if (caps.size) {
		info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
		if (info.argsz < sizeof(info) + caps.size) {
			/* Tell the user how much room the chain needs. */
			info.argsz = sizeof(info) + caps.size;
			info.cap_offset = 0;
		} else {
			vfio_info_cap_shift(&caps, sizeof(info));
			if (copy_to_user(arg + sizeof(info), caps.buf,
					 caps.size)) {
				kfree(caps.buf);
				return -EFAULT;
			}
			info.cap_offset = sizeof(info);
		}
		kfree(caps.buf);
	}

	return copy_to_user(arg, &info, minsz) ? -EFAULT : 0;
}

static long vgpu_ioctl(struct vfio_device *vdev, unsigned int cmd,
		       unsigned long arg)
{
	struct vgpu_device *vg = to_vgpu(vdev);
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case VFIO_DEVICE_GET_INFO:
		return vgpu_ioctl_get_info(vg, uarg);
	case VFIO_DEVICE_GET_REGION_INFO:
		return vgpu_ioctl_get_region_info(vg, uarg);
	case VFIO_DEVICE_GET_IRQ_INFO:
		return vgpu_ioctl_get_irq_info(vg, uarg);
	case VFIO_DEVICE_SET_IRQS:
		return vgpu_ioctl_set_irqs(vg, uarg);
	case VFIO_DEVICE_QUERY_GFX_PLANE:
		return vgpu_ioctl_query_gfx_plane(vg, uarg);
	case VFIO_DEVICE_IOEVENTFD:
		return vgpu_ioctl_ioeventfd(vg, uarg);
	case VFIO_DEVICE_RESET:
		vgpu_device_reset(vg);
		return 0;
	}
	return -ENOTTY;
}

const struct vfio_device_ops vgpu_dev_ops = {
	.name = VGPU_NAME,
	.init = vgpu_init_dev,
	.release = vgpu_release_dev,
#if KERNEL_VERSION(6, 2, 0) <= LINUX_VERSION_CODE
	.bind_iommufd = vfio_iommufd_emulated_bind,
	.unbind_iommufd = vfio_iommufd_emulated_unbind,
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
#endif
	.open_device = vgpu_open_device,
	.close_device = vgpu_close_device,
	.read = vgpu_read,
	.write = vgpu_write,
	.ioctl = vgpu_ioctl,
	.mmap = vgpu_mmap,
	.request = vgpu_request,
};
