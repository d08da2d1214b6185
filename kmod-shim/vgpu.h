/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vgpu_shim: shared definitions.
 *
 * The device ABI implemented here is specified in docs/device-abi.md.
 */
#ifndef VGPU_SHIM_H
#define VGPU_SHIM_H

#include <linux/atomic.h>
#include <linux/device.h>
#include <linux/mdev.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/sizes.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/version.h>
#include <linux/vfio.h>

#define VGPU_NAME		"vgpu_shim"
#define VGPU_ABI_VERSION	0x00010000	/* major 1, minor 0 */

#define VGPU_MAX_PARENTS	8
#define VGPU_NUM_TYPES		6
#define VGPU_POOL_MIN_MB	64
#define VGPU_POOL_MAX_MB	1048576

/* VFIO region layout: file offset = index << 40 */
#define VGPU_REGION_SHIFT	40
#define VGPU_REGION_OFFSET(i)	((u64)(i) << VGPU_REGION_SHIFT)
#define VGPU_REGION_MASK	(VGPU_REGION_OFFSET(1) - 1)
#define VGPU_REGION_PGMASK	(VGPU_REGION_MASK >> PAGE_SHIFT)
#define VGPU_DISPLAY_REGION	VFIO_PCI_NUM_REGIONS		/* 9 */
#define VGPU_NUM_REGIONS	(VGPU_DISPLAY_REGION + 1)
#define VGPU_DISPLAY_MAX_SIZE	SZ_16M
#define VGPU_DISPLAY_REGION_TYPE \
	(VFIO_REGION_TYPE_PCI_VENDOR_TYPE | VGPU_PCI_VENDOR)
#define VGPU_DISPLAY_REGION_SUBTYPE 1

/* PCI identity and config space */
#define VGPU_PCI_VENDOR		0x1234
#define VGPU_PCI_DEVICE		0x1111
#define VGPU_PCI_SUBVENDOR	0x1234
#define VGPU_PCI_SUBDEVICE	0x5647
#define VGPU_PCI_REVISION	0x01
#define VGPU_CONFIG_SIZE	256
#define VGPU_CFG_MSI		0x40

/* BAR2 MMIO layout */
#define VGPU_MMIO_SIZE		4096
#define VGPU_MMIO_EDID		0x000	/* ..0x3ff, reads 0 */
#define VGPU_MMIO_VGA		0x400	/* ..0x41f, not emulated */
#define VGPU_MMIO_DISPI		0x500	/* ..0x515 */
#define VGPU_MMIO_QEXT		0x600	/* ..0x607 */
#define VGPU_MMIO_INFO		0x800	/* ..0x8ff */
#define VGPU_MMIO_ENGINE	0x900	/* ..0x9ff, the engine block */
#define VGPU_MMIO_ENGINE_END	0xa00

/* vgpu info block registers (offsets into BAR2) */
#define VGPU_REG_ID		0x800
#define VGPU_REG_VERSION	0x804
#define VGPU_REG_VRAM_SIZE_LO	0x808
#define VGPU_REG_VRAM_SIZE_HI	0x80c
#define VGPU_REG_VRAM_MB	0x810
#define VGPU_REG_VRAM_USED_KB	0x814
#define VGPU_REG_WEIGHT		0x818
#define VGPU_REG_CAP		0x81c
#define VGPU_REG_PARENT_INDEX	0x820
#define VGPU_ID_MAGIC		0x55504756	/* "VGPU" */

/* bochs DISPI (VBE) registers, index i at VGPU_MMIO_DISPI + 2 * i */
enum vgpu_dispi_index {
	VBE_DISPI_INDEX_ID = 0,
	VBE_DISPI_INDEX_XRES,
	VBE_DISPI_INDEX_YRES,
	VBE_DISPI_INDEX_BPP,
	VBE_DISPI_INDEX_ENABLE,
	VBE_DISPI_INDEX_BANK,
	VBE_DISPI_INDEX_VIRT_WIDTH,
	VBE_DISPI_INDEX_VIRT_HEIGHT,
	VBE_DISPI_INDEX_X_OFFSET,
	VBE_DISPI_INDEX_Y_OFFSET,
	VBE_DISPI_INDEX_VIDEO_MEMORY_64K,
	VBE_DISPI_INDEX_COUNT,
};

#define VBE_DISPI_ID5		0xB0C5
#define VBE_DISPI_ENABLED	0x01
#define VBE_DISPI_GETCAPS	0x02
#define VBE_DISPI_LFB_ENABLED	0x40
#define VBE_DISPI_NOCLEARMEM	0x80
#define VBE_DISPI_MAX_XRES	2560
#define VBE_DISPI_MAX_YRES	1600
#define VBE_DISPI_MAX_BPP	32

struct vgpu_parent;

/* One vGPU type of one parent (each parent owns its mdev_type objects). */
struct vgpu_type {
	struct mdev_type type;
	unsigned int vram_mb;
	unsigned int weight;
};

/* One parent ("engine"): an mdev parent device with its own VRAM pool. */
struct vgpu_parent {
	struct device dev;
	struct mdev_parent mdev_parent;
	unsigned int index;

	struct mutex pool_lock;		/* protects pool_mb and reserved_mb */
	unsigned int pool_mb;
	unsigned int reserved_mb;

	atomic_long_t vram_pages;	/* VRAM pages of all its instances */

	struct vgpu_type types[VGPU_NUM_TYPES];
	struct mdev_type *type_ptrs[VGPU_NUM_TYPES];
};

/* A lazily populated set of pages (VRAM, or the display region). */
struct vgpu_pages {
	struct page **pages;
	unsigned long npages;
	unsigned long used;		/* allocated pages, under vgpu->lock */
	bool is_vram;			/* counted in the parent's vram_pages */
};

/* One instance: an emulated PCI vGPU behind a VFIO device. */
struct vgpu_device {
	struct vfio_device vdev;	/* first: vfio_alloc_device() */
	struct vgpu_parent *parent;
	const struct vgpu_type *type;
	u64 vram_size;

	/*
	 * Protects config space, DISPI registers, both page sets, weight and
	 * cap. Never held across copy_{to,from}_user(): the user buffer may be
	 * an mmap of this device whose fault handler takes the lock.
	 */
	struct mutex lock;
	u8 config[VGPU_CONFIG_SIZE];
	u64 bar0_mask;
	u16 dispi[VBE_DISPI_INDEX_COUNT];
	struct vgpu_pages vram;
	struct vgpu_pages disp;
	unsigned int weight;		/* 1..100, scheduler share */
	unsigned int cap;		/* 0..100 % of one engine, 0 = none */

	spinlock_t irq_lock;		/* protects the irq state below */
	struct eventfd_ctx *irq_trigger[VFIO_PCI_NUM_IRQS];
	bool intx_masked;
	bool intx_pending;
	bool req_logged;
};

static inline struct vgpu_device *to_vgpu(struct vfio_device *vdev)
{
	return container_of(vdev, struct vgpu_device, vdev);
}

/* ---- kernel version glue (6.1 .. 6.12) ---- */

static inline void vgpu_vm_flags_set(struct vm_area_struct *vma,
				     vm_flags_t flags)
{
#if KERNEL_VERSION(6, 3, 0) <= LINUX_VERSION_CODE
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

static inline void vgpu_vm_flags_clear(struct vm_area_struct *vma,
				       vm_flags_t flags)
{
#if KERNEL_VERSION(6, 3, 0) <= LINUX_VERSION_CODE
	vm_flags_clear(vma, flags);
#else
	vma->vm_flags &= ~flags;
#endif
}

/* ---- vgpu_main.c ---- */
extern atomic_long_t vgpu_pages_outstanding;
extern const struct attribute_group *vgpu_mdev_groups[];
int vgpu_pool_reserve(struct vgpu_parent *parent, unsigned int mb);
void vgpu_pool_release(struct vgpu_parent *parent, unsigned int mb);
int vgpu_parse_uint(const char *buf, size_t count, unsigned int min,
		    unsigned int max, unsigned int *out);

/* ---- vgpu_dev.c ---- */
extern const struct vfio_device_ops vgpu_dev_ops;
void vgpu_device_reset(struct vgpu_device *vg);

/* ---- vgpu_cfg.c: PCI config space (vg->lock held) ---- */
void vgpu_cfg_init(struct vgpu_device *vg);
void vgpu_cfg_reset(struct vgpu_device *vg);
u32 vgpu_cfg_read(struct vgpu_device *vg, unsigned int off, unsigned int size);
void vgpu_cfg_write(struct vgpu_device *vg, unsigned int off,
		    unsigned int size, u32 val);

/* ---- vgpu_mmio.c: BAR2 registers (vg->lock held) ---- */
void vgpu_dispi_reset(struct vgpu_device *vg);
u32 vgpu_mmio_read(struct vgpu_device *vg, unsigned int off,
		   unsigned int size);
void vgpu_mmio_write(struct vgpu_device *vg, unsigned int off,
		     unsigned int size, u32 val);

/* ---- vgpu_vram.c: VRAM and display pages ---- */
int vgpu_pages_init(struct vgpu_pages *set, u64 size, bool is_vram);
void vgpu_pages_fini(struct vgpu_device *vg, struct vgpu_pages *set);
struct page *vgpu_page_lookup(struct vgpu_device *vg, struct vgpu_pages *set,
			      unsigned long idx, bool alloc);
ssize_t vgpu_pages_rw(struct vgpu_device *vg, struct vgpu_pages *set,
		      char __user *buf, size_t count, u64 off, bool write);
int vgpu_mmap(struct vfio_device *vdev, struct vm_area_struct *vma);

/* ---- vgpu_irq.c: interrupts ---- */
int vgpu_ioctl_get_irq_info(struct vgpu_device *vg, void __user *arg);
int vgpu_ioctl_set_irqs(struct vgpu_device *vg, void __user *arg);
void vgpu_irq_raise(struct vgpu_device *vg, unsigned int index);
void vgpu_irq_release_all(struct vgpu_device *vg);
void vgpu_request(struct vfio_device *vdev, unsigned int count);

/* ---- vgpu_display.c: display plane ---- */
u64 vgpu_display_size(u64 vram_size);
int vgpu_ioctl_query_gfx_plane(struct vgpu_device *vg, void __user *arg);

#endif /* VGPU_SHIM_H */
