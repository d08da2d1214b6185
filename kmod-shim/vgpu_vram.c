// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: VRAM (region 0) and display (region 9) pages.
 *
 * Both are arrays of page pointers, populated on first touch (mmap fault,
 * pread or pwrite) with explicitly zeroed pages: a tenant never sees
 * another tenant's data, whatever init_on_alloc says. pread/pwrite at
 * region offset o and an mmap at region offset o address the same byte.
 */
#include <linux/highmem.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "vgpu.h"

int vgpu_pages_init(struct vgpu_pages *set, u64 size, bool is_vram)
{
	set->npages = size >> PAGE_SHIFT;
	set->used = 0;
	set->is_vram = is_vram;
	set->pages = kvcalloc(set->npages, sizeof(*set->pages), GFP_KERNEL);
	return set->pages ? 0 : -ENOMEM;
}

/* Frees every page; the device is gone, so nothing else can touch them. */
void vgpu_pages_fini(struct vgpu_device *vg, struct vgpu_pages *set)
{
	unsigned long i, freed = 0;

	if (!set->pages)
		return;
	for (i = 0; i < set->npages; i++) {
		if (!set->pages[i])
			continue;
		put_page(set->pages[i]);
		set->pages[i] = NULL;
		freed++;
	}
	atomic_long_sub(freed, &vgpu_pages_outstanding);
	if (set->is_vram)
		atomic_long_sub(freed, &vg->parent->vram_pages);
	set->used = 0;
	kvfree(set->pages);
	set->pages = NULL;
}

/*
 * The page at @idx (which the caller bounds-checked), allocated if @alloc
 * and still missing; NULL if absent (or out of memory). vg->lock held.
 */
struct page *vgpu_page_lookup(struct vgpu_device *vg, struct vgpu_pages *set,
			      unsigned long idx, bool alloc)
{
	struct page *page;

	lockdep_assert_held(&vg->lock);
	if (WARN_ON_ONCE(idx >= set->npages))
		return NULL;
	page = set->pages[idx];
	if (page || !alloc)
		return page;

	/* Explicit __GFP_ZERO: never rely on init_on_alloc. */
	page = alloc_page(GFP_HIGHUSER | __GFP_ZERO);
	if (!page)
		return NULL;
	set->pages[idx] = page;
	set->used++;
	atomic_long_inc(&vgpu_pages_outstanding);
	if (set->is_vram)
		atomic_long_inc(&vg->parent->vram_pages);
	return page;
}

/* The page at @idx with a reference the caller drops with put_page(). */
static struct page *vgpu_page_get(struct vgpu_device *vg,
				  struct vgpu_pages *set, unsigned long idx)
{
	struct page *page;

	vgpu_lock(vg);
	page = vgpu_page_lookup(vg, set, idx, true);
	if (page)
		get_page(page);
	vgpu_unlock(vg);
	return page;
}

/*
 * pread/pwrite of a page set, any size and alignment. Short at the end of
 * the region, -EINVAL at or past it. The lock is not held across the user
 * copy (the user buffer may be an mmap of this very region); the page
 * reference keeps the page alive meanwhile.
 */
ssize_t vgpu_pages_rw(struct vgpu_device *vg, struct vgpu_pages *set,
		      char __user *buf, size_t count, u64 off, bool write)
{
	u64 size = (u64)set->npages << PAGE_SHIFT;
	size_t done = 0;

	if (off >= size)
		return -EINVAL;
	count = min_t(u64, count, size - off);

	while (done < count) {
		u64 pos = off + done;
		size_t poff = pos & ~PAGE_MASK;
		size_t n = min_t(size_t, count - done, PAGE_SIZE - poff);
		struct page *page;
		unsigned long left;
		void *va;

		page = vgpu_page_get(vg, set, pos >> PAGE_SHIFT);
		if (!page)
			return done ? done : -ENOMEM;
		va = kmap_local_page(page);
		if (write)
			left = copy_from_user(va + poff, buf + done, n);
		else
			left = copy_to_user(buf + done, va + poff, n);
		kunmap_local(va);
		put_page(page);
		done += n - left;
		if (left)
			return done ? done : -EFAULT;
		if (fatal_signal_pending(current))
			return done;
		cond_resched();
	}
	return done;
}

/* ---- mmap ---- */

static vm_fault_t vgpu_fault(struct vm_fault *vmf, struct vgpu_pages *set)
{
	struct vgpu_device *vg = vmf->vma->vm_private_data;
	unsigned long idx = vmf->pgoff & VGPU_REGION_PGMASK;
	struct page *page;

	if (idx >= set->npages)
		return VM_FAULT_SIGBUS;
	page = vgpu_page_get(vg, set, idx);
	if (!page)
		return VM_FAULT_OOM;
	vmf->page = page;
	return 0;
}

static vm_fault_t vgpu_vram_fault(struct vm_fault *vmf)
{
	struct vgpu_device *vg = vmf->vma->vm_private_data;

	return vgpu_fault(vmf, &vg->vram);
}

static vm_fault_t vgpu_disp_fault(struct vm_fault *vmf)
{
	struct vgpu_device *vg = vmf->vma->vm_private_data;

	return vgpu_fault(vmf, &vg->disp);
}

static const struct vm_operations_struct vgpu_vram_vm_ops = {
	.fault = vgpu_vram_fault,
};

static const struct vm_operations_struct vgpu_disp_vm_ops = {
	.fault = vgpu_disp_fault,
};

int vgpu_mmap(struct vfio_device *vdev, struct vm_area_struct *vma)
{
	struct vgpu_device *vg = to_vgpu(vdev);
	u64 index = (u64)vma->vm_pgoff >> (VGPU_REGION_SHIFT - PAGE_SHIFT);
	unsigned long pgoff = vma->vm_pgoff & VGPU_REGION_PGMASK;
	unsigned long npages = vma_pages(vma);
	const struct vm_operations_struct *ops;
	struct vgpu_pages *set;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;

	switch (index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		set = &vg->vram;
		ops = &vgpu_vram_vm_ops;
		break;
	case VGPU_DISPLAY_REGION:
		/* read-only region: no writable mapping, now or later */
		if (vma->vm_flags & VM_WRITE)
			return -EINVAL;
		vgpu_vm_flags_clear(vma, VM_MAYWRITE);
		set = &vg->disp;
		ops = &vgpu_disp_vm_ops;
		break;
	default:
		return -EINVAL;
	}

	if (!npages || pgoff >= set->npages || npages > set->npages - pgoff)
		return -EINVAL;

	vgpu_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = ops;
	vma->vm_private_data = vg;
	return 0;
}
