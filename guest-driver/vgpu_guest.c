// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_guest: the guest side of a vgpu_shim vGPU (PCI 1234:1111, subsystem
 * 1234:5647) inside a VM. Debian's kernels lack CONFIG_VFIO_NOIOMMU, so
 * vfio-pci cannot hand the device to guest userspace; this driver does the
 * little an engine client needs and nothing else (docs/architecture.md):
 *
 *  - a char device /dev/vgpuN per device;
 *  - mmap of BAR n at file offset n << 40 (VFIO's region offsets): BAR0 is
 *    VRAM (write-combining), BAR2 the register file (uncached);
 *  - MSI: each interrupt increments a counter; read() of 8 bytes returns how
 *    many arrived since this file's last read (as an eventfd does), blocking
 *    until at least one did unless O_NONBLOCK; poll() reports POLLIN then.
 *    /proc/interrupts counts them too ("vgpu_guest").
 *
 * The driver knows no register of the device: acknowledging IRQ_STATUS is
 * the client's business (the engine raises MSI when IRQ_STATUS & IRQ_MASK
 * gains a bit; vgpu-engine-abi owns the register map).
 */
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#define VGPU_GUEST_NAME		"vgpu_guest"
/* mmap offset of BAR n: n << 40, as VFIO's region offsets */
#define VGPU_GUEST_BAR_SHIFT	40
#define VGPU_GUEST_VRAM_BAR	0
#define VGPU_GUEST_MMIO_BAR	2

static DEFINE_IDA(vgpu_guest_ida);

struct vgpu_guest {
	struct kref ref;
	struct pci_dev *pdev;
	struct miscdevice misc;
	char name[16];
	int minor_id;
	int irq;
	atomic64_t irqs;
	wait_queue_head_t wq;
	bool gone;
	/*
	 * The device node's mapping, while a file is open (a BAR mmap holds
	 * its file): remove zaps the mmaps through it.
	 */
	struct mutex lock;
	unsigned int opens;
	struct address_space *mapping;
};

struct vgpu_guest_file {
	struct vgpu_guest *gd;
	u64 seen;
};

static void vgpu_guest_free(struct kref *ref)
{
	struct vgpu_guest *gd = container_of(ref, struct vgpu_guest, ref);

	ida_free(&vgpu_guest_ida, gd->minor_id);
	pci_dev_put(gd->pdev);
	kfree(gd);
}

static irqreturn_t vgpu_guest_irq(int irq, void *data)
{
	struct vgpu_guest *gd = data;

	atomic64_inc(&gd->irqs);
	wake_up_interruptible(&gd->wq);
	return IRQ_HANDLED;
}

static int vgpu_guest_open(struct inode *inode, struct file *file)
{
	struct vgpu_guest *gd = container_of(file->private_data,
					     struct vgpu_guest, misc);
	struct vgpu_guest_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	mutex_lock(&gd->lock);
	if (gd->gone) {
		mutex_unlock(&gd->lock);
		kfree(f);
		return -ENODEV;
	}
	kref_get(&gd->ref);
	gd->opens++;
	gd->mapping = file->f_mapping;
	mutex_unlock(&gd->lock);
	f->gd = gd;
	f->seen = atomic64_read(&gd->irqs);
	file->private_data = f;
	return 0;
}

static int vgpu_guest_release(struct inode *inode, struct file *file)
{
	struct vgpu_guest_file *f = file->private_data;
	struct vgpu_guest *gd = f->gd;

	mutex_lock(&gd->lock);
	if (--gd->opens == 0)
		gd->mapping = NULL;
	mutex_unlock(&gd->lock);
	kref_put(&gd->ref, vgpu_guest_free);
	kfree(f);
	return 0;
}

static ssize_t vgpu_guest_read(struct file *file, char __user *buf,
			       size_t len, loff_t *ppos)
{
	struct vgpu_guest_file *f = file->private_data;
	struct vgpu_guest *gd = f->gd;
	u64 n, new;
	int ret;

	if (len < sizeof(n))
		return -EINVAL;
	for (;;) {
		if (READ_ONCE(gd->gone))
			return -ENODEV;
		n = atomic64_read(&gd->irqs);
		if (n != f->seen)
			break;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(gd->wq,
					       atomic64_read(&gd->irqs) != f->seen ||
					       READ_ONCE(gd->gone));
		if (ret)
			return ret;
	}
	new = n - f->seen;
	if (copy_to_user(buf, &new, sizeof(new)))
		return -EFAULT;
	f->seen = n;
	return sizeof(n);
}

static __poll_t vgpu_guest_poll(struct file *file, poll_table *wait)
{
	struct vgpu_guest_file *f = file->private_data;
	struct vgpu_guest *gd = f->gd;

	poll_wait(file, &gd->wq, wait);
	if (READ_ONCE(gd->gone))
		return EPOLLHUP | EPOLLERR;
	if (atomic64_read(&gd->irqs) != f->seen)
		return EPOLLIN | EPOLLRDNORM;
	return 0;
}

static int vgpu_guest_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vgpu_guest_file *f = file->private_data;
	struct pci_dev *pdev = f->gd->pdev;
	unsigned long shift = VGPU_GUEST_BAR_SHIFT - PAGE_SHIFT;
	unsigned long bar = vma->vm_pgoff >> shift;
	unsigned long pgoff = vma->vm_pgoff & ((1UL << shift) - 1);
	unsigned long size = vma->vm_end - vma->vm_start;
	resource_size_t len;

	if (bar != VGPU_GUEST_VRAM_BAR && bar != VGPU_GUEST_MMIO_BAR)
		return -EINVAL;
	if (!(pci_resource_flags(pdev, bar) & IORESOURCE_MEM))
		return -ENODEV;
	len = pci_resource_len(pdev, bar);
	if (pgoff > (len >> PAGE_SHIFT) ||
	    size > len - ((resource_size_t)pgoff << PAGE_SHIFT))
		return -EINVAL;
	if (bar == VGPU_GUEST_VRAM_BAR)
		vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
	else
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	/* io_remap_pfn_range() marks the VMA VM_IO | VM_PFNMAP | VM_DONTEXPAND */
	return io_remap_pfn_range(vma, vma->vm_start,
				  (pci_resource_start(pdev, bar) >> PAGE_SHIFT) + pgoff,
				  size, vma->vm_page_prot);
}

static const struct file_operations vgpu_guest_fops = {
	.owner = THIS_MODULE,
	.open = vgpu_guest_open,
	.release = vgpu_guest_release,
	.read = vgpu_guest_read,
	.poll = vgpu_guest_poll,
	.mmap = vgpu_guest_mmap,
};

static int vgpu_guest_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vgpu_guest *gd;
	int ret;

	gd = kzalloc(sizeof(*gd), GFP_KERNEL);
	if (!gd)
		return -ENOMEM;
	kref_init(&gd->ref);
	mutex_init(&gd->lock);
	init_waitqueue_head(&gd->wq);
	gd->pdev = pci_dev_get(pdev);
	gd->minor_id = ida_alloc(&vgpu_guest_ida, GFP_KERNEL);
	if (gd->minor_id < 0) {
		ret = gd->minor_id;
		pci_dev_put(pdev);
		kfree(gd);
		return ret;
	}

	ret = pci_enable_device(pdev);
	if (ret)
		goto err_put;
	ret = pci_request_regions(pdev, VGPU_GUEST_NAME);
	if (ret)
		goto err_disable;
	pci_set_master(pdev);
	ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI);
	if (ret < 0) {
		dev_err(&pdev->dev, "no MSI vector: %d\n", ret);
		goto err_regions;
	}
	gd->irq = pci_irq_vector(pdev, 0);
	ret = request_irq(gd->irq, vgpu_guest_irq, 0, VGPU_GUEST_NAME, gd);
	if (ret)
		goto err_vectors;

	snprintf(gd->name, sizeof(gd->name), "vgpu%d", gd->minor_id);
	gd->misc.minor = MISC_DYNAMIC_MINOR;
	gd->misc.name = gd->name;
	gd->misc.fops = &vgpu_guest_fops;
	gd->misc.parent = &pdev->dev;
	ret = misc_register(&gd->misc);
	if (ret)
		goto err_irq;
	pci_set_drvdata(pdev, gd);
	dev_info(&pdev->dev, "/dev/%s: VRAM %llu KiB, MSI on IRQ %d\n", gd->name,
		 (u64)pci_resource_len(pdev, VGPU_GUEST_VRAM_BAR) >> 10, gd->irq);
	return 0;

err_irq:
	free_irq(gd->irq, gd);
err_vectors:
	pci_free_irq_vectors(pdev);
err_regions:
	pci_release_regions(pdev);
err_disable:
	pci_disable_device(pdev);
err_put:
	kref_put(&gd->ref, vgpu_guest_free);
	return ret;
}

static void vgpu_guest_remove(struct pci_dev *pdev)
{
	struct vgpu_guest *gd = pci_get_drvdata(pdev);

	misc_deregister(&gd->misc);
	mutex_lock(&gd->lock);
	WRITE_ONCE(gd->gone, true);
	/* userspace keeps no mapping of a device that is gone */
	if (gd->mapping)
		unmap_mapping_range(gd->mapping, 0, 0, 1);
	mutex_unlock(&gd->lock);
	wake_up_interruptible(&gd->wq);
	free_irq(gd->irq, gd);
	pci_free_irq_vectors(pdev);
	pci_release_regions(pdev);
	pci_disable_device(pdev);
	kref_put(&gd->ref, vgpu_guest_free);
}

static const struct pci_device_id vgpu_guest_ids[] = {
	{ PCI_DEVICE_SUB(0x1234, 0x1111, 0x1234, 0x5647) },
	{ }
};
MODULE_DEVICE_TABLE(pci, vgpu_guest_ids);

static struct pci_driver vgpu_guest_driver = {
	.name = VGPU_GUEST_NAME,
	.id_table = vgpu_guest_ids,
	.probe = vgpu_guest_probe,
	.remove = vgpu_guest_remove,
};
module_pci_driver(vgpu_guest_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Guest driver for vgpu_shim vGPUs: BAR mmap and MSI wait for userspace");
