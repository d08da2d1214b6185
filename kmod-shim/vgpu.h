/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vgpu_shim: shared definitions.
 *
 * The device ABI implemented here is specified in docs/device-abi.md.
 */
#ifndef VGPU_SHIM_H
#define VGPU_SHIM_H

#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/device.h>
#include <linux/list.h>
#include <linux/mdev.h>
#include <linux/memcontrol.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/rbtree.h>
#include <linux/sizes.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait_bit.h>
#include <linux/version.h>
#include <linux/vfio.h>
#include <linux/wait.h>
#include <linux/xarray.h>
#include <linux/miscdevice.h>

#include "vgpu_exec_abi.h"

#define VGPU_NAME		"vgpu_shim"
#define VGPU_ABI_VERSION	0x00010000	/* major 1, minor 0 */

#define VGPU_MAX_PARENTS	8
#define VGPU_MAX_ENGINES	8
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

/* engine registers (BAR2 0x900-0x9ff, docs/engine-abi.md) */
#define VGPU_ENG_RING_BASE_LO	0x900
#define VGPU_ENG_RING_BASE_HI	0x904
#define VGPU_ENG_RING_SIZE	0x908
#define VGPU_ENG_RING_HEAD	0x90c
#define VGPU_ENG_RING_TAIL	0x910
#define VGPU_ENG_DOORBELL	0x914
#define VGPU_ENG_RING_CTL	0x918
#define VGPU_ENG_STATUS		0x91c
#define VGPU_ENG_ERROR		0x920
#define VGPU_ENG_ERROR_HEAD	0x924
#define VGPU_ENG_FENCE_LO	0x928
#define VGPU_ENG_FENCE_HI	0x92c
#define VGPU_ENG_IRQ_STATUS	0x930
#define VGPU_ENG_IRQ_MASK	0x934
#define VGPU_ENG_RESET		0x938
#define VGPU_ENG_CMDS_DONE	0x93c
#define VGPU_ENG_TAIL_SHADOW_LO	0x940
#define VGPU_ENG_TAIL_SHADOW_HI	0x944
#define VGPU_ENG_IRQ_EDGE	0x948

#define VGPU_CTL_ENABLE		BIT(0)
#define VGPU_SHADOW_ENABLE	BIT(0)
#define VGPU_SHADOW_ALIGN	4
#define VGPU_STATUS_ENABLED	BIT(0)
#define VGPU_STATUS_BUSY	BIT(1)
#define VGPU_STATUS_ERROR	BIT(2)
#define VGPU_STATUS_HUNG	BIT(3)
#define VGPU_IRQ_FENCE		BIT(0)
#define VGPU_IRQ_ERROR		BIT(1)
#define VGPU_IRQ_WATCHDOG	BIT(2)
#define VGPU_IRQ_ALL		(VGPU_IRQ_FENCE | VGPU_IRQ_ERROR | \
				 VGPU_IRQ_WATCHDOG)

#define VGPU_CMD_SIZE		64
#define VGPU_RING_MIN		SZ_4K
#define VGPU_RING_MAX		SZ_1M
#define VGPU_GEMM_MAX_DIM	65536
#define VGPU_GEMM_BLOCK		1024	/* columns of C accumulated at once */

enum vgpu_opcode {
	VGPU_OP_NOP = 0,
	VGPU_OP_FILL,
	VGPU_OP_COPY,
	VGPU_OP_CHECKSUM,
	VGPU_OP_GEMM,
	VGPU_OP_BLIT,
	VGPU_OP_FENCE,
	VGPU_OP_JUMP,
	VGPU_NUM_OPS,
};

#define VGPU_FENCE_IRQ		BIT(0)
#define VGPU_FENCE_WRITE	BIT(1)

enum vgpu_eng_error {
	VGPU_ERR_NONE = 0,
	VGPU_ERR_BAD_OPCODE,
	VGPU_ERR_BAD_FLAGS,
	VGPU_ERR_OUT_OF_RANGE,
	VGPU_ERR_BAD_ALIGN,
	VGPU_ERR_BAD_SIZE,
	VGPU_ERR_BAD_RING,
	VGPU_ERR_BAD_MODE,
	VGPU_ERR_WATCHDOG,
	VGPU_ERR_EXECUTOR,	/* external mode: the executor failed a piece */
};

/*
 * Chunk budget classes: each adapts its own amount of work per chunk, and
 * work is charged in every class whose cost it has (vgpu_engine.c, and
 * "Chunks" in docs/engine-abi.md).
 */
enum vgpu_chunk_class {
	VGPU_CC_CMD,		/* commands fetched */
	VGPU_CC_FILL,		/* bytes (FILL, a FENCE's WRITE) */
	VGPU_CC_COPY,		/* bytes */
	VGPU_CC_SUM,		/* bytes */
	VGPU_CC_GEMM,		/* multiply-adds (and stores of C) */
	VGPU_CC_GEMM_SERIAL,	/* multiply-adds, C overlapping A or B */
	VGPU_CC_BLIT,		/* bytes */
	VGPU_CC_SPAN,		/* spans: pieces within a page, BLIT rows */
	VGPU_CC_PAGE,		/* VRAM pages allocated by the engine */
	VGPU_NUM_CC,
};

enum vgpu_policy {
	VGPU_POLICY_BEST_EFFORT,
	VGPU_POLICY_EQUAL_SHARE,
	VGPU_POLICY_FIXED_SHARE,
};

struct vgpu_parent;
struct vgpu_worker;

/* A displayable bochs mode (vgpu_display.c). */
struct vgpu_mode {
	u32 drm_format;
	u32 bytepp;
	u32 width;
	u32 height;
	u32 stride;
	u64 offset;		/* scanout start in VRAM */
	u64 size;		/* stride * height */
};

/*
 * The piece an engine handed to the external executor and waits for
 * (vgpu_exec.c; under the parent's exec.qlock).
 */
struct vgpu_exec_slot {
	u64 seq;			/* 0: nothing in flight */
	u64 epoch;			/* connection it went to; 0: not yet */
	bool done;
	u32 status;
	u64 value;
	u64 work_ns;			/* the daemon's report, 0: none */
	struct vgpu_exec_sqe sqe;
};

/*
 * An engine worker's piece sizes in external mode (vgpu_exec_policy.h):
 * units per piece, and the recent pieces' unit costs (per class) and
 * handoff costs, in rings of VGPU_XRING.
 */
#define VGPU_XRING	8
struct vgpu_xpolicy {
	u64 budget[VGPU_NUM_CC];
	u64 cost[VGPU_NUM_CC][VGPU_XRING];
	u32 ncost[VGPU_NUM_CC];
	u64 over[VGPU_XRING];
	u32 nover;
};

/* One engine worker thread of a parent. */
struct vgpu_worker {
	struct task_struct *task;
	struct vgpu_parent *parent;
	unsigned int index;
	bool idle;			/* waiting for work, not kicked yet */
	bool sleeping;			/* waiting for work (idle_ns counts) */
	u64 idle_since;
	u64 last_seq;			/* instance of its previous slice, 0: none */
	/* under the parent's sched.lock (the engine reads preempt_after with READ_ONCE) */
	struct vgpu_sched_ent *cur;	/* the instance it runs, or NULL */
	u64 limit;			/* cur's slice limit, ns */
	u64 preempt_after;		/* cur yields after this much of its slice; 0: no */
	u32 budget[VGPU_NUM_CC];	/* work per chunk (worker-private) */
	struct vgpu_xpolicy xp;		/* external mode's piece sizes */
	struct vgpu_exec_slot xslot;
};

/* The time-slice scheduler of one parent (vgpu_sched.c). */
struct vgpu_sched {
	spinlock_t lock;		/* everything below, and vgpu_sched_ent */
	struct list_head ents;		/* all instances, creation order */
	/*
	 * The pick's queues (docs/scheduler.md): @runq holds the eligible
	 * instances (runnable, not waiting for their lock, within budget)
	 * by (vt, seq), @throttleq the throttled ones (runnable, not
	 * waiting for their lock) by when their budget returns.
	 */
	struct rb_root_cached runq;
	struct rb_root_cached throttleq;
	u64 next_seq;
	unsigned int sum_weight;	/* over all instances (fixed_share) */
	enum vgpu_policy policy;
	unsigned int slice_us;
	unsigned int watchdog_ms;	/* also read by the engine (READ_ONCE) */
	bool preempt;			/* wake-up preemption on */
	u64 vt_floor;
	u64 sweep_floor;		/* vt_floor at the last reach sweep */
	u64 busy_ns;
	u64 idle_ns;
	u64 switches;
	u64 preemptions;		/* slices cut short by a waking instance */
	atomic64_t macs;		/* GEMM multiply-adds, all instances */
	wait_queue_head_t drain_wq;	/* detach waits for the engine to let go */
	unsigned int nr_workers;
	struct vgpu_worker workers[VGPU_MAX_ENGINES];
};

/* Which of the pick's queues an instance is on (vgpu_sched_ent.queued). */
enum {
	VGPU_Q_NONE,
	VGPU_Q_RUN,
	VGPU_Q_THROTTLED,
};

/* An instance as the scheduler sees it (all under vgpu_sched.lock). */
struct vgpu_sched_ent {
	struct list_head node;
	u64 seq;			/* creation order, from 1 */
	unsigned int weight;
	unsigned int cap;
	bool attached;
	bool runnable;
	bool detached;			/* being released: never pick again */
	bool lockwait;			/* waits for its lock: not picked */
	struct vgpu_worker *on;		/* the engine running it, or NULL */
	u64 vt;
	s64 budget;			/* token bucket, ns */
	u32 budget_frac;		/* accrued fraction of a ns, in ppm */
	u64 refill_ns;
	bool throttled;
	u8 queued;			/* VGPU_Q_*: which queue @rb is on */
	struct rb_node rb;		/* on sched.runq or sched.throttleq */
	u64 unthrottle_at;		/* throttleq key: budget back (ns) */
	u64 throttled_since;
	u64 busy_ns;
	u64 slices;
	u64 throttled_ns;
	u64 preemptions;		/* times it took an engine by preemption */
};

/* The validated command in flight and its progress. */
struct vgpu_eng_op {
	u8 opcode;
	u8 flags;
	u32 at;				/* ring offset of the command */
	u64 arg[7];
	/* bytes done (FILL, COPY, CHECKSUM, BLIT); GEMM: 1 once acc is 0 */
	u64 done;
	u64 hash;			/* CHECKSUM */
	u32 i, j, p;			/* GEMM: row, column (block), k index */
	u32 sacc;			/* GEMM serial: accumulator */
	bool serial;			/* GEMM: C overlaps A or B */
	bool backward;			/* COPY: dst above an overlapping src */
	bool external;			/* pieces go to the external executor */
	struct vgpu_mode mode;		/* BLIT: the mode at validation */
};

/*
 * Submission latency (docs/scheduler.md): a doorbell that adds commands
 * is timed until as many more commands have completed. Histogram of
 * those times in ns, log-linear: exact below 16 ns, then 16 buckets per
 * power of two (each at most 1/16 of its lower bound wide), up to 2^36 ns
 * (68.7 s); the last bucket also holds anything longer.
 */
#define VGPU_LAT_SUB_SHIFT	4
#define VGPU_LAT_SUB		(1U << VGPU_LAT_SUB_SHIFT)
#define VGPU_LAT_MAX_SHIFT	35
#define VGPU_LAT_BUCKETS	((VGPU_LAT_MAX_SHIFT - VGPU_LAT_SUB_SHIFT + 2) * \
				 VGPU_LAT_SUB)
#define VGPU_LAT_INFLIGHT	16	/* doorbells timed at once */

struct vgpu_lat_sub {
	u64 target;			/* value of jobs when it is complete */
	u64 t_ns;			/* doorbell time */
};

/*
 * Engine state of one instance (vgpu_engine.c). The registers are under
 * @lock (a spinlock: register accesses never wait for a chunk of work);
 * the command in flight, its progress, @acc and @wd_ns belong to the
 * engine running the instance, under vgpu_device.lock, which the control
 * operations that drop a command (ENGINE_RESET, RING_CTL, device reset)
 * take too. Lock order: vgpu_device.lock, then @lock, then the sched lock.
 */
struct vgpu_engine {
	spinlock_t lock;
	u32 base_lo, base_hi, size;
	u32 head, tail;
	bool enabled;
	bool stopped;			/* STATUS.ERROR: only a reset restarts */
	bool hung;
	u32 error, error_head;
	u64 fence;
	u32 irq_status, irq_mask;
	u32 cmds_done;
	u32 shadow_lo, shadow_hi;	/* TAIL_SHADOW (bit 0: ENABLE) */
	u32 irq_edge;			/* IRQ_EDGE: sources not latched */
	bool inflight;
	struct vgpu_eng_op op;
	u64 wd_ns;			/* engine time since the last FENCE */
	u32 allocs;			/* pages allocated by a step (vg->lock) */
	u64 jobs, cmds_failed;		/* host counters, never reset */
	u64 macs;			/* GEMM multiply-adds done (vg->lock) */
	/* doorbells being timed, oldest first at @lat_first (eng.lock) */
	struct vgpu_lat_sub lat_sub[VGPU_LAT_INFLIGHT];
	unsigned int lat_first, lat_n;
	u64 lat_last;			/* target of the newest one */
	u32 lat_hist[VGPU_LAT_BUCKETS];
	u32 acc[VGPU_GEMM_BLOCK];	/* GEMM partial sums of one C block */
};

/* One vGPU type of one parent (each parent owns its mdev_type objects). */
struct vgpu_type {
	struct mdev_type type;
	unsigned int vram_mb;
	unsigned int weight;
};

/*
 * A parent's external executor (vgpu_exec.c, docs/executor.md): the mode,
 * the device node a daemon opens, and its connection.
 */
struct vgpu_exec_conn;
struct vgpu_exec {
	struct miscdevice misc;
	char name[24];
	char nodename[40];
	bool registered;
	bool external;			/* the knob (READ_ONCE) */
	/*
	 * Protects @ids and connecting/disconnecting; the daemon's VRAM
	 * faults hold it, and nothing that holds it waits for an engine.
	 */
	struct mutex lock;
	struct xarray ids;		/* executor id -> open vgpu_device */
	u32 next_id;
	spinlock_t qlock;		/* the queue, the slots, the counters */
	struct vgpu_exec_conn *conn;	/* the daemon, or NULL */
	u64 epoch;			/* connections so far */
	u64 next_seq;
	wait_queue_head_t poll_wq;	/* the daemon waits for submissions */
	wait_queue_head_t done_wq;	/* engines wait for completions */
	u64 handoffs, requeues, errors;
	u64 window;			/* IOC_SET_WINDOW (READ_ONCE), 0: none */
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
	atomic_long_t disp_pages;	/* display pages of all its instances */

	struct vgpu_type types[VGPU_NUM_TYPES];
	struct mdev_type *type_ptrs[VGPU_NUM_TYPES];

	struct vgpu_sched sched;
	struct vgpu_exec exec;
};

/*
 * A lazily populated set of pages (VRAM, or the display region). Pages are
 * allocated on first touch, charged to a memory cgroup (__GFP_ACCOUNT: the
 * caller's, or the device opener's for the engine), and all freed at the
 * last close of the device.
 */
struct vgpu_pages {
	struct page **pages;
	unsigned long npages;
	atomic_long_t used;		/* allocated pages */
	bool is_vram;			/* parent's vram_pages, else disp_pages */
};

/* One instance: an emulated PCI vGPU behind a VFIO device. */
struct vgpu_device {
	struct vfio_device vdev;	/* first: vfio_alloc_device() */
	struct vgpu_parent *parent;
	const struct vgpu_type *type;
	u64 vram_size;

	/*
	 * Protects config space, DISPI registers, both page sets and the
	 * engine's command in flight; an engine holds it while it runs the
	 * instance, from chunk to chunk, and lets it go as soon as a
	 * vgpu_lock() caller waits (it never waits for it itself: see
	 * vgpu_run()). Never held across copy_{to,from}_user(): the user
	 * buffer may be an mmap of this device whose fault handler takes the
	 * lock. Nests outside eng.lock and the parent's sched.lock.
	 */
	struct mutex lock;
	/* vgpu_lock() calls that asked for @lock, and that got it */
	atomic_long_t lock_asked;
	atomic_long_t lock_got;
	u8 config[VGPU_CONFIG_SIZE];
	int irq_route;			/* vgpu_cfg_irq_index(), read locklessly */
	u64 bar0_mask;
	u16 dispi[VBE_DISPI_INDEX_COUNT];
	struct vgpu_pages vram;
	struct vgpu_pages disp;
	/* memory cgroup of the opener: charged for the engine's first touches */
	struct mem_cgroup *memcg;
	/* written under the parent's sched.lock, read with READ_ONCE() */
	unsigned int weight;		/* 1..100, scheduler share */
	unsigned int cap;		/* 0..100 % of one engine, 0 = none */
	struct vgpu_engine eng;
	struct vgpu_sched_ent se;	/* under parent->sched.lock */
	/* external executor: id while open, connection it was handed to */
	u32 exec_id;			/* exec.lock */
	u64 exec_epoch;			/* exec.qlock */

	spinlock_t irq_lock;		/* protects the irq state below */
	struct eventfd_ctx *irq_trigger[VFIO_PCI_NUM_IRQS];
	bool intx_masked;
	bool intx_pending;
	bool req_logged;

	/* VFIO_DEVICE_IOEVENTFD registrations (vgpu_ioeventfd.c) */
	struct mutex ioeventfd_lock;
	struct list_head ioeventfds;
	unsigned int ioeventfds_nr;
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

/* ---- vgpu_mmio.c: BAR2 registers but the engine block (vg->lock held) ---- */
void vgpu_dispi_reset(struct vgpu_device *vg);
u32 vgpu_mmio_read(struct vgpu_device *vg, unsigned int off,
		   unsigned int size);
void vgpu_mmio_write(struct vgpu_device *vg, unsigned int off,
		     unsigned int size, u32 val);

/* ---- vgpu_vram.c: VRAM and display pages ---- */
extern struct device_attribute vgpu_attr_display_pages;	/* parent's */
int vgpu_pages_init(struct vgpu_pages *set, u64 size, bool is_vram);
void vgpu_pages_free(struct vgpu_device *vg, struct vgpu_pages *set);
void vgpu_pages_fini(struct vgpu_device *vg, struct vgpu_pages *set);
struct page *vgpu_page_lookup(struct vgpu_device *vg, struct vgpu_pages *set,
			      unsigned long idx, bool alloc);
ssize_t vgpu_pages_rw(struct vgpu_device *vg, struct vgpu_pages *set,
		      char __user *buf, size_t count, u64 off, bool write);
int vgpu_mmap(struct vfio_device *vdev, struct vm_area_struct *vma);

struct page *vgpu_page_get_unlocked(struct vgpu_device *vg,
				    struct vgpu_pages *set, unsigned long idx);
u32 vgpu_vram_peek32(struct vgpu_device *vg, u64 off);

/* ---- vgpu_exec.c: the external executor ---- */
extern struct device_attribute vgpu_attr_executor,
	vgpu_attr_executor_connected, vgpu_attr_executor_handoffs,
	vgpu_attr_executor_requeues, vgpu_attr_executor_errors;
int vgpu_exec_param_check(void);
void vgpu_exec_init(struct vgpu_parent *parent);
int vgpu_exec_register(struct vgpu_parent *parent);
void vgpu_exec_fini(struct vgpu_parent *parent);
int vgpu_exec_open_instance(struct vgpu_device *vg);
void vgpu_exec_close_instance(struct vgpu_device *vg);
int vgpu_exec_run(struct vgpu_worker *w, struct vgpu_device *vg,
		  const struct vgpu_exec_sqe *sqe, u64 wait_ns, u64 *value,
		  u64 *work_ns);

/* ---- vgpu_exec_piece.c: what goes to the executor, in which pieces ---- */
enum { VGPU_XSTEP_DONE, VGPU_XSTEP_MORE, VGPU_XSTEP_FAILED };
bool vgpu_exec_eligible(const struct vgpu_device *vg,
			const struct vgpu_eng_op *op);
int vgpu_exec_step(struct vgpu_device *vg, struct vgpu_worker *w,
		   struct vgpu_eng_op *op, u64 wait_ns);

/* ---- vgpu_irq.c: interrupts ---- */
int vgpu_ioctl_get_irq_info(struct vgpu_device *vg, void __user *arg);
int vgpu_ioctl_set_irqs(struct vgpu_device *vg, void __user *arg);
void vgpu_irq_raise(struct vgpu_device *vg, unsigned int index);
void vgpu_irq_release_all(struct vgpu_device *vg);
void vgpu_request(struct vfio_device *vdev, unsigned int count);

/* ---- vgpu_ioeventfd.c: VFIO_DEVICE_IOEVENTFD on DOORBELL ---- */
int vgpu_ioctl_ioeventfd(struct vgpu_device *vg, void __user *arg);
void vgpu_ioeventfd_flush(struct vgpu_device *vg);
void vgpu_ioeventfd_release_all(struct vgpu_device *vg);

/* ---- vgpu_cfg.c ---- */
int vgpu_cfg_irq_index(struct vgpu_device *vg);

/* ---- vgpu_display.c: display plane ---- */
u64 vgpu_display_size(u64 vram_size);
bool vgpu_display_mode(struct vgpu_device *vg, struct vgpu_mode *mode);
int vgpu_ioctl_query_gfx_plane(struct vgpu_device *vg, void __user *arg);

void vgpu_sched_unlocked(struct vgpu_device *vg);

/*
 * vg->lock for everyone but the engines. Counted: an engine running the
 * instance lets the lock go after its current chunk when someone waits,
 * and never waits for it itself; the instance then waits until its lock
 * is free, and vgpu_unlock() hands it back to the engines
 * (vgpu_sched_unlocked()).
 */
static inline void vgpu_lock(struct vgpu_device *vg)
{
	atomic_long_inc(&vg->lock_asked);
	mutex_lock(&vg->lock);
	atomic_long_inc(&vg->lock_got);
}

static inline void vgpu_unlock(struct vgpu_device *vg)
{
	mutex_unlock(&vg->lock);
	vgpu_sched_unlocked(vg);
}

/* How many vgpu_lock() callers wait for @vg->lock (> 0: some did lately). */
static inline long vgpu_lock_waiters(struct vgpu_device *vg)
{
	long got = atomic_long_read(&vg->lock_got);

	return atomic_long_read(&vg->lock_asked) - got;
}

/* ---- vgpu_engine.c: the command engine (vg->lock held unless noted) ---- */
void vgpu_engine_init(struct vgpu_device *vg);
u32 vgpu_engine_read(struct vgpu_device *vg, unsigned int off,
		     unsigned int size);		/* no lock held */
void vgpu_engine_write(struct vgpu_device *vg, unsigned int off,
		       unsigned int size, u32 val);	/* no lock held */
void vgpu_engine_reset(struct vgpu_device *vg, bool full);
bool vgpu_engine_has_work(struct vgpu_device *vg);	/* eng.lock held */
void vgpu_engine_counters(struct vgpu_device *vg, u64 *jobs, u64 *failed,
			  u64 *depth);			/* no lock held */
bool vgpu_engine_chunk(struct vgpu_device *vg, struct vgpu_worker *w,
		       u64 t0, u64 *t1);
void vgpu_worker_budget_init(struct vgpu_worker *w);

/* ---- vgpu_sched.c: engines and the time-slice scheduler ---- */
extern unsigned int vgpu_nr_engines;
extern struct device_attribute vgpu_attr_policy, vgpu_attr_slice_us,
	vgpu_attr_watchdog_ms, vgpu_attr_engines, vgpu_attr_parent_busy_ns,
	vgpu_attr_parent_idle_ns, vgpu_attr_parent_switches, vgpu_attr_preempt,
	vgpu_attr_parent_preemptions;
extern struct device_attribute vgpu_attr_busy_ns, vgpu_attr_jobs,
	vgpu_attr_cmds_failed, vgpu_attr_slices, vgpu_attr_throttled_ns,
	vgpu_attr_queue_depth, vgpu_attr_parent_macs, vgpu_attr_preemptions;
extern struct device_attribute vgpu_attr_macs, vgpu_attr_latency_hist;
int vgpu_sched_init(struct vgpu_parent *parent);
void vgpu_sched_fini(struct vgpu_parent *parent);
void vgpu_sched_attach(struct vgpu_device *vg);
void vgpu_sched_detach(struct vgpu_device *vg);
void vgpu_sched_update(struct vgpu_device *vg);		/* eng.lock held */
void vgpu_sched_set_weight(struct vgpu_device *vg, unsigned int weight);
void vgpu_sched_set_cap(struct vgpu_device *vg, unsigned int cap);
unsigned int vgpu_sched_watchdog_ms(struct vgpu_device *vg);

#endif /* VGPU_SHIM_H */
