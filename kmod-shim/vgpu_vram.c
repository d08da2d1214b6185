// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: VRAM (region 0) and display (region 9) pages.
 *
 * Both are arrays of page pointers, populated on first touch (mmap fault,
 * pread, pwrite, the engine, a display query) with explicitly zeroed pages:
 * a tenant never sees another tenant's data, whatever init_on_alloc says.
 * pread/pwrite at region offset o and an mmap at region offset o address
 * the same byte.
 *
 * Host memory (docs/operator-guide.md): pages are charged to a memory
 * cgroup (__GFP_ACCOUNT): the cgroup of the task that touches them (the
 * VMM faulting, reading or writing), or, for the engine's kthread, the
 * cgroup of the process that opened the device (set_active_memcg() around
 * a chunk). The page arrays are charged to the creator. Every page is
 * freed at the last close of the device (vgpu_close_device()): VFIO calls
 * it once no fd and no mapping is left, so nothing can reach the pages
 * any more, and the next user starts from nothing.
 */
#include <linux/highmem.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>

#include "vgpu.h"

/* Page array entries looked at under one hold of vg->lock when freeing. */
#define VGPU_FREE_BATCH		512

static atomic_long_t *vgpu_pages_counter(struct vgpu_device *vg,
					 struct vgpu_pages *set)
{
	return set->is_vram ? &vg->parent->vram_pages :
			      &vg->parent->disp_pages;
}

int vgpu_pages_init(struct vgpu_pages *set, u64 size, bool is_vram)
{
	set->npages = size >> PAGE_SHIFT;
	atomic_long_set(&set->used, 0);
	set->is_vram = is_vram;
	set->pages = kvcalloc(set->npages, sizeof(*set->pages),
			      GFP_KERNEL_ACCOUNT);
	return set->pages ? 0 : -ENOMEM;
}

/*
 * Free every page of @set (the array stays). Only when nothing can touch
 * them: at the last close (no fd, no mapping, the engine reset) or at
 * release. A 4 GiB set is a million entries: they are freed in batches
 * under vg->lock (sysfs reads `used`), rescheduling in between.
 */
void vgpu_pages_free(struct vgpu_device *vg, struct vgpu_pages *set)
{
	unsigned long i = 0;

	while (i < set->npages) {
		unsigned long end = min(set->npages, i + VGPU_FREE_BATCH);
		unsigned long freed = 0;
		bool done;

		vgpu_lock(vg);
		for (; i < end && atomic_long_read(&set->used) > freed; i++) {
			if (!set->pages[i])
				continue;
			put_page(set->pages[i]);
			set->pages[i] = NULL;
			freed++;
		}
		done = !atomic_long_sub_return(freed, &set->used);
		vgpu_unlock(vg);
		atomic_long_sub(freed, &vgpu_pages_outstanding);
		atomic_long_sub(freed, vgpu_pages_counter(vg, set));
		if (done)
			break;
		cond_resched();
	}
}

/* Frees every page and the array; the device is gone. */
void vgpu_pages_fini(struct vgpu_device *vg, struct vgpu_pages *set)
{
	if (!set->pages)
		return;
	vgpu_pages_free(vg, set);
	kvfree(set->pages);
	set->pages = NULL;
}

/*
 * The page at @idx (bounds-checked by the caller), allocated if @alloc and
 * still missing; NULL if absent (or out of memory). A new page is
 * published with cmpxchg(), so two first touches of one page (the engine
 * under vg->lock, the external executor's fault without it) end with one
 * page; pages only go away at the last close, when nothing can look.
 */
static struct page *vgpu_page_find(struct vgpu_device *vg,
				   struct vgpu_pages *set, unsigned long idx,
				   bool alloc)
{
	struct page *page, *old;

	if (WARN_ON_ONCE(idx >= set->npages))
		return NULL;
	page = READ_ONCE(set->pages[idx]);
	if (page || !alloc)
		return page;

	/*
	 * Explicit __GFP_ZERO: never rely on init_on_alloc. __GFP_ACCOUNT:
	 * charged to the current task's memory cgroup, or to the active one
	 * the engine or the executor's fault sets (the opener's).
	 */
	page = alloc_page(GFP_HIGHUSER | __GFP_ZERO | __GFP_ACCOUNT);
	if (!page)
		return NULL;
	/* full barrier: the zeroes are visible before the pointer */
	old = cmpxchg(&set->pages[idx], NULL, page);
	if (old) {
		__free_page(page);
		return old;
	}
	atomic_long_inc(&set->used);
	atomic_long_inc(&vgpu_pages_outstanding);
	atomic_long_inc(vgpu_pages_counter(vg, set));
	return page;
}

/* As vgpu_page_find(), for callers that hold vg->lock. */
struct page *vgpu_page_lookup(struct vgpu_device *vg, struct vgpu_pages *set,
			      unsigned long idx, bool alloc)
{
	lockdep_assert_held(&vg->lock);
	return vgpu_page_find(vg, set, idx, alloc);
}

/*
 * The page at @idx, allocated if missing and charged to the opener's
 * memory cgroup, with a reference; without vg->lock, for the external
 * executor's fault (vgpu_exec.c), which holds the parent's exec.lock:
 * the device is open and its pages stay until vgpu_exec_close_instance().
 */
struct page *vgpu_page_get_unlocked(struct vgpu_device *vg,
				    struct vgpu_pages *set, unsigned long idx)
{
	struct mem_cgroup *memcg = READ_ONCE(vg->memcg), *old;
	struct page *page;

	old = set_active_memcg(memcg);
	page = vgpu_page_find(vg, set, idx, true);
	set_active_memcg(old);
	if (page)
		get_page(page);
	return page;
}

/*
 * The little-endian u32 at VRAM @off (4-aligned, inside VRAM: checked by
 * the caller), without vg->lock and without allocating: 0 while its page
 * is absent. For the engine's TAIL shadow, read at a doorbell under
 * eng.lock (vgpu_engine.c); the device is open, so its pages stay.
 */
u32 vgpu_vram_peek32(struct vgpu_device *vg, u64 off)
{
	struct page *page = vgpu_page_find(vg, &vg->vram, off >> PAGE_SHIFT,
					   false);
	const __le32 *p;
	u32 v;

	if (!page)
		return 0;
	p = kmap_local_page(page) + offset_in_page(off);
	v = le32_to_cpu(READ_ONCE(*p));
	kunmap_local(p);
	return v;
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

/* ---- parent sysfs: display pages (vram_pages is vgpu_main.c's) ---- */

static ssize_t display_pages_show(struct device *dev,
				  struct device_attribute *attr, char *buf)
{
	struct vgpu_parent *parent = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%ld\n", atomic_long_read(&parent->disp_pages));
}

struct device_attribute vgpu_attr_display_pages = __ATTR_RO(display_pages);
