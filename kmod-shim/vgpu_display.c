// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: the display plane (VFIO_DEVICE_QUERY_GFX_PLANE, region planes).
 *
 * Each query of the primary plane with a valid mode copies the scanout from
 * VRAM into the display region (index 9, offset 0): a snapshot, so a mapped
 * display region never aliases VRAM the guest may reuse.
 */
#include <linux/delay.h>
#include <linux/highmem.h>
#include <linux/kernel.h>
#include <linux/moduleparam.h>
#include <linux/uaccess.h>
#include <drm/drm_fourcc.h>
#include <drm/drm_plane.h>

#include "vgpu.h"

/*
 * Test hook, built only with VGPU_TEST_HOOKS (the rig's builds): a plane
 * query sleeps this long before it lets go of the instance's lock, so a test
 * can hold the lock for a known time whatever the host's speed (the 16 MiB
 * copy is the longest legitimate hold; see docs/scheduler.md).
 */
#ifdef VGPU_TEST_HOOKS
static unsigned int vgpu_test_plane_hold_us;
module_param_named(test_plane_hold_us, vgpu_test_plane_hold_us, uint, 0644);
MODULE_PARM_DESC(test_plane_hold_us,
		 "test only: a plane query holds the instance's lock this long");

static void vgpu_test_plane_hold(void)
{
	unsigned int us = READ_ONCE(vgpu_test_plane_hold_us);

	if (us)
		fsleep(us);
}
#else
static void vgpu_test_plane_hold(void)
{
}
#endif

u64 vgpu_display_size(u64 vram_size)
{
	return min_t(u64, vram_size, VGPU_DISPLAY_MAX_SIZE);
}

/*
 * The current mode if the guest has a displayable one (the engine's BLIT
 * uses it too). vg->lock held.
 */
bool vgpu_display_mode(struct vgpu_device *vg, struct vgpu_mode *mode)
{
	const u16 *vbe = vg->dispi;
	u32 virt_width;

	if (!(vbe[VBE_DISPI_INDEX_ENABLE] & VBE_DISPI_ENABLED))
		return false;

	switch (vbe[VBE_DISPI_INDEX_BPP]) {
	case 16:
		mode->drm_format = DRM_FORMAT_RGB565;
		mode->bytepp = 2;
		break;
	case 24:
		mode->drm_format = DRM_FORMAT_RGB888;
		mode->bytepp = 3;
		break;
	case 32:
		mode->drm_format = DRM_FORMAT_XRGB8888;
		mode->bytepp = 4;
		break;
	default:
		return false;
	}

	mode->width = vbe[VBE_DISPI_INDEX_XRES];
	mode->height = vbe[VBE_DISPI_INDEX_YRES];
	if (!mode->width || !mode->height)
		return false;
	virt_width = max_t(u32, vbe[VBE_DISPI_INDEX_VIRT_WIDTH], mode->width);
	mode->stride = virt_width * mode->bytepp;
	mode->size = (u64)mode->stride * mode->height;
	mode->offset = (u64)vbe[VBE_DISPI_INDEX_Y_OFFSET] * mode->stride +
		       (u64)vbe[VBE_DISPI_INDEX_X_OFFSET] * mode->bytepp;

	/* all values are 16-bit products: no u64 overflow possible */
	if (mode->offset > vg->vram_size ||
	    mode->size > vg->vram_size - mode->offset)
		return false;
	if (mode->size > ((u64)vg->disp.npages << PAGE_SHIFT))
		return false;
	return true;
}

/* Copy @size bytes of VRAM at @src to display offset 0. vg->lock held. */
static int vgpu_display_copy(struct vgpu_device *vg, u64 src, u64 size)
{
	u64 dst = 0;

	while (size) {
		size_t soff = src & ~PAGE_MASK;
		size_t doff = dst & ~PAGE_MASK;
		size_t n = min_t(u64, size, PAGE_SIZE - max(soff, doff));
		struct page *spage, *dpage;
		void *dva, *sva;

		dpage = vgpu_page_lookup(vg, &vg->disp, dst >> PAGE_SHIFT,
					 true);
		if (!dpage)
			return -ENOMEM;
		/* Untouched VRAM reads as zero: don't allocate it here. */
		spage = vgpu_page_lookup(vg, &vg->vram, src >> PAGE_SHIFT,
					 false);

		dva = kmap_local_page(dpage);
		if (spage) {
			sva = kmap_local_page(spage);
			memcpy(dva + doff, sva + soff, n);
			kunmap_local(sva);
		} else {
			memset(dva + doff, 0, n);
		}
		kunmap_local(dva);

		src += n;
		dst += n;
		size -= n;
	}
	return 0;
}

static int vgpu_query_plane(struct vgpu_device *vg,
			    struct vfio_device_gfx_plane_info *plane)
{
	struct vgpu_mode mode;
	int ret = 0;

	if (plane->flags & VFIO_GFX_PLANE_TYPE_PROBE) {
		if (plane->flags == (VFIO_GFX_PLANE_TYPE_PROBE |
				     VFIO_GFX_PLANE_TYPE_REGION))
			return 0;
		return -EINVAL;
	}
	if (plane->flags != VFIO_GFX_PLANE_TYPE_REGION)
		return -EINVAL;

	plane->drm_format = 0;
	plane->drm_format_mod = 0;
	plane->width = 0;
	plane->height = 0;
	plane->stride = 0;
	plane->size = 0;
	plane->x_pos = 0;
	plane->y_pos = 0;
	plane->x_hot = 0;
	plane->y_hot = 0;
	plane->region_index = 0;

	/*
	 * Only the cursor plane is "no plane". QEMU's region display leaves
	 * drm_plane_type at 0 (OVERLAY) when it asks for the frame, and the
	 * mdpy sample ignores the field, so anything else means the scanout.
	 */
	if (plane->drm_plane_type == DRM_PLANE_TYPE_CURSOR)
		return 0;

	vgpu_lock(vg);
	if (vgpu_display_mode(vg, &mode)) {
		ret = vgpu_display_copy(vg, mode.offset, mode.size);
		if (!ret) {
			plane->drm_format = mode.drm_format;
			plane->width = mode.width;
			plane->height = mode.height;
			plane->stride = mode.stride;
			plane->size = mode.size;
			plane->region_index = VGPU_DISPLAY_REGION;
		}
	}
	vgpu_test_plane_hold();
	vgpu_unlock(vg);
	return ret;
}

int vgpu_ioctl_query_gfx_plane(struct vgpu_device *vg, void __user *arg)
{
	unsigned long minsz = offsetofend(struct vfio_device_gfx_plane_info,
					  region_index);
	struct vfio_device_gfx_plane_info plane;
	int ret;

	if (copy_from_user(&plane, arg, minsz))
		return -EFAULT;
	if (plane.argsz < minsz)
		return -EINVAL;

	ret = vgpu_query_plane(vg, &plane);
	if (ret)
		return ret;

	return copy_to_user(arg, &plane, minsz) ? -EFAULT : 0;
}
