// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_shim: an mdev (VFIO mediated device) vendor driver emulating one
 * PCI vGPU per instance.
 *
 * This file: module parameters, parents (one mdev parent per engine, each
 * with its own VRAM pool and its own vGPU types), admission, the mdev
 * driver and the sysfs attributes of parents and instances.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ctype.h>
#include <linux/err.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include "vgpu.h"

static unsigned int vgpu_nr_parents = 1;
module_param_named(parents, vgpu_nr_parents, uint, 0444);
MODULE_PARM_DESC(parents, "number of parents (engines), 1-8 (default 1)");

static unsigned int vgpu_pool_mb_param = 1024;
module_param_named(pool_mb, vgpu_pool_mb_param, uint, 0444);
MODULE_PARM_DESC(pool_mb,
		 "VRAM pool of each parent in MiB, 64-1048576 (default 1024)");

unsigned int vgpu_nr_engines = 1;
module_param_named(engines, vgpu_nr_engines, uint, 0444);
MODULE_PARM_DESC(engines,
		 "engine worker threads of each parent, 1-8 (default 1)");

/* Every page the module holds (VRAM and display), for the unload check. */
atomic_long_t vgpu_pages_outstanding = ATOMIC_LONG_INIT(0);

static const struct {
	const char *sysfs_name;
	const char *pretty_name;
	unsigned int vram_mb;
	unsigned int weight;
} vgpu_type_table[VGPU_NUM_TYPES] = {
	{ "128M", "vgpu 128M",  128,  1 },
	{ "256M", "vgpu 256M",  256,  1 },
	{ "512M", "vgpu 512M",  512,  2 },
	{ "1G",   "vgpu 1G",   1024,  4 },
	{ "2G",   "vgpu 2G",   2048,  8 },
	{ "4G",   "vgpu 4G",   4096, 16 },
};

static struct class *vgpu_class;
static struct vgpu_parent *vgpu_parents[VGPU_MAX_PARENTS];

static struct vgpu_parent *parent_of_mtype(struct mdev_type *mtype)
{
	return container_of(mtype->parent, struct vgpu_parent, mdev_parent);
}

static struct vgpu_type *vgpu_type_of(struct mdev_type *mtype)
{
	return container_of(mtype, struct vgpu_type, type);
}

/*
 * Strict decimal parsing for writable attributes: the @count bytes written
 * must be digits with an optional trailing newline; no sign, no base
 * prefix, no blanks, no embedded NUL.
 */
int vgpu_parse_uint(const char *buf, size_t count, unsigned int min,
		    unsigned int max, unsigned int *out)
{
	unsigned int val;

	if (!count || strnlen(buf, count) != count || !isdigit(buf[0]))
		return -EINVAL;
	if (kstrtouint(buf, 10, &val))
		return -EINVAL;
	if (val < min || val > max)
		return -EINVAL;
	*out = val;
	return 0;
}

/* ---- pool / admission ---- */

int vgpu_pool_reserve(struct vgpu_parent *parent, unsigned int mb)
{
	int ret = 0;

	mutex_lock(&parent->pool_lock);
	if (parent->reserved_mb > parent->pool_mb ||
	    mb > parent->pool_mb - parent->reserved_mb)
		ret = -ENOSPC;
	else
		parent->reserved_mb += mb;
	mutex_unlock(&parent->pool_lock);
	return ret;
}

void vgpu_pool_release(struct vgpu_parent *parent, unsigned int mb)
{
	mutex_lock(&parent->pool_lock);
	if (WARN_ON(parent->reserved_mb < mb))
		parent->reserved_mb = 0;
	else
		parent->reserved_mb -= mb;
	mutex_unlock(&parent->pool_lock);
}

static unsigned int vgpu_pool_free_mb(struct vgpu_parent *parent)
{
	unsigned int free_mb;

	mutex_lock(&parent->pool_lock);
	free_mb = parent->pool_mb > parent->reserved_mb ?
		  parent->pool_mb - parent->reserved_mb : 0;
	mutex_unlock(&parent->pool_lock);
	return free_mb;
}

/* ---- parent sysfs: /sys/class/mdev_bus/vgpu_shimN/vgpu/ ---- */

static ssize_t pool_mb_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	struct vgpu_parent *parent = dev_get_drvdata(dev);
	unsigned int mb;

	mutex_lock(&parent->pool_lock);
	mb = parent->pool_mb;
	mutex_unlock(&parent->pool_lock);
	return sysfs_emit(buf, "%u\n", mb);
}

static ssize_t pool_mb_store(struct device *dev, struct device_attribute *attr,
			     const char *buf, size_t count)
{
	struct vgpu_parent *parent = dev_get_drvdata(dev);
	unsigned int mb;
	int ret;

	ret = vgpu_parse_uint(buf, count, VGPU_POOL_MIN_MB, VGPU_POOL_MAX_MB, &mb);
	if (ret)
		return ret;

	mutex_lock(&parent->pool_lock);
	if (mb < parent->reserved_mb)
		ret = -EBUSY;
	else
		parent->pool_mb = mb;
	mutex_unlock(&parent->pool_lock);
	return ret ? ret : count;
}
static DEVICE_ATTR_RW(pool_mb);

static ssize_t pool_free_mb_show(struct device *dev,
				 struct device_attribute *attr, char *buf)
{
	struct vgpu_parent *parent = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%u\n", vgpu_pool_free_mb(parent));
}
static DEVICE_ATTR_RO(pool_free_mb);

static ssize_t vram_pages_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	struct vgpu_parent *parent = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%ld\n", atomic_long_read(&parent->vram_pages));
}
static DEVICE_ATTR_RO(vram_pages);

/*
 * vgpu/instances: every instance of the parent in one read, a line each,
 * "<uuid> <type> <vram_mb> <vram_used_kb> <weight> <cap>\n", where <type>
 * is the type's name without the driver's prefix ("256M"). Instances join
 * and leave the scheduler's list under its spinlock: the values are copied
 * there and formatted once it is dropped. A line is at most 63 bytes, so a
 * page holds at least 64; whatever does not fit is counted on a last line
 * "more <count>" (docs/device-abi.md), and readers then read the
 * per-instance files.
 */
struct vgpu_inst_line {
	guid_t uuid;
	const char *type;
	unsigned int vram_mb;
	unsigned long used_kb;
	unsigned int weight;
	unsigned int cap;
};

/* Lines are at least this long: more records than a page holds are useless */
#define VGPU_INST_LINE_MIN	48
#define VGPU_INST_MORE_MAX	sizeof("more 4294967295\n")

static ssize_t instances_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	struct vgpu_parent *parent = dev_get_drvdata(dev);
	struct vgpu_sched *s = &parent->sched;
	unsigned int max = PAGE_SIZE / VGPU_INST_LINE_MIN;
	unsigned int n = 0, total = 0, i;
	struct vgpu_inst_line *rec;
	struct vgpu_sched_ent *se;
	ssize_t len = 0;

	rec = kmalloc_array(max, sizeof(*rec), GFP_KERNEL);
	if (!rec)
		return -ENOMEM;

	spin_lock(&s->lock);
	list_for_each_entry(se, &s->ents, node) {
		struct vgpu_device *vg = container_of(se, struct vgpu_device,
						      se);

		total++;
		if (n == max)
			continue;
		rec[n].uuid = to_mdev_device(vg->vdev.dev)->uuid;
		rec[n].type = vg->type->type.sysfs_name;
		rec[n].vram_mb = vg->type->vram_mb;
		rec[n].used_kb = atomic_long_read(&vg->vram.used) *
				 (PAGE_SIZE / 1024);
		rec[n].weight = vg->weight;
		rec[n].cap = vg->cap;
		n++;
	}
	spin_unlock(&s->lock);

	for (i = 0; i < n; i++) {
		char line[96];
		int l;

		l = scnprintf(line, sizeof(line), "%pUl %s %u %lu %u %u\n",
			      &rec[i].uuid, rec[i].type, rec[i].vram_mb,
			      rec[i].used_kb, rec[i].weight, rec[i].cap);
		/* the last line needs no room for "more" after it */
		if (len + l + (i + 1 < total ? VGPU_INST_MORE_MAX : 0) >
		    PAGE_SIZE)
			break;
		memcpy(buf + len, line, l);
		len += l;
	}
	if (i < total)
		len += sysfs_emit_at(buf, len, "more %u\n", total - i);
	kfree(rec);
	return len;
}
static DEVICE_ATTR_RO(instances);

static struct attribute *vgpu_parent_attrs[] = {
	&dev_attr_pool_mb.attr,
	&dev_attr_pool_free_mb.attr,
	&dev_attr_vram_pages.attr,
	&vgpu_attr_display_pages.attr,		/* vgpu_vram.c */
	&dev_attr_instances.attr,
	/* the scheduler's knobs and counters (vgpu_sched.c) */
	&vgpu_attr_policy.attr,
	&vgpu_attr_slice_us.attr,
	&vgpu_attr_watchdog_ms.attr,
	&vgpu_attr_preempt.attr,
	&vgpu_attr_engines.attr,
	&vgpu_attr_parent_busy_ns.attr,
	&vgpu_attr_parent_idle_ns.attr,
	&vgpu_attr_parent_switches.attr,
	&vgpu_attr_parent_preemptions.attr,
	&vgpu_attr_parent_macs.attr,
	/* the external executor (vgpu_exec.c) */
	&vgpu_attr_executor.attr,
	&vgpu_attr_executor_connected.attr,
	&vgpu_attr_executor_handoffs.attr,
	&vgpu_attr_executor_requeues.attr,
	&vgpu_attr_executor_errors.attr,
	NULL,
};

static const struct attribute_group vgpu_parent_group = {
	.name = "vgpu",
	.attrs = vgpu_parent_attrs,
};

static const struct attribute_group *vgpu_parent_groups[] = {
	&vgpu_parent_group,
	NULL,
};

/* ---- instance sysfs: /sys/bus/mdev/devices/<uuid>/vgpu/ ---- */

static ssize_t vram_mb_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%u\n", vg->type->vram_mb);
}
static DEVICE_ATTR_RO(vram_mb);

static ssize_t vram_used_kb_show(struct device *dev,
				 struct device_attribute *attr, char *buf)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);

	/* no lock: a world-readable file must not wait for the instance */
	return sysfs_emit(buf, "%lu\n",
			  atomic_long_read(&vg->vram.used) * (PAGE_SIZE / 1024));
}
static DEVICE_ATTR_RO(vram_used_kb);

static ssize_t weight_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%u\n", READ_ONCE(vg->weight));
}

static ssize_t weight_store(struct device *dev, struct device_attribute *attr,
			    const char *buf, size_t count)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);
	unsigned int val;
	int ret;

	ret = vgpu_parse_uint(buf, count, 1, 100, &val);
	if (ret)
		return ret;
	vgpu_sched_set_weight(vg, val);
	return count;
}
static DEVICE_ATTR_RW(weight);

static ssize_t cap_show(struct device *dev, struct device_attribute *attr,
			char *buf)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%u\n", READ_ONCE(vg->cap));
}

static ssize_t cap_store(struct device *dev, struct device_attribute *attr,
			 const char *buf, size_t count)
{
	struct vgpu_device *vg = dev_get_drvdata(dev);
	unsigned int val;
	int ret;

	ret = vgpu_parse_uint(buf, count, 0, 100, &val);
	if (ret)
		return ret;
	vgpu_sched_set_cap(vg, val);
	return count;
}
static DEVICE_ATTR_RW(cap);

static struct attribute *vgpu_mdev_attrs[] = {
	&dev_attr_vram_mb.attr,
	&dev_attr_vram_used_kb.attr,
	&dev_attr_weight.attr,
	&dev_attr_cap.attr,
	/* scheduler counters (vgpu_sched.c) */
	&vgpu_attr_busy_ns.attr,
	&vgpu_attr_jobs.attr,
	&vgpu_attr_cmds_failed.attr,
	&vgpu_attr_slices.attr,
	&vgpu_attr_throttled_ns.attr,
	&vgpu_attr_queue_depth.attr,
	&vgpu_attr_preemptions.attr,
	/* engine counters (vgpu_engine.c) */
	&vgpu_attr_macs.attr,
	&vgpu_attr_latency_hist.attr,
	NULL,
};

static const struct attribute_group vgpu_mdev_group = {
	.name = "vgpu",
	.attrs = vgpu_mdev_attrs,
};

const struct attribute_group *vgpu_mdev_groups[] = {
	&vgpu_mdev_group,
	NULL,
};

/* ---- mdev driver ---- */

static int vgpu_probe(struct mdev_device *mdev)
{
	struct vgpu_device *vg;
	int ret;

	/* ->init (vgpu_dev.c) does admission and takes the module reference */
	vg = vfio_alloc_device(vgpu_device, vdev, &mdev->dev, &vgpu_dev_ops);
	if (IS_ERR(vg))
		return PTR_ERR(vg);

	dev_set_drvdata(&mdev->dev, vg);
	ret = vfio_register_emulated_iommu_dev(&vg->vdev);
	if (ret)
		goto err_put;
	return 0;

err_put:
	dev_set_drvdata(&mdev->dev, NULL);
	vfio_put_device(&vg->vdev);
	return ret;
}

static void vgpu_remove(struct mdev_device *mdev)
{
	struct vgpu_device *vg = dev_get_drvdata(&mdev->dev);

	/* Blocks (calling ->request) until the user closes the device. */
	vfio_unregister_group_dev(&vg->vdev);
	vfio_put_device(&vg->vdev);
}

static unsigned int vgpu_get_available(struct mdev_type *mtype)
{
	return vgpu_pool_free_mb(parent_of_mtype(mtype)) /
	       vgpu_type_of(mtype)->vram_mb;
}

static ssize_t vgpu_show_description(struct mdev_type *mtype, char *buf)
{
	struct vgpu_parent *parent = parent_of_mtype(mtype);
	struct vgpu_type *type = vgpu_type_of(mtype);
	unsigned int pool;

	mutex_lock(&parent->pool_lock);
	pool = parent->pool_mb;
	mutex_unlock(&parent->pool_lock);
	return sysfs_emit(buf, "vram_mb=%u, weight=%u, max_instances=%u\n",
			  type->vram_mb, type->weight, pool / type->vram_mb);
}

static struct mdev_driver vgpu_mdev_driver = {
	.device_api = VFIO_DEVICE_API_PCI_STRING,
	.driver = {
		.name = VGPU_NAME,
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
		.dev_groups = vgpu_mdev_groups,
	},
	.probe = vgpu_probe,
	.remove = vgpu_remove,
	.get_available = vgpu_get_available,
	.show_description = vgpu_show_description,
};

/* ---- parents ---- */

static void vgpu_parent_release(struct device *dev)
{
	struct vgpu_parent *parent = container_of(dev, struct vgpu_parent, dev);

	mutex_destroy(&parent->pool_lock);
	kfree(parent);
}

static int vgpu_parent_create(unsigned int index)
{
	struct vgpu_parent *parent;
	unsigned int i;
	int ret;

	parent = kzalloc(sizeof(*parent), GFP_KERNEL);
	if (!parent)
		return -ENOMEM;

	parent->index = index;
	mutex_init(&parent->pool_lock);
	parent->pool_mb = vgpu_pool_mb_param;
	atomic_long_set(&parent->vram_pages, 0);
	for (i = 0; i < VGPU_NUM_TYPES; i++) {
		struct vgpu_type *type = &parent->types[i];

		type->type.sysfs_name = vgpu_type_table[i].sysfs_name;
		type->type.pretty_name = vgpu_type_table[i].pretty_name;
		type->vram_mb = vgpu_type_table[i].vram_mb;
		type->weight = vgpu_type_table[i].weight;
		parent->type_ptrs[i] = &type->type;
	}

	vgpu_exec_init(parent);
	/* The engines; stopped before the parent goes. */
	ret = vgpu_sched_init(parent);
	if (ret) {
		mutex_destroy(&parent->pool_lock);
		kfree(parent);
		return ret;
	}

	/* From here on the release callback frees the parent. */
	device_initialize(&parent->dev);
	parent->dev.class = vgpu_class;
	parent->dev.groups = vgpu_parent_groups;
	parent->dev.release = vgpu_parent_release;
	dev_set_drvdata(&parent->dev, parent);
	ret = dev_set_name(&parent->dev, VGPU_NAME "%u", index);
	if (ret)
		goto err_put;

	ret = device_add(&parent->dev);
	if (ret)
		goto err_put;

	ret = vgpu_exec_register(parent);
	if (ret)
		goto err_del;

	/*
	 * The mdev core names the types "<class name>-<sysfs_name>", so the
	 * class name makes them "vgpu_shim-256M" and so on.
	 */
	ret = mdev_register_parent(&parent->mdev_parent, &parent->dev,
				   &vgpu_mdev_driver, parent->type_ptrs,
				   VGPU_NUM_TYPES);
	if (ret)
		goto err_del;

	vgpu_parents[index] = parent;
	return 0;

err_del:
	vgpu_exec_fini(parent);
	device_del(&parent->dev);
err_put:
	vgpu_sched_fini(parent);
	put_device(&parent->dev);
	return ret;
}

static void vgpu_parent_destroy(unsigned int index)
{
	struct vgpu_parent *parent = vgpu_parents[index];

	if (!parent)
		return;
	vgpu_parents[index] = NULL;
	mdev_unregister_parent(&parent->mdev_parent);
	vgpu_exec_fini(parent);
	vgpu_sched_fini(parent);
	device_unregister(&parent->dev);
}

static int __init vgpu_init(void)
{
	unsigned int i;
	int ret;

	if (vgpu_nr_parents < 1 || vgpu_nr_parents > VGPU_MAX_PARENTS) {
		pr_err("invalid parents=%u (must be 1-%u)\n",
		       vgpu_nr_parents, VGPU_MAX_PARENTS);
		return -EINVAL;
	}
	if (vgpu_nr_engines < 1 || vgpu_nr_engines > VGPU_MAX_ENGINES) {
		pr_err("invalid engines=%u (must be 1-%u)\n",
		       vgpu_nr_engines, VGPU_MAX_ENGINES);
		return -EINVAL;
	}
	if (vgpu_pool_mb_param < VGPU_POOL_MIN_MB ||
	    vgpu_pool_mb_param > VGPU_POOL_MAX_MB) {
		pr_err("invalid pool_mb=%u (must be %u-%u)\n",
		       vgpu_pool_mb_param, VGPU_POOL_MIN_MB, VGPU_POOL_MAX_MB);
		return -EINVAL;
	}

	ret = vgpu_exec_param_check();
	if (ret)
		return ret;

	ret = mdev_register_driver(&vgpu_mdev_driver);
	if (ret)
		return ret;

#if KERNEL_VERSION(6, 4, 0) <= LINUX_VERSION_CODE
	vgpu_class = class_create(VGPU_NAME);
#else
	vgpu_class = class_create(THIS_MODULE, VGPU_NAME);
#endif
	if (IS_ERR(vgpu_class)) {
		ret = PTR_ERR(vgpu_class);
		pr_err("cannot create class %s: %d\n", VGPU_NAME, ret);
		goto err_driver;
	}

	for (i = 0; i < vgpu_nr_parents; i++) {
		ret = vgpu_parent_create(i);
		if (ret) {
			pr_err("cannot create parent %u: %d\n", i, ret);
			goto err_parents;
		}
	}

	pr_info("loaded: %u parent(s), pool %u MiB and %u engine(s) each\n",
		vgpu_nr_parents, vgpu_pool_mb_param, vgpu_nr_engines);
	return 0;

err_parents:
	while (i--)
		vgpu_parent_destroy(i);
	class_destroy(vgpu_class);
err_driver:
	mdev_unregister_driver(&vgpu_mdev_driver);
	return ret;
}

static void __exit vgpu_exit(void)
{
	unsigned int i = VGPU_MAX_PARENTS;

	/* Every instance holds a module reference: none exist here. */
	while (i--)
		vgpu_parent_destroy(i);
	class_destroy(vgpu_class);
	mdev_unregister_driver(&vgpu_mdev_driver);
	pr_info("unloaded, %ld pages outstanding\n",
		atomic_long_read(&vgpu_pages_outstanding));
}

module_init(vgpu_init);
module_exit(vgpu_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vgpu: mdev vendor driver emulating PCI vGPUs");
MODULE_SOFTDEP("pre: vfio mdev");
