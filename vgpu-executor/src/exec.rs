//! The executor: a Vulkan device with the engine's pipelines, and the recording of each
//! command as dispatches (the parameters p0..p7 are those in shaders/engine.wgsl).

use std::cell::Cell;

use ash::vk;
use log::{debug, info};
use vgpu_engine_abi::layout::engine as reg;
use vgpu_engine_abi::reference::{self, Limits, ScanoutMode};
use vgpu_engine_abi::RawCmd;

use crate::device::{DeviceInfo, DeviceSelector, Vk};
use crate::vram::Vram;
use crate::Error;

static SPIRV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/engine.spv"));

/// The scratch buffer's size: the most one COPY/BLIT piece moves through it (when
/// source and destination overlap).
pub(crate) const SCRATCH_BYTES: u64 = 4 << 20;
/// Pieces in one [`Executor::execute_pieces`] batch at most (one CHECKSUM result slot
/// each; the kernel's submission ring has as many entries).
pub const MAX_BATCH: usize = 64;
/// Descriptor sets at most: one per VRAM, one per window of a large VRAM.
const MAX_SETS: u32 = 4096;

/// How much work one dispatch does at most: long commands are split into pieces (so a
/// piece stays short on any GPU, and the kernel's chunks will map onto them). The
/// defaults suit a real GPU and lavapipe; tests make them tiny to exercise the splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pieces {
    /// Bytes of one overlapping COPY/BLIT piece through scratch (1 ..= 4 MiB).
    pub copy_bytes: u64,
    /// Words one CHECKSUM dispatch hashes (a single invocation walks them; at most
    /// 32768, see MAX_LOOP in the source).
    pub checksum_words: u64,
    /// Multiply-adds of one GEMM dispatch (at least one row, or one element when C
    /// overlaps A or B).
    pub gemm_macs: u64,
}

impl Default for Pieces {
    fn default() -> Self {
        Pieces {
            copy_bytes: SCRATCH_BYTES,
            checksum_words: MAX_LOOP,
            gemm_macs: 1 << 26,
        }
    }
}
/// Iterations of any shader loop in one dispatch at most. llvmpipe (lavapipe) ends a
/// loop after 65535 iterations (gallivm's loop limiter: a CHECKSUM of 65536 words
/// came out wrong, 65535 right), so every loop is bounded well below that: CHECKSUM
/// pieces, serial GEMM pieces, GEMM's inner loop (two multiply-adds per iteration,
/// k <= 65536) and the grid-stride loops (at most 2^30 words / (MAX_GROUPS * WG)).
pub(crate) const MAX_LOOP: u64 = 1 << 15;
/// Workgroups of a grid-stride dispatch at most.
pub(crate) const MAX_GROUPS: u64 = 4096;
/// Threads per workgroup of the 1-D entry points.
pub(crate) const WG: u64 = 64;

#[derive(Clone, Copy)]
pub(crate) enum Pipe {
    Fill = 0,
    Copy = 1,
    Checksum = 2,
    Gemm = 3,
    GemmSerial = 4,
    GemmElems = 5,
}
const ENTRY_POINTS: [&std::ffi::CStr; 6] = [
    c"fill",
    c"copy",
    c"checksum",
    c"gemm",
    c"gemm_serial",
    c"gemm_elems",
];

/// What the executor has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Commands executed.
    pub commands: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Queue submissions (one per [`Executor::execute`] call).
    pub submits: u64,
    /// Commands and pieces refused (nothing executed).
    pub rejected: u64,
    /// Pieces executed ([`Executor::execute_pieces`]).
    pub pieces: u64,
}

/// A Vulkan device ready to run engine commands on [`Vram`]s.
///
/// Not `Sync`: one thread records and submits (the daemon runs one executor per device
/// and queue).
pub struct Executor {
    pub(crate) device: ash::Device,
    pub(crate) ext_host: Option<ash::ext::external_memory_host::Device>,
    pub(crate) import_align: usize,
    /// The most of a VRAM one binding covers (a power of two): a larger VRAM is used
    /// through windows of this size at multiples of half of it (pieces only).
    pub(crate) window: u64,
    pub(crate) mem_props: vk::PhysicalDeviceMemoryProperties,
    pub(crate) desc_pool: vk::DescriptorPool,
    dsl: vk::DescriptorSetLayout,
    pub(crate) layout: vk::PipelineLayout,
    pipelines: Vec<vk::Pipeline>,
    queue: vk::Queue,
    cmd_pool: vk::CommandPool,
    cb: vk::CommandBuffer,
    fence: vk::Fence,
    pub(crate) scratch: vk::Buffer,
    scratch_mem: vk::DeviceMemory,
    /// [`MAX_BATCH`] u64 slots of host-visible memory: CHECKSUM pieces' states.
    pub(crate) results: vk::Buffer,
    results_mem: vk::DeviceMemory,
    pub(crate) results_ptr: *const u64,
    info: DeviceInfo,
    counters: Cell<Counters>,
    pieces: Cell<Pieces>,
    // Last: dropped after the device is destroyed in `drop`.
    _vk: Vk,
}

impl Executor {
    /// Open the device `sel` picks.
    pub fn new(sel: &DeviceSelector) -> Result<Self, Error> {
        let vk = Vk::new()?;
        let devs = vk.list()?;
        let infos: Vec<DeviceInfo> = devs.iter().map(|(d, _)| d.clone()).collect();
        let info = sel.pick(&infos)?.clone();
        let pd = devs[info.index].1;
        info!(
            "device {}: {} ({}, {}), external_memory_host: {}",
            info.index,
            info.name,
            info.uuid_string(),
            info.kind_name(),
            info.external_memory_host
        );
        let inst = &vk.instance;
        // SAFETY: `pd` belongs to this instance.
        let qf = unsafe { inst.get_physical_device_queue_family_properties(pd) };
        let qfi = qf
            .iter()
            .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or_else(|| Error::Device("no compute queue".into()))? as u32;
        let mut host_props = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut m3 = vk::PhysicalDeviceMaintenance3Properties::default();
        let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut m3);
        if info.external_memory_host {
            p2 = p2.push_next(&mut host_props);
        }
        // SAFETY: `pd` belongs to this instance; the chain lives across the call.
        unsafe { inst.get_physical_device_properties2(pd, &mut p2) };
        let limits = p2.properties.limits;
        let import_align = host_props.min_imported_host_pointer_alignment as usize;
        // One binding, one allocation: the largest power of two of both (and of 4 GiB,
        // the shaders' u32 offsets).
        let one = u64::from(limits.max_storage_buffer_range)
            .min(m3.max_memory_allocation_size)
            .clamp(4096, 1 << 32);
        let window = 1u64 << (63 - one.leading_zeros());
        // SAFETY: `pd` belongs to this instance.
        let mem_props = unsafe { inst.get_physical_device_memory_properties(pd) };

        let prio = [1.0f32];
        let qci = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(qfi)
            .queue_priorities(&prio)];
        let mut exts = vec![];
        if info.external_memory_host {
            exts.push(ash::khr::external_memory::NAME.as_ptr());
            exts.push(ash::ext::external_memory_host::NAME.as_ptr());
        }
        // robustBufferAccess where the device has it: a further bound on what a shader
        // can touch, should a check above ever miss (docs/executor.md, threat model).
        // SAFETY: `pd` belongs to this instance.
        let supported = unsafe { inst.get_physical_device_features(pd) };
        let features = vk::PhysicalDeviceFeatures::default()
            .robust_buffer_access(supported.robust_buffer_access != 0);
        let dci = vk::DeviceCreateInfo::default()
            .queue_create_infos(&qci)
            .enabled_extension_names(&exts)
            .enabled_features(&features);
        // SAFETY: `dci` and what it points to live across the call.
        let device = unsafe { inst.create_device(pd, &dci, None) }
            .map_err(|e| Error::vk("vkCreateDevice", e))?;
        let ext_host = info
            .external_memory_host
            .then(|| ash::ext::external_memory_host::Device::new(inst, &device));
        // SAFETY: the queue family and index were requested at device creation.
        let queue = unsafe { device.get_device_queue(qfi, 0) };

        let mut ex = Executor {
            device,
            ext_host,
            import_align: import_align.max(1),
            window,
            mem_props,
            desc_pool: vk::DescriptorPool::null(),
            dsl: vk::DescriptorSetLayout::null(),
            layout: vk::PipelineLayout::null(),
            pipelines: Vec::new(),
            queue,
            cmd_pool: vk::CommandPool::null(),
            cb: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            scratch: vk::Buffer::null(),
            scratch_mem: vk::DeviceMemory::null(),
            results: vk::Buffer::null(),
            results_mem: vk::DeviceMemory::null(),
            results_ptr: std::ptr::null(),
            info,
            counters: Cell::new(Counters::default()),
            pieces: Cell::new(Pieces::default()),
            _vk: vk,
        };
        // On error, `ex`'s drop destroys whatever was created (null handles are ignored).
        ex.create_objects(qfi)?;
        Ok(ex)
    }

    fn create_objects(&mut self, qfi: u32) -> Result<(), Error> {
        let d = &self.device;
        let bindings: Vec<_> = (0..2)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let ci = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY (this block): plain object creation on a valid device with create infos
        // that live across each call.
        unsafe {
            self.dsl = d
                .create_descriptor_set_layout(&ci, None)
                .map_err(|e| Error::vk("vkCreateDescriptorSetLayout", e))?;
            let pcr = [vk::PushConstantRange::default()
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
                .size(32)];
            let dsls = [self.dsl];
            let pli = vk::PipelineLayoutCreateInfo::default()
                .set_layouts(&dsls)
                .push_constant_ranges(&pcr);
            self.layout = d
                .create_pipeline_layout(&pli, None)
                .map_err(|e| Error::vk("vkCreatePipelineLayout", e))?;
            let code = ash::util::read_spv(&mut std::io::Cursor::new(SPIRV))
                .map_err(|e| Error::Device(format!("embedded SPIR-V: {e}")))?;
            let smi = vk::ShaderModuleCreateInfo::default().code(&code);
            let module = d
                .create_shader_module(&smi, None)
                .map_err(|e| Error::vk("vkCreateShaderModule", e))?;
            let cis: Vec<_> = ENTRY_POINTS
                .iter()
                .map(|name| {
                    vk::ComputePipelineCreateInfo::default()
                        .stage(
                            vk::PipelineShaderStageCreateInfo::default()
                                .stage(vk::ShaderStageFlags::COMPUTE)
                                .module(module)
                                .name(name),
                        )
                        .layout(self.layout)
                })
                .collect();
            let r = d.create_compute_pipelines(vk::PipelineCache::null(), &cis, None);
            d.destroy_shader_module(module, None);
            self.pipelines = r.map_err(|(_, e)| Error::vk("vkCreateComputePipelines", e))?;

            let sizes = [vk::DescriptorPoolSize::default()
                .ty(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(2 * MAX_SETS)];
            let dpi = vk::DescriptorPoolCreateInfo::default()
                .flags(vk::DescriptorPoolCreateFlags::FREE_DESCRIPTOR_SET)
                .max_sets(MAX_SETS)
                .pool_sizes(&sizes);
            self.desc_pool = d
                .create_descriptor_pool(&dpi, None)
                .map_err(|e| Error::vk("vkCreateDescriptorPool", e))?;
            let cpi = vk::CommandPoolCreateInfo::default()
                .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER)
                .queue_family_index(qfi);
            self.cmd_pool = d
                .create_command_pool(&cpi, None)
                .map_err(|e| Error::vk("vkCreateCommandPool", e))?;
            let cai = vk::CommandBufferAllocateInfo::default()
                .command_pool(self.cmd_pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            self.cb = d
                .allocate_command_buffers(&cai)
                .map_err(|e| Error::vk("vkAllocateCommandBuffers", e))?[0];
            self.fence = d
                .create_fence(&vk::FenceCreateInfo::default(), None)
                .map_err(|e| Error::vk("vkCreateFence", e))?;
        }
        self.scratch = self.create_buffer(SCRATCH_BYTES, None)?;
        // SAFETY: buffer of this device.
        let req = unsafe { self.device.get_buffer_memory_requirements(self.scratch) };
        let ty = self
            .memory_type(req.memory_type_bits, vk::MemoryPropertyFlags::DEVICE_LOCAL)
            .ok_or_else(|| Error::Device("no memory type for the scratch buffer".into()))?;
        let ai = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(ty);
        // SAFETY: valid allocate info; the memory type fits the buffer.
        unsafe {
            self.scratch_mem = self
                .device
                .allocate_memory(&ai, None)
                .map_err(|e| Error::vk("vkAllocateMemory", e))?;
            self.device
                .bind_buffer_memory(self.scratch, self.scratch_mem, 0)
                .map_err(|e| Error::vk("vkBindBufferMemory", e))?;
        }
        self.results = self.create_buffer(8 * MAX_BATCH as u64, None)?;
        // SAFETY: buffer of this device.
        let req = unsafe { self.device.get_buffer_memory_requirements(self.results) };
        let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let ty = self
            .memory_type(req.memory_type_bits, want)
            .filter(|&t| {
                self.mem_props.memory_types[t as usize]
                    .property_flags
                    .contains(want)
            })
            .ok_or_else(|| Error::Device("no host-visible memory for the results".into()))?;
        let ai = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(ty);
        // SAFETY: valid allocate info; the memory type fits the buffer and is host-visible.
        unsafe {
            self.results_mem = self
                .device
                .allocate_memory(&ai, None)
                .map_err(|e| Error::vk("vkAllocateMemory", e))?;
            self.device
                .bind_buffer_memory(self.results, self.results_mem, 0)
                .map_err(|e| Error::vk("vkBindBufferMemory", e))?;
            self.results_ptr = self
                .device
                .map_memory(self.results_mem, 0, req.size, vk::MemoryMapFlags::empty())
                .map_err(|e| Error::vk("vkMapMemory", e))?
                .cast();
        }
        Ok(())
    }

    /// The largest VRAM this device can work on ([`Executor::import`] refuses larger):
    /// 4 GiB with VK_EXT_external_memory_host (a VRAM larger than
    /// [`Executor::window_size`] takes pieces only, each within one window), else one
    /// window.
    pub fn max_vram_size(&self) -> u64 {
        if self.ext_host.is_some() {
            1 << 32
        } else {
            self.window
        }
    }

    /// The most of a VRAM one binding covers (the largest power of two within
    /// `maxStorageBufferRange` and `maxMemoryAllocationSize`; 128 MiB on lavapipe). A
    /// larger VRAM runs pieces whose bytes lie within one window of this size at a
    /// multiple of half of it.
    pub fn window_size(&self) -> u64 {
        self.window
    }

    /// The device in use.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Split long commands into pieces of at most this much work (`copy_bytes` is
    /// clamped to 1 ..= the scratch size, `checksum_words` to 1 ..= 32768, `gemm_macs`
    /// to at least 1).
    pub fn set_pieces(&self, p: Pieces) {
        self.pieces.set(Pieces {
            copy_bytes: p.copy_bytes.clamp(1, SCRATCH_BYTES),
            checksum_words: p.checksum_words.clamp(1, MAX_LOOP),
            gemm_macs: p.gemm_macs.max(1),
        });
    }

    /// What it has done so far.
    pub fn counters(&self) -> Counters {
        self.counters.get()
    }

    pub(crate) fn create_buffer(
        &self,
        size: u64,
        external: Option<vk::ExternalMemoryHandleTypeFlags>,
    ) -> Result<vk::Buffer, Error> {
        let mut ext = vk::ExternalMemoryBufferCreateInfo::default();
        let mut ci = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_DST
                    | vk::BufferUsageFlags::TRANSFER_SRC,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        if let Some(ht) = external {
            ext = ext.handle_types(ht);
            ci = ci.push_next(&mut ext);
        }
        // SAFETY: `ci`'s chain lives across the call.
        unsafe { self.device.create_buffer(&ci, None) }.map_err(|e| Error::vk("vkCreateBuffer", e))
    }

    /// A memory type among `bits`, one with `prefer` if there is one.
    pub(crate) fn memory_type(&self, bits: u32, prefer: vk::MemoryPropertyFlags) -> Option<u32> {
        let n = self.mem_props.memory_type_count;
        let ok = |i: u32| bits & (1 << i) != 0;
        (0..n)
            .find(|&i| {
                ok(i)
                    && self.mem_props.memory_types[i as usize]
                        .property_flags
                        .contains(prefer)
            })
            .or_else(|| (0..n).find(|&i| ok(i)))
    }

    /// A descriptor set binding `vram` (binding 0) and the scratch buffer (binding 1).
    pub(crate) fn descriptor_set(&self, vram: vk::Buffer) -> Result<vk::DescriptorSet, Error> {
        let dsls = [self.dsl];
        let ai = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(self.desc_pool)
            .set_layouts(&dsls);
        // SAFETY: pool and layout of this device.
        let set = unsafe { self.device.allocate_descriptor_sets(&ai) }
            .map_err(|e| Error::vk("vkAllocateDescriptorSets", e))?[0];
        let infos = [
            [vk::DescriptorBufferInfo::default()
                .buffer(vram)
                .range(vk::WHOLE_SIZE)],
            [vk::DescriptorBufferInfo::default()
                .buffer(self.scratch)
                .range(vk::WHOLE_SIZE)],
        ];
        let writes: Vec<_> = infos
            .iter()
            .enumerate()
            .map(|(b, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(b as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        // SAFETY: the set is not in use; the buffers are valid.
        unsafe { self.device.update_descriptor_sets(&writes, &[]) };
        Ok(set)
    }

    /// Run `cmds` on `vram`, in order, as one submission, and wait for them. `mode` is
    /// the scanout a BLIT writes to (as the kernel saw it when it validated the BLIT);
    /// [`Executor::execute_modes`] takes one per command.
    ///
    /// Each command is checked first with the engine ABI's reference validator (the
    /// kernel has validated it already; this is defence in depth so that a bad handoff
    /// cannot make the GPU touch memory outside this VRAM): if any is refused, nothing
    /// runs. JUMP and NOP do nothing here, FENCE only its WRITE (the FENCE register and
    /// the interrupt are the kernel's).
    pub fn execute(
        &self,
        vram: &mut Vram<'_>,
        cmds: &[RawCmd],
        mode: Option<ScanoutMode>,
    ) -> Result<(), Error> {
        let work: Vec<_> = cmds.iter().map(|&c| (c, mode)).collect();
        self.execute_modes(vram, &work)
    }

    /// As [`Executor::execute`], each command with the scanout mode its BLIT writes to
    /// (the mode may change between two commands of one batch: the kernel snapshots it
    /// when it validates each BLIT).
    pub fn execute_modes(
        &self,
        vram: &mut Vram<'_>,
        work: &[(RawCmd, Option<ScanoutMode>)],
    ) -> Result<(), Error> {
        if !std::ptr::eq(vram.exec, self) {
            return Err(Error::Vram("this VRAM belongs to another executor".into()));
        }
        if vram.set == vk::DescriptorSet::null() {
            return Err(Error::Vram(format!(
                "a VRAM of {} bytes is larger than one binding ({} bytes): pieces only",
                vram.len(),
                self.window
            )));
        }
        for (c, mode) in work {
            let lim = Limits {
                vram_size: vram.len() as u64,
                ring_size: 1 << 20,
                mode: *mode,
            };
            if let Err(e) = check(c, &lim) {
                let mut n = self.counters.get();
                n.rejected += 1;
                self.counters.set(n);
                return Err(e);
            }
        }
        let dispatches = self.submit(|rec| {
            rec.bind(vram.set);
            for (c, mode) in work {
                rec.command(vram.buffer, c, *mode);
            }
        })?;
        let mut n = self.counters.get();
        n.commands += work.len() as u64;
        n.dispatches += dispatches;
        n.submits += 1;
        self.counters.set(n);
        debug!("{} commands, {} dispatches", work.len(), dispatches);
        Ok(())
    }

    /// Record what `record` records into the command buffer, submit it and wait for it.
    /// Returns the dispatches recorded.
    pub(crate) fn submit(&self, record: impl FnOnce(&mut Recorder<'_>)) -> Result<u64, Error> {
        let mut rec = Recorder {
            ex: self,
            cb: self.cb,
            dispatches: 0,
            pieces: self.pieces.get(),
        };
        let d = &self.device;
        // SAFETY (this block): the command buffer is not pending (every submit is waited
        // for below), its pool allows reset; the recorded objects are valid and stay
        // alive until the fence wait returns (the callers borrow the VRAMs for the call).
        unsafe {
            d.reset_command_buffer(self.cb, vk::CommandBufferResetFlags::empty())
                .map_err(|e| Error::vk("vkResetCommandBuffer", e))?;
            let bi = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            d.begin_command_buffer(self.cb, &bi)
                .map_err(|e| Error::vk("vkBeginCommandBuffer", e))?;
            record(&mut rec);
            let host = vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(vk::AccessFlags::HOST_READ | vk::AccessFlags::HOST_WRITE);
            d.cmd_pipeline_barrier(
                self.cb,
                vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[host],
                &[],
                &[],
            );
            d.end_command_buffer(self.cb)
                .map_err(|e| Error::vk("vkEndCommandBuffer", e))?;
            let cbs = [self.cb];
            let si = [vk::SubmitInfo::default().command_buffers(&cbs)];
            d.queue_submit(self.queue, &si, self.fence)
                .map_err(|e| Error::vk("vkQueueSubmit", e))?;
            let w = d.wait_for_fences(&[self.fence], true, u64::MAX);
            let r = d.reset_fences(&[self.fence]);
            w.map_err(|e| Error::vk("vkWaitForFences", e))?;
            r.map_err(|e| Error::vk("vkResetFences", e))?;
        }
        Ok(rec.dispatches)
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        let mut n = self.counters.get();
        f(&mut n);
        self.counters.set(n);
    }
}

/// Refuse what the reference validator says must fail, and any write outside VRAM
/// (the scanout of `mode` included).
pub(crate) fn check(c: &RawCmd, lim: &Limits) -> Result<(), Error> {
    if c.opcode() == reg::OP_BLIT {
        if let Some(md) = lim.mode {
            // A displayable mode (docs/device-abi.md): rows that do not overlap, inside
            // VRAM (the shader divides by the stride).
            let row = md.xres.checked_mul(md.bytes_pp);
            let end = md
                .yres
                .checked_sub(1)
                .and_then(|r| r.checked_mul(md.stride))
                .and_then(|s| s.checked_add(md.start))
                .and_then(|s| row.and_then(|r| s.checked_add(r)));
            if !(2..=4).contains(&md.bytes_pp)
                || md.xres == 0
                || row.is_none_or(|r| md.stride < r)
                || end.is_none_or(|e| e > lim.vram_size)
            {
                return Err(Error::Rejected(format!(
                    "scanout mode {md:?} is not displayable in this VRAM"
                )));
            }
        }
    }
    let v = reference::validate(c, lim);
    if v.must_fail() {
        return Err(Error::Rejected(format!("{c:?}: {}", v.must.names())));
    }
    for (off, len) in reference::writes(c, lim) {
        if off.checked_add(len).is_none_or(|e| e > lim.vram_size) {
            return Err(Error::Rejected(format!(
                "{c:?}: writes [{off:#x}, +{len:#x}) outside VRAM"
            )));
        }
    }
    Ok(())
}

/// Whether `[a, a + al)` and `[b, b + bl)` overlap.
pub(crate) fn overlap(a: u64, al: u64, b: u64, bl: u64) -> bool {
    a < b + bl && b < a + al
}

/// Words that cover bytes `[first, first + len)`.
fn words_covering(first: u64, len: u64) -> u64 {
    (first + len).div_ceil(4) - first / 4
}

pub(crate) struct Recorder<'a> {
    pub(crate) ex: &'a Executor,
    pub(crate) cb: vk::CommandBuffer,
    dispatches: u64,
    pub(crate) pieces: Pieces,
}

impl Recorder<'_> {
    /// Bind `set` (a VRAM's descriptor set) for the dispatches that follow.
    pub(crate) fn bind(&self, set: vk::DescriptorSet) {
        // SAFETY: recording state; a set of this executor's layout.
        unsafe {
            self.ex.device.cmd_bind_descriptor_sets(
                self.cb,
                vk::PipelineBindPoint::COMPUTE,
                self.ex.layout,
                0,
                &[set],
                &[],
            )
        };
    }

    /// Record one dispatch and a barrier that makes its writes visible to what follows.
    pub(crate) fn dispatch(&mut self, pipe: Pipe, p: [u64; 8], groups: (u64, u64)) {
        let d = &self.ex.device;
        // Validated commands on a VRAM under 4 GiB: every parameter fits in u32.
        let words: Vec<u8> = p.iter().flat_map(|&v| (v as u32).to_le_bytes()).collect();
        // SAFETY: recording into a command buffer in the recording state, with the
        // executor's pipeline, layout and a 32-byte push-constant range.
        unsafe {
            d.cmd_bind_pipeline(
                self.cb,
                vk::PipelineBindPoint::COMPUTE,
                self.ex.pipelines[pipe as usize],
            );
            d.cmd_push_constants(
                self.cb,
                self.ex.layout,
                vk::ShaderStageFlags::COMPUTE,
                0,
                &words,
            );
            d.cmd_dispatch(self.cb, groups.0 as u32, groups.1 as u32, 1);
        }
        self.barrier();
        self.dispatches += 1;
    }

    pub(crate) fn barrier(&self) {
        let all = vk::AccessFlags::SHADER_READ
            | vk::AccessFlags::SHADER_WRITE
            | vk::AccessFlags::TRANSFER_READ
            | vk::AccessFlags::TRANSFER_WRITE;
        let b = vk::MemoryBarrier::default()
            .src_access_mask(all)
            .dst_access_mask(all);
        let st = vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER;
        // SAFETY: recording state; a global memory barrier.
        unsafe {
            self.ex.device.cmd_pipeline_barrier(
                self.cb,
                st,
                st,
                vk::DependencyFlags::empty(),
                &[b],
                &[],
                &[],
            )
        };
    }

    pub(crate) fn grid(words: u64) -> (u64, u64) {
        (words.div_ceil(WG).clamp(1, MAX_GROUPS), 1)
    }

    /// Strided byte copy (shader `copy`); `flags` bit 0 source in scratch, bit 1
    /// destination in scratch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy2d(
        &mut self,
        dst: u64,
        dst_stride: u64,
        row: u64,
        rows: u64,
        src: u64,
        src_stride: u64,
        flags: u64,
    ) {
        let span = (rows - 1) * dst_stride + row;
        let nw = words_covering(dst, span);
        self.dispatch(
            Pipe::Copy,
            [dst, dst_stride, row, rows, src, src_stride, nw, flags],
            Self::grid(nw),
        );
    }

    /// memmove of `len` bytes within VRAM.
    pub(crate) fn memmove(&mut self, dst: u64, src: u64, len: u64) {
        if dst == src {
            return;
        }
        if !overlap(dst, len, src, len) {
            self.copy2d(dst, len, len, 1, src, 0, 0);
            return;
        }
        // Through the scratch buffer, piece by piece in the order memmove needs: from
        // the top when the destination lies above the source.
        let size = self.pieces.copy_bytes;
        let pieces = len.div_ceil(size);
        for i in 0..pieces {
            let piece = if dst > src { pieces - 1 - i } else { i };
            let off = piece * size;
            let l = size.min(len - off);
            self.copy2d(0, l, l, 1, src + off, 0, 2);
            self.copy2d(dst + off, l, l, 1, 0, 0, 1);
        }
    }

    /// `h` rows of `row` bytes from `src` (rows `ss` apart) to `first` in the scanout
    /// `md`, top to bottom, each row a memmove (BLIT, or a piece of one).
    pub(crate) fn blit_rows(
        &mut self,
        md: &ScanoutMode,
        src: u64,
        ss: u64,
        row: u64,
        first: u64,
        h: u64,
    ) {
        let dst_span = (h - 1) * md.stride + row;
        let src_span = (h - 1) * ss + row;
        if !overlap(first, dst_span, src, src_span) {
            // No row reads what another writes: all rows in one dispatch.
            self.copy2d(first, md.stride, row, h, src, ss, 0);
        } else {
            // Top to bottom, each row a memmove (later rows see earlier ones).
            for r in 0..h {
                self.memmove(first + r * md.stride, src + r * ss, row);
            }
        }
    }

    fn command(&mut self, vram: vk::Buffer, c: &RawCmd, mode: Option<ScanoutMode>) {
        let a = c.args;
        match c.opcode() {
            reg::OP_FILL => {
                let n = a[1] / 4;
                self.dispatch(
                    Pipe::Fill,
                    [a[0] / 4, n, a[2] & 0xffff_ffff, 0, 0, 0, 0, 0],
                    Self::grid(n),
                );
            }
            reg::OP_COPY => self.memmove(a[0], a[1], a[2]),
            reg::OP_CHECKSUM => {
                let (src, n, dst) = (a[0] / 4, a[1] / 4, a[2] / 4);
                let size = self.pieces.checksum_words;
                let pieces = n.div_ceil(size);
                for i in 0..pieces {
                    let off = i * size;
                    let flags = u64::from(i == 0) | u64::from(i + 1 == pieces) << 1;
                    let l = size.min(n - off);
                    self.dispatch(
                        Pipe::Checksum,
                        [src + off, l, flags, dst, 0, 0, 0, 0],
                        (1, 1),
                    );
                }
            }
            reg::OP_GEMM => {
                let (ma, mb, mc, m, n, k) = (a[0], a[1], a[2], a[3], a[4], a[5]);
                let p = |x: u64, y: u64| [ma / 4, mb / 4, mc / 4, m, n, k, x, y];
                if overlap(mc, 4 * m * n, ma, 4 * m * k) || overlap(mc, 4 * m * n, mb, 4 * k * n) {
                    // Strictly one element after the other, in row-major order.
                    let per = (self.pieces.gemm_macs / k).clamp(1, MAX_LOOP);
                    let total = m * n;
                    let mut e = 0;
                    while e < total {
                        let l = per.min(total - e);
                        self.dispatch(Pipe::GemmSerial, p(e, l), (1, 1));
                        e += l;
                    }
                } else {
                    let rows = (self.pieces.gemm_macs / (n * k)).clamp(1, 65535);
                    let mut r = 0;
                    while r < m {
                        let l = rows.min(m - r);
                        self.dispatch(Pipe::Gemm, p(r, l), (n.div_ceil(4).div_ceil(WG), l));
                        r += l;
                    }
                }
            }
            reg::OP_BLIT => {
                let Some(md) = mode else { return };
                let (src, ss, w, h) = (a[0], a[1], a[2], a[3]);
                self.blit_rows(
                    &md,
                    src,
                    ss,
                    w * md.bytes_pp,
                    md.pixel_offset(a[4], a[5]),
                    h,
                );
            }
            reg::OP_FENCE if c.flags() & reg::FENCE_FLAG_WRITE != 0 => {
                // SAFETY: recording state; `vram` has TRANSFER_DST usage; the 8-aligned
                // offset was checked against the VRAM size.
                unsafe {
                    self.ex
                        .device
                        .cmd_update_buffer(self.cb, vram, a[1], &a[0].to_le_bytes())
                };
                self.barrier();
            }
            _ => {}
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let d = &self.device;
        // SAFETY: every Vram borrowed `self` and is gone; nothing is pending after
        // device_wait_idle; null handles are ignored by the destroy calls.
        unsafe {
            let _ = d.device_wait_idle();
            d.destroy_fence(self.fence, None);
            d.destroy_command_pool(self.cmd_pool, None);
            d.destroy_descriptor_pool(self.desc_pool, None);
            for &p in &self.pipelines {
                d.destroy_pipeline(p, None);
            }
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_set_layout(self.dsl, None);
            d.destroy_buffer(self.scratch, None);
            d.free_memory(self.scratch_mem, None);
            d.destroy_buffer(self.results, None);
            if !self.results_ptr.is_null() {
                d.unmap_memory(self.results_mem);
            }
            d.free_memory(self.results_mem, None);
            d.destroy_device(None);
        }
    }
}
