//! An instance's VRAM as the GPU sees it: host memory imported with
//! VK_EXT_external_memory_host, or (fallback) mapped host-visible device memory.

use std::alloc::Layout;
use std::collections::HashMap;

use ash::vk;

use crate::exec::Executor;
use crate::Error;

enum Backing {
    /// Host memory this process allocated (and frees on drop), imported.
    Owned(Layout),
    /// Host memory the caller owns (e.g. the kernel's VRAM pages mapped in), imported.
    Borrowed,
    /// Device memory mapped into the process (no VK_EXT_external_memory_host).
    Mapped,
}

/// A window of a VRAM larger than one binding: bytes `[w, w + len)` imported on their
/// own, with their descriptor set.
struct Window {
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    set: vk::DescriptorSet,
    len: u64,
}

/// One VRAM: a storage buffer over host memory, bound with the executor's scratch
/// buffer in a descriptor set of its own. Commands run on it with
/// [`Executor::execute`], which takes it `&mut`: the host cannot touch the bytes while
/// the GPU works on them.
///
/// A VRAM larger than one binding ([`Executor::window_size`]) has no binding of its
/// own: it takes pieces only ([`Executor::execute_pieces`]), each run in a window (an
/// import of part of the same host memory) created when first needed.
pub struct Vram<'e> {
    pub(crate) exec: &'e Executor,
    /// Null for a windowed VRAM.
    pub(crate) buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    /// Null for a windowed VRAM.
    pub(crate) set: vk::DescriptorSet,
    ptr: *mut u8,
    len: usize,
    backing: Backing,
    windows: HashMap<u64, Window>,
}

impl Vram<'_> {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the size is 0 (never: a VRAM has at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the GPU works on the host memory itself (VK_EXT_external_memory_host)
    /// rather than on mapped device memory.
    pub fn imported(&self) -> bool {
        !matches!(self.backing, Backing::Mapped)
    }

    /// The bytes (no GPU work is in flight: `execute` waits for its commands).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` bytes that live as long as `self`, host-coherent,
        // and no GPU work runs on them outside `Executor::execute` (which borrows `self`
        // mutably and waits for completion).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, for writing.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Whether this VRAM is larger than one binding (pieces only, through windows).
    pub fn windowed(&self) -> bool {
        self.set == vk::DescriptorSet::null()
    }

    /// The descriptor set of the window at byte `w` and the window's length: the whole
    /// VRAM (`w` must be 0) unless it is windowed, else a window of
    /// `Executor::window_size` bytes (less at the end) at `w`, a multiple of half of
    /// it, imported now if it is not yet.
    pub(crate) fn window(&mut self, w: u64) -> Result<(vk::DescriptorSet, u64), Error> {
        if !self.windowed() {
            return if w == 0 {
                Ok((self.set, self.len as u64))
            } else {
                Err(Error::Vram(format!(
                    "no window at {w:#x} of a VRAM bound whole"
                )))
            };
        }
        let size = self.exec.window;
        if !w.is_multiple_of(size / 2) || w >= self.len as u64 {
            return Err(Error::Vram(format!("no window at {w:#x}")));
        }
        if let Some(win) = self.windows.get(&w) {
            return Ok((win.set, win.len));
        }
        let len = size.min(self.len as u64 - w);
        // SAFETY: `w < len` and both are multiples of 4 KiB (window sizes are powers of
        // two of at least 4 KiB, the VRAM a multiple of 4 KiB): the range lies inside
        // this VRAM's memory, which outlives the window (dropped first in `drop`), and
        // is page-aligned as the import needs (checked when the VRAM was made).
        let (buffer, memory) = unsafe {
            self.exec
                .import_memory(self.ptr.add(w as usize), len as usize)?
        };
        let set = self.exec.bind_set(buffer, memory, false)?;
        self.windows.insert(
            w,
            Window {
                buffer,
                memory,
                set,
                len,
            },
        );
        log::debug!(
            "window [{w:#x}, +{len:#x}) of a VRAM of {:#x} bytes",
            self.len
        );
        Ok((set, len))
    }
}

impl Drop for Vram<'_> {
    fn drop(&mut self) {
        let d = &self.exec.device;
        // SAFETY: no command using these objects is pending (execute waits for its
        // fence); the sets come from the executor's pool, created with
        // FREE_DESCRIPTOR_SET; null handles (a windowed VRAM's own) are ignored.
        unsafe {
            for (_, w) in self.windows.drain() {
                let _ = d.free_descriptor_sets(self.exec.desc_pool, &[w.set]);
                d.destroy_buffer(w.buffer, None);
                d.free_memory(w.memory, None);
            }
            if self.set != vk::DescriptorSet::null() {
                let _ = d.free_descriptor_sets(self.exec.desc_pool, &[self.set]);
            }
            d.destroy_buffer(self.buffer, None);
            if matches!(self.backing, Backing::Mapped) {
                d.unmap_memory(self.memory);
            }
            d.free_memory(self.memory, None);
        }
        if let Backing::Owned(layout) = self.backing {
            // SAFETY: allocated in `alloc_vram` with this layout; the Vulkan memory that
            // imported it was freed above.
            unsafe { std::alloc::dealloc(self.ptr, layout) };
        }
    }
}

impl Executor {
    /// A size this device takes: windowed (larger than one binding, pieces only) or
    /// not.
    fn check_vram_size(&self, len: usize, windows: bool) -> Result<bool, Error> {
        if len == 0 || !len.is_multiple_of(4096) {
            return Err(Error::Vram(format!(
                "size {len} is not a non-zero multiple of 4 KiB"
            )));
        }
        let max = if windows { 1 << 32 } else { self.window };
        if len as u64 > max {
            return Err(Error::Vram(format!(
                "size {len:#x} exceeds {max:#x} bytes (one storage-buffer binding: {:#x} bytes \
                 on this device; with VK_EXT_external_memory_host a VRAM of up to 4 GiB takes \
                 pieces through windows)",
                self.window
            )));
        }
        Ok(len as u64 > self.window)
    }

    /// A zeroed VRAM of `len` bytes (a multiple of 4 KiB): host memory imported with
    /// VK_EXT_external_memory_host when the device has it, else mapped device memory.
    pub fn alloc_vram(&self, len: usize) -> Result<Vram<'_>, Error> {
        let windowed = self.check_vram_size(len, self.ext_host.is_some())?;
        if self.ext_host.is_none() {
            return self.alloc_mapped_vram(len);
        }
        let align = self.import_align.max(4096);
        let layout = Layout::from_size_align(len.next_multiple_of(align), align)
            .map_err(|e| Error::Vram(format!("layout: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::Vram(format!("cannot allocate {len} bytes")));
        }
        if windowed {
            return Ok(self.windowed_vram(ptr, len, Backing::Owned(layout)));
        }
        // SAFETY: `ptr` is a fresh allocation of `layout.size()` bytes aligned to the
        // import alignment; on error it is freed here, on success by the Vram's drop.
        match unsafe { self.import_inner(ptr, layout.size(), Backing::Owned(layout)) } {
            Ok(v) => Ok(v),
            Err(e) => {
                // SAFETY: allocated above with `layout`, not imported.
                unsafe { std::alloc::dealloc(ptr, layout) };
                Err(e)
            }
        }
    }

    /// Import `len` bytes of host memory at `ptr` as a VRAM (the daemon passes the
    /// kernel's VRAM pages mapped through the per-parent device). Up to 4 GiB: a VRAM
    /// larger than [`Executor::window_size`] is imported window by window when pieces
    /// need them ([`Vram::windowed`]).
    ///
    /// # Safety
    ///
    /// `ptr` must be aligned to the device's `minImportedHostPointerAlignment`, point to
    /// `len` readable and writable bytes that stay mapped for the life of the returned
    /// VRAM, and nothing else in this process may access them while a command runs.
    pub unsafe fn import(&self, ptr: *mut u8, len: usize) -> Result<Vram<'_>, Error> {
        let windowed = self.check_vram_size(len, true)?;
        if self.ext_host.is_none() {
            return Err(Error::Vram(
                "the device has no VK_EXT_external_memory_host: host memory cannot be imported"
                    .into(),
            ));
        }
        if !(ptr as usize).is_multiple_of(self.import_align)
            || !len.is_multiple_of(self.import_align)
        {
            return Err(Error::Vram(format!(
                "pointer and size must be multiples of {} bytes",
                self.import_align
            )));
        }
        if windowed {
            return Ok(self.windowed_vram(ptr, len, Backing::Borrowed));
        }
        // SAFETY: the caller's contract.
        unsafe { self.import_inner(ptr, len, Backing::Borrowed) }
    }

    /// A VRAM larger than one binding: nothing imported yet (windows are, when needed).
    fn windowed_vram(&self, ptr: *mut u8, len: usize, backing: Backing) -> Vram<'_> {
        Vram {
            exec: self,
            buffer: vk::Buffer::null(),
            memory: vk::DeviceMemory::null(),
            set: vk::DescriptorSet::null(),
            ptr,
            len,
            backing,
            windows: HashMap::new(),
        }
    }

    /// # Safety
    /// `ptr`/`len` as for [`Executor::import`], and `ext_host` is present.
    unsafe fn import_inner(
        &self,
        ptr: *mut u8,
        len: usize,
        backing: Backing,
    ) -> Result<Vram<'_>, Error> {
        // SAFETY: the caller's contract.
        let (buffer, memory) = unsafe { self.import_memory(ptr, len)? };
        self.finish_vram(buffer, memory, ptr, len, backing)
    }

    /// A buffer over `len` bytes of host memory at `ptr`, imported.
    ///
    /// # Safety
    /// `ptr`/`len` as for [`Executor::import`], and `ext_host` is present.
    pub(crate) unsafe fn import_memory(
        &self,
        ptr: *mut u8,
        len: usize,
    ) -> Result<(vk::Buffer, vk::DeviceMemory), Error> {
        let ext = self
            .ext_host
            .as_ref()
            .ok_or_else(|| Error::Vram("no external_memory_host".into()))?;
        let ht = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
        let buffer = self.create_buffer(len as u64, Some(ht))?;
        let mut hp = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: `ptr` is a host allocation of `len` bytes (the caller's contract).
        // (ash 0.38 has only the raw function pointer for this extension.)
        let r = unsafe {
            (ext.fp().get_memory_host_pointer_properties_ext)(
                self.device.handle(),
                ht,
                ptr.cast_const().cast(),
                &mut hp,
            )
        }
        .result();
        let res = r
            .map_err(|e| Error::vk("vkGetMemoryHostPointerPropertiesEXT", e))
            .and_then(|()| {
                // SAFETY: `buffer` was created on this device.
                let req = unsafe { self.device.get_buffer_memory_requirements(buffer) };
                let ty = self
                    .memory_type(
                        req.memory_type_bits & hp.memory_type_bits,
                        vk::MemoryPropertyFlags::HOST_COHERENT,
                    )
                    .ok_or_else(|| {
                        Error::Vram("no host-coherent memory type can import host memory".into())
                    })?;
                let mut imp = vk::ImportMemoryHostPointerInfoEXT::default()
                    .handle_type(ht)
                    .host_pointer(ptr.cast());
                let ai = vk::MemoryAllocateInfo::default()
                    .allocation_size(len as u64)
                    .memory_type_index(ty)
                    .push_next(&mut imp);
                // SAFETY: `ai`'s chain lives across the call; `ptr` is valid for `len` bytes.
                unsafe { self.device.allocate_memory(&ai, None) }
                    .map_err(|e| Error::vk("vkAllocateMemory (import)", e))
            });
        match res {
            Ok(m) => Ok((buffer, m)),
            Err(e) => {
                // SAFETY: unused buffer of this device.
                unsafe { self.device.destroy_buffer(buffer, None) };
                Err(e)
            }
        }
    }

    /// A zeroed VRAM of `len` bytes in host-visible, host-coherent device memory mapped
    /// into the process (what [`Executor::alloc_vram`] falls back to on a device
    /// without VK_EXT_external_memory_host; public so that path is tested everywhere).
    pub fn alloc_mapped_vram(&self, len: usize) -> Result<Vram<'_>, Error> {
        self.check_vram_size(len, false)?;
        let buffer = self.create_buffer(len as u64, None)?;
        // SAFETY: `buffer` was created on this device.
        let req = unsafe { self.device.get_buffer_memory_requirements(buffer) };
        let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let res = self
            .memory_type(req.memory_type_bits, want)
            .filter(|&t| {
                self.mem_props.memory_types[t as usize]
                    .property_flags
                    .contains(want)
            })
            .ok_or_else(|| Error::Vram("no host-visible, host-coherent memory type".into()))
            .and_then(|ty| {
                let ai = vk::MemoryAllocateInfo::default()
                    .allocation_size(req.size)
                    .memory_type_index(ty);
                // SAFETY: valid allocate info.
                unsafe { self.device.allocate_memory(&ai, None) }
                    .map_err(|e| Error::vk("vkAllocateMemory", e))
            });
        let memory = match res {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: unused buffer of this device.
                unsafe { self.device.destroy_buffer(buffer, None) };
                return Err(e);
            }
        };
        // SAFETY: host-visible memory of this device, not mapped yet.
        let ptr = match unsafe {
            self.device
                .map_memory(memory, 0, len as u64, vk::MemoryMapFlags::empty())
        } {
            Ok(p) => p.cast::<u8>(),
            Err(e) => {
                // SAFETY: unused objects of this device.
                unsafe {
                    self.device.destroy_buffer(buffer, None);
                    self.device.free_memory(memory, None);
                }
                return Err(Error::vk("vkMapMemory", e));
            }
        };
        // SAFETY: freshly mapped memory of `len` bytes; zero it as a new VRAM reads.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        self.finish_vram(buffer, memory, ptr, len, Backing::Mapped)
    }

    fn finish_vram(
        &self,
        buffer: vk::Buffer,
        memory: vk::DeviceMemory,
        ptr: *mut u8,
        len: usize,
        backing: Backing,
    ) -> Result<Vram<'_>, Error> {
        let set = self.bind_set(buffer, memory, matches!(backing, Backing::Mapped))?;
        Ok(Vram {
            exec: self,
            buffer,
            memory,
            set,
            ptr,
            len,
            backing,
            windows: HashMap::new(),
        })
    }

    /// Bind `memory` to `buffer` and make its descriptor set; on error destroy both
    /// (unmapping `memory` first if `mapped`).
    pub(crate) fn bind_set(
        &self,
        buffer: vk::Buffer,
        memory: vk::DeviceMemory,
        mapped: bool,
    ) -> Result<vk::DescriptorSet, Error> {
        let cleanup = |e: Error| {
            // SAFETY: objects of this device that nothing uses yet.
            unsafe {
                if mapped {
                    self.device.unmap_memory(memory);
                }
                self.device.destroy_buffer(buffer, None);
                self.device.free_memory(memory, None);
            }
            e
        };
        // SAFETY: buffer and memory of this device; the memory type fits the buffer.
        unsafe { self.device.bind_buffer_memory(buffer, memory, 0) }
            .map_err(|e| cleanup(Error::vk("vkBindBufferMemory", e)))?;
        self.descriptor_set(buffer).map_err(cleanup)
    }
}
