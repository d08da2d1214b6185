// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: BAR2 MMIO registers (4 KiB, docs/device-abi.md): EDID (none),
 * VGA ioports (not emulated), bochs DISPI, QEMU extended registers and the
 * vgpu info block. The engine block (0x900-0x9ff) is vgpu_engine.c's and
 * is accessed without vg->lock (see vgpu_reg_rw()).
 *
 * Callers hold vg->lock and pass a naturally aligned 1, 2 or 4 byte access
 * inside the BAR, so an access never crosses a dword.
 */
#include <linux/kernel.h>

#include "vgpu.h"

#define VGPU_QEXT_SIZE		0x600	/* size of the extended regs: 8 */
#define VGPU_QEXT_ENDIAN	0x604
#define VGPU_QEXT_LITTLE_ENDIAN	0x1e1e1e1e

void vgpu_dispi_reset(struct vgpu_device *vg)
{
	memset(vg->dispi, 0, sizeof(vg->dispi));
	vg->dispi[VBE_DISPI_INDEX_ID] = VBE_DISPI_ID5;
}

static u16 vgpu_dispi_read(struct vgpu_device *vg, unsigned int idx)
{
	bool getcaps = vg->dispi[VBE_DISPI_INDEX_ENABLE] & VBE_DISPI_GETCAPS;

	switch (idx) {
	case VBE_DISPI_INDEX_ID:
		return VBE_DISPI_ID5;
	case VBE_DISPI_INDEX_XRES:
		return getcaps ? VBE_DISPI_MAX_XRES : vg->dispi[idx];
	case VBE_DISPI_INDEX_YRES:
		return getcaps ? VBE_DISPI_MAX_YRES : vg->dispi[idx];
	case VBE_DISPI_INDEX_BPP:
		return getcaps ? VBE_DISPI_MAX_BPP : vg->dispi[idx];
	case VBE_DISPI_INDEX_VIDEO_MEMORY_64K:
		return min_t(u64, vg->vram_size / SZ_64K, 0xffff);
	default:
		return idx < VBE_DISPI_INDEX_COUNT ? vg->dispi[idx] : 0;
	}
}

/* @val is the new 16-bit value, already merged for byte writes. */
static void vgpu_dispi_write(struct vgpu_device *vg, unsigned int idx, u16 val)
{
	switch (idx) {
	case VBE_DISPI_INDEX_ID:
	case VBE_DISPI_INDEX_VIDEO_MEMORY_64K:
		break;				/* read-only */
	case VBE_DISPI_INDEX_BPP:
		if (val == 8 || val == 15 || val == 16 || val == 24 ||
		    val == 32)
			vg->dispi[idx] = val;
		break;
	default:
		if (idx < VBE_DISPI_INDEX_COUNT)
			vg->dispi[idx] = val;
		break;
	}
}

static u32 vgpu_info_read(struct vgpu_device *vg, unsigned int reg)
{
	switch (reg) {
	case VGPU_REG_ID:
		return VGPU_ID_MAGIC;
	case VGPU_REG_VERSION:
		return VGPU_ABI_VERSION;
	case VGPU_REG_VRAM_SIZE_LO:
		return lower_32_bits(vg->vram_size);
	case VGPU_REG_VRAM_SIZE_HI:
		return upper_32_bits(vg->vram_size);
	case VGPU_REG_VRAM_MB:
		return vg->type->vram_mb;
	case VGPU_REG_VRAM_USED_KB:
		return atomic_long_read(&vg->vram.used) * (PAGE_SIZE / 1024);
	case VGPU_REG_WEIGHT:
		return READ_ONCE(vg->weight);	/* set under the sched lock */
	case VGPU_REG_CAP:
		return READ_ONCE(vg->cap);
	case VGPU_REG_PARENT_INDEX:
		return vg->parent->index;
	default:
		return 0;
	}
}

/* The dword at 4-byte aligned @reg, as a read sees it. */
static u32 vgpu_mmio_read_dword(struct vgpu_device *vg, unsigned int reg)
{
	unsigned int idx;

	switch (reg) {
	case VGPU_MMIO_DISPI ... VGPU_MMIO_DISPI + 2 * VBE_DISPI_INDEX_COUNT - 1:
		idx = (reg - VGPU_MMIO_DISPI) / 2;
		return vgpu_dispi_read(vg, idx) |
		       (u32)vgpu_dispi_read(vg, idx + 1) << 16;
	case VGPU_QEXT_SIZE:
		return 8;
	case VGPU_QEXT_ENDIAN:
		return VGPU_QEXT_LITTLE_ENDIAN;
	case VGPU_MMIO_INFO ... VGPU_MMIO_ENGINE - 1:
		return vgpu_info_read(vg, reg);
	case VGPU_MMIO_ENGINE ... VGPU_MMIO_ENGINE_END - 1:
		/* vgpu_reg_rw() sends these to the engine, without vg->lock */
		return 0;
	default:
		/* EDID (none), VGA ioports (not emulated), holes */
		return 0;
	}
}

u32 vgpu_mmio_read(struct vgpu_device *vg, unsigned int off,
		   unsigned int size)
{
	u32 val = vgpu_mmio_read_dword(vg, off & ~3U) >> ((off & 3) * 8);

	return size >= 4 ? val : val & ((1U << (size * 8)) - 1);
}

void vgpu_mmio_write(struct vgpu_device *vg, unsigned int off,
		     unsigned int size, u32 val)
{
	unsigned int idx, shift;
	u16 mask;

	switch (off) {
	case VGPU_MMIO_DISPI ... VGPU_MMIO_DISPI + 2 * VBE_DISPI_INDEX_COUNT - 1:
		idx = (off - VGPU_MMIO_DISPI) / 2;
		if (size == 4) {
			vgpu_dispi_write(vg, idx, val & 0xffff);
			vgpu_dispi_write(vg, idx + 1, val >> 16);
		} else if (size == 2) {
			vgpu_dispi_write(vg, idx, val);
		} else if (idx < VBE_DISPI_INDEX_COUNT) {
			/* byte write: merge into the stored register */
			shift = (off & 1) * 8;
			mask = 0xff << shift;
			vgpu_dispi_write(vg, idx, (vg->dispi[idx] & ~mask) |
					 ((val << shift) & mask));
		}
		break;
	case VGPU_MMIO_ENGINE ... VGPU_MMIO_ENGINE_END - 1:
		/* vgpu_reg_rw() sends these to the engine, without vg->lock */
		break;
	default:
		/* EDID, VGA ioports, QEMU ext and info block: read-only */
		break;
	}
}
