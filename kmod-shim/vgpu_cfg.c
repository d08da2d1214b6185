// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: emulated PCI config space (256 bytes, docs/device-abi.md).
 *
 * Config space is kept as little-endian bytes. Writes go through a per-dword
 * writable-bits mask, which also gives standard BAR sizing: writing
 * all-ones to a BAR stores the size mask, the type bits are read-only.
 * Callers hold vg->lock; offsets and sizes were validated by the caller
 * (1, 2 or 4 bytes, naturally aligned, inside 256 bytes).
 */
#include <linux/kernel.h>
#include <linux/pci_regs.h>
#include <linux/pci_ids.h>

#include "vgpu.h"

/* Little-endian byte access (asm/ vs linux/unaligned.h differs 6.1/6.12) */
static u32 cfg_get32(const u8 *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24;
}

static u16 cfg_get16(const u8 *p)
{
	return p[0] | p[1] << 8;
}

static void cfg_put32(u32 val, u8 *p)
{
	p[0] = val;
	p[1] = val >> 8;
	p[2] = val >> 16;
	p[3] = val >> 24;
}

static void cfg_put16(u16 val, u8 *p)
{
	p[0] = val;
	p[1] = val >> 8;
}

static void vgpu_cfg_update_route(struct vgpu_device *vg);

#define VGPU_CFG_COMMAND_WMASK	(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | \
				 PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE)

void vgpu_cfg_init(struct vgpu_device *vg)
{
	u8 *cfg = vg->config;

	memset(cfg, 0, VGPU_CONFIG_SIZE);
	cfg_put16(VGPU_PCI_VENDOR, cfg + PCI_VENDOR_ID);
	cfg_put16(VGPU_PCI_DEVICE, cfg + PCI_DEVICE_ID);
	cfg_put16(PCI_STATUS_CAP_LIST, cfg + PCI_STATUS);
	cfg[PCI_REVISION_ID] = VGPU_PCI_REVISION;
	cfg[PCI_CLASS_PROG] = 0;
	cfg_put16(PCI_CLASS_DISPLAY_OTHER, cfg + PCI_CLASS_DEVICE);
	cfg[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;

	/* BAR0+BAR1: VRAM, 64-bit prefetchable; BAR2: MMIO, 32-bit */
	cfg_put32(PCI_BASE_ADDRESS_SPACE_MEMORY |
			   PCI_BASE_ADDRESS_MEM_TYPE_64 |
			   PCI_BASE_ADDRESS_MEM_PREFETCH,
			   cfg + PCI_BASE_ADDRESS_0);
	cfg_put32(PCI_BASE_ADDRESS_SPACE_MEMORY |
			   PCI_BASE_ADDRESS_MEM_TYPE_32,
			   cfg + PCI_BASE_ADDRESS_2);
	vg->bar0_mask = ~(vg->vram_size - 1);

	cfg_put16(VGPU_PCI_SUBVENDOR, cfg + PCI_SUBSYSTEM_VENDOR_ID);
	cfg_put16(VGPU_PCI_SUBDEVICE, cfg + PCI_SUBSYSTEM_ID);
	cfg[PCI_CAPABILITY_LIST] = VGPU_CFG_MSI;
	cfg[PCI_INTERRUPT_PIN] = 1;	/* INTA */

	/* MSI: 64-bit address, one vector, last capability */
	cfg[VGPU_CFG_MSI + PCI_CAP_LIST_ID] = PCI_CAP_ID_MSI;
	cfg[VGPU_CFG_MSI + PCI_CAP_LIST_NEXT] = 0;
	cfg_put16(PCI_MSI_FLAGS_64BIT,
			   cfg + VGPU_CFG_MSI + PCI_MSI_FLAGS);
	vgpu_cfg_update_route(vg);
}

/* Device reset: command register and MSI enable back to 0. */
void vgpu_cfg_reset(struct vgpu_device *vg)
{
	u8 *flags = vg->config + VGPU_CFG_MSI + PCI_MSI_FLAGS;

	cfg_put16(0, vg->config + PCI_COMMAND);
	cfg_put16(cfg_get16(flags) & ~PCI_MSI_FLAGS_ENABLE,
			   flags);
	vgpu_cfg_update_route(vg);
}

/* Writable bits of the dword at @reg (4-byte aligned). */
static u32 vgpu_cfg_wmask(struct vgpu_device *vg, unsigned int reg)
{
	switch (reg) {
	case PCI_COMMAND:
		return VGPU_CFG_COMMAND_WMASK;	/* status: read-only */
	case PCI_BASE_ADDRESS_0:
		return lower_32_bits(vg->bar0_mask) & PCI_BASE_ADDRESS_MEM_MASK;
	case PCI_BASE_ADDRESS_1:
		return upper_32_bits(vg->bar0_mask);
	case PCI_BASE_ADDRESS_2:
		return ~(u32)(VGPU_MMIO_SIZE - 1);
	case PCI_INTERRUPT_LINE:
		return 0xff;			/* pin: read-only */
	case VGPU_CFG_MSI:
		return (u32)PCI_MSI_FLAGS_ENABLE << 16;
	case VGPU_CFG_MSI + PCI_MSI_ADDRESS_LO:
		return 0xfffffffc;
	case VGPU_CFG_MSI + PCI_MSI_ADDRESS_HI:
		return 0xffffffff;
	case VGPU_CFG_MSI + PCI_MSI_DATA_64:
		return 0x0000ffff;
	default:
		/* BAR3-5, ROM and everything else: read-only */
		return 0;
	}
}

static u32 vgpu_size_mask(unsigned int size)
{
	return size >= 4 ? 0xffffffff : (1U << (size * 8)) - 1;
}

u32 vgpu_cfg_read(struct vgpu_device *vg, unsigned int off, unsigned int size)
{
	unsigned int reg = off & ~3U;
	unsigned int shift = (off & 3) * 8;

	return (cfg_get32(vg->config + reg) >> shift) &
	       vgpu_size_mask(size);
}

void vgpu_cfg_write(struct vgpu_device *vg, unsigned int off,
		    unsigned int size, u32 val)
{
	unsigned int reg = off & ~3U;
	unsigned int shift = (off & 3) * 8;
	u32 mask = vgpu_cfg_wmask(vg, reg) & (vgpu_size_mask(size) << shift);
	u32 old = cfg_get32(vg->config + reg);

	if (!mask)
		return;
	cfg_put32((old & ~mask) | ((val << shift) & mask),
			   vg->config + reg);
	vgpu_cfg_update_route(vg);
}

/*
 * Where a device interrupt goes: MSI if the guest enabled it, else INTx
 * unless the command register disables it; -1 for nowhere. Kept up to date
 * by every config write, so the engine reads it without vg->lock.
 */
int vgpu_cfg_irq_index(struct vgpu_device *vg)
{
	return READ_ONCE(vg->irq_route);
}

static void vgpu_cfg_update_route(struct vgpu_device *vg)
{
	const u8 *cfg = vg->config;
	int route = -1;

	if (cfg_get16(cfg + VGPU_CFG_MSI + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_ENABLE)
		route = VFIO_PCI_MSI_IRQ_INDEX;
	else if (!(cfg_get16(cfg + PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE))
		route = VFIO_PCI_INTX_IRQ_INDEX;
	WRITE_ONCE(vg->irq_route, route);
}
