//! A shared mapping of a VFIO region with bounds-checked volatile access.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use crate::device::{check_aligned, check_bounds, region_file_offset};
use crate::error::{Error, Result};

/// The result of a failed [`MappedRegion::verify_u64`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Offset (in the mapping) of the first mismatching u64.
    pub offset: u64,
    /// What was there.
    pub found: u64,
    /// What was expected.
    pub expected: u64,
    /// How many u64 words mismatched in all.
    pub count: u64,
}

/// A `MAP_SHARED` mapping of part of a VFIO region, unmapped on drop.
///
/// The memory is shared with the device (and the kernel may fault pages in lazily), so it
/// is only ever accessed through volatile reads and writes on raw pointers; no Rust
/// reference to it is ever created. The mapping keeps the device open in the kernel until
/// it is dropped, even if the [`crate::Device`] is closed first.
#[derive(Debug)]
pub struct MappedRegion {
    ptr: NonNull<u8>,
    len: usize,
    index: u32,
    offset: u64,
}

// SAFETY: the mapping is plain shared memory owned by this value; all access goes through
// volatile raw-pointer operations, which are as safe from any thread as from one.
unsafe impl Send for MappedRegion {}
// SAFETY: as above: &MappedRegion only allows volatile reads/writes of shared memory (no
// references into it), which do not create data races in the Rust sense for the program.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    pub(crate) fn map(file: &File, index: u32, offset: u64, len: u64, prot: i32) -> Result<Self> {
        let mmap_err = |source| Error::Mmap {
            index,
            offset,
            len,
            source,
        };
        let fo = region_file_offset(index, offset)
            .ok_or_else(|| mmap_err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        let ulen = usize::try_from(len)
            .map_err(|_| mmap_err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        if ulen == 0 {
            return Err(mmap_err(std::io::Error::from_raw_os_error(libc::EINVAL)));
        }
        let off = libc::off_t::try_from(fo)
            .map_err(|_| mmap_err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: a fresh mapping (addr NULL, no MAP_FIXED) cannot alias existing memory;
        // the fd is valid for the duration of the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ulen,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(mmap_err(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p as *mut u8)
            .ok_or_else(|| mmap_err(std::io::Error::from_raw_os_error(libc::EFAULT)))?;
        Ok(MappedRegion {
            ptr,
            len: ulen,
            index,
            offset,
        })
    }

    /// A shared mapping of `len` bytes at region `index`, `offset` of any file that
    /// places region n at file offset n << 40 as VFIO does: a VFIO device fd, or the
    /// guest driver's char device (`guest-driver/`, BAR n at n << 40).
    pub fn map_file(file: &File, index: u32, offset: u64, len: u64, prot: i32) -> Result<Self> {
        Self::map(file, index, offset, len, prot)
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the mapping is empty (never: zero-length maps are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Region index mapped.
    pub fn region_index(&self) -> u32 {
        self.index
    }

    /// Region offset of the mapping's first byte.
    pub fn region_offset(&self) -> u64 {
        self.offset
    }

    /// Raw pointer to the start of the mapping (for DMA mapping or syscalls).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn at<T>(&self, off: u64) -> Result<*mut T> {
        let size = std::mem::size_of::<T>() as u64;
        check_bounds(off, size, self.len as u64)?;
        check_aligned(off, size)?;
        // SAFETY: off + size <= len (checked), so the pointer stays inside the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(off as usize) } as *mut T)
    }

    /// Volatile read of a `T` (u8/u16/u32/u64) at `off`, which must be naturally aligned.
    fn read<T: Copy>(&self, off: u64) -> Result<T> {
        let p = self.at::<T>(off)?;
        // SAFETY: `p` is inside the mapping and aligned for T (checked in `at`); the memory
        // is readable (mapped with PROT_READ by the callers that read) and T is a plain
        // integer, valid for any bit pattern.
        Ok(unsafe { std::ptr::read_volatile(p) })
    }

    fn write<T: Copy>(&self, off: u64, v: T) -> Result<()> {
        let p = self.at::<T>(off)?;
        // SAFETY: `p` is inside the mapping and aligned for T (checked in `at`); no Rust
        // reference to this memory exists.
        unsafe { std::ptr::write_volatile(p, v) };
        Ok(())
    }

    /// Read a u8.
    pub fn read_u8(&self, off: u64) -> Result<u8> {
        self.read(off)
    }
    /// Read a u16 (naturally aligned).
    pub fn read_u16(&self, off: u64) -> Result<u16> {
        self.read(off)
    }
    /// Read a u32 (naturally aligned).
    pub fn read_u32(&self, off: u64) -> Result<u32> {
        self.read(off)
    }
    /// Read a u64 (naturally aligned).
    pub fn read_u64(&self, off: u64) -> Result<u64> {
        self.read(off)
    }
    /// Write a u8.
    pub fn write_u8(&self, off: u64, v: u8) -> Result<()> {
        self.write(off, v)
    }
    /// Write a u16 (naturally aligned).
    pub fn write_u16(&self, off: u64, v: u16) -> Result<()> {
        self.write(off, v)
    }
    /// Write a u32 (naturally aligned).
    pub fn write_u32(&self, off: u64, v: u32) -> Result<()> {
        self.write(off, v)
    }
    /// Write a u64 (naturally aligned).
    pub fn write_u64(&self, off: u64, v: u64) -> Result<()> {
        self.write(off, v)
    }

    /// Copy bytes out of the mapping (byte-wise volatile reads, any alignment).
    pub fn read_bytes(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(off, buf.len() as u64, self.len as u64)?;
        let base = self.ptr.as_ptr();
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: off + i < off + buf.len() <= len (checked above).
            *b = unsafe { std::ptr::read_volatile(base.add(off as usize + i)) };
        }
        Ok(())
    }

    /// Copy bytes into the mapping (byte-wise volatile writes, any alignment).
    pub fn write_bytes(&self, off: u64, buf: &[u8]) -> Result<()> {
        check_bounds(off, buf.len() as u64, self.len as u64)?;
        let base = self.ptr.as_ptr();
        for (i, b) in buf.iter().enumerate() {
            // SAFETY: off + i < off + buf.len() <= len (checked above).
            unsafe { std::ptr::write_volatile(base.add(off as usize + i), *b) };
        }
        Ok(())
    }

    /// Write `words` as consecutive u64s from `off` (8-aligned), one volatile write each.
    pub fn write_u64_slice(&self, off: u64, words: &[u64]) -> Result<()> {
        let p = self.span::<u64>(off, words.len())?;
        for (i, w) in words.iter().enumerate() {
            // SAFETY: `span` checked that the words.len() u64s from `p` are inside the
            // mapping and that `p` is 8-aligned; no Rust reference to this memory exists.
            unsafe { std::ptr::write_volatile(p.add(i), *w) };
        }
        Ok(())
    }

    /// Read consecutive u64s from `off` (8-aligned) into `words`.
    pub fn read_u64_slice(&self, off: u64, words: &mut [u64]) -> Result<()> {
        let p = self.span::<u64>(off, words.len())?;
        for (i, w) in words.iter_mut().enumerate() {
            // SAFETY: as in write_u64_slice; u64 is valid for any bit pattern.
            *w = unsafe { std::ptr::read_volatile(p.add(i)) };
        }
        Ok(())
    }

    /// Write `words` as consecutive u32s from `off` (4-aligned).
    pub fn write_u32_slice(&self, off: u64, words: &[u32]) -> Result<()> {
        let p = self.span::<u32>(off, words.len())?;
        for (i, w) in words.iter().enumerate() {
            // SAFETY: `span` checked bounds and 4-alignment; no references exist.
            unsafe { std::ptr::write_volatile(p.add(i), *w) };
        }
        Ok(())
    }

    /// Read consecutive u32s from `off` (4-aligned) into `words`.
    pub fn read_u32_slice(&self, off: u64, words: &mut [u32]) -> Result<()> {
        let p = self.span::<u32>(off, words.len())?;
        for (i, w) in words.iter_mut().enumerate() {
            // SAFETY: as in write_u32_slice; u32 is valid for any bit pattern.
            *w = unsafe { std::ptr::read_volatile(p.add(i)) };
        }
        Ok(())
    }

    /// Pointer to `count` consecutive `T`s from `off`, checked to lie inside the mapping
    /// and to be aligned for `T`.
    fn span<T>(&self, off: u64, count: usize) -> Result<*mut T> {
        let size = std::mem::size_of::<T>() as u64;
        let len = (count as u64).checked_mul(size).ok_or(Error::OutOfBounds {
            offset: off,
            len: u64::MAX,
            size: self.len as u64,
        })?;
        check_bounds(off, len, self.len as u64)?;
        check_aligned(off, size)?;
        // SAFETY: off + len <= self.len (checked), so the pointer stays inside the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(off as usize) } as *mut T)
    }

    /// Fill `[off, off + len)` (8-byte aligned and sized) with `f(byte_offset)` per u64,
    /// where `byte_offset` is relative to the mapping.
    pub fn fill_u64(&self, off: u64, len: u64, f: impl Fn(u64) -> u64) -> Result<()> {
        self.check_u64_range(off, len)?;
        let base = self.ptr.as_ptr() as *mut u64;
        let mut o = off;
        while o < off + len {
            // SAFETY: o is 8-aligned and o + 8 <= off + len <= self.len (checked).
            unsafe { std::ptr::write_volatile(base.add((o / 8) as usize), f(o)) };
            o += 8;
        }
        Ok(())
    }

    /// Compare `[off, off + len)` against `f(byte_offset)` per u64; returns the first
    /// mismatch and the number of mismatching words, or `None` if all match.
    pub fn verify_u64(
        &self,
        off: u64,
        len: u64,
        f: impl Fn(u64) -> u64,
    ) -> Result<Option<Mismatch>> {
        self.check_u64_range(off, len)?;
        let base = self.ptr.as_ptr() as *const u64;
        let mut first = None;
        let mut count = 0u64;
        let mut o = off;
        while o < off + len {
            // SAFETY: o is 8-aligned and o + 8 <= off + len <= self.len (checked).
            let v = unsafe { std::ptr::read_volatile(base.add((o / 8) as usize)) };
            let want = f(o);
            if v != want {
                count += 1;
                if first.is_none() {
                    first = Some((o, v, want));
                }
            }
            o += 8;
        }
        Ok(first.map(|(offset, found, expected)| Mismatch {
            offset,
            found,
            expected,
            count,
        }))
    }

    fn check_u64_range(&self, off: u64, len: u64) -> Result<()> {
        check_bounds(off, len, self.len as u64)?;
        check_aligned(off, 8)?;
        if len & 7 != 0 {
            return Err(Error::Unaligned {
                offset: len,
                size: 8,
            });
        }
        Ok(())
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping created by mmap in `map` and owned solely by
        // this value; no references into it exist.
        let r = unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
        if r != 0 {
            log::warn!("munmap failed: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anonymous shared mapping stands in for a device region.
    fn anon(len: usize) -> MappedRegion {
        // SAFETY: fresh anonymous mapping, no aliasing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        MappedRegion {
            ptr: NonNull::new(p as *mut u8).expect("non-null"),
            len,
            index: 0,
            offset: 0,
        }
    }

    #[test]
    fn typed_access_is_bounds_and_alignment_checked() {
        let m = anon(8192);
        m.write_u32(8188, 0xdead_beef).expect("last dword");
        assert_eq!(m.read_u32(8188).expect("read"), 0xdead_beef);
        assert_eq!(m.read_u8(8188).expect("byte"), 0xef);
        assert!(matches!(m.read_u32(8190), Err(Error::OutOfBounds { .. })));
        assert!(matches!(m.read_u32(8192), Err(Error::OutOfBounds { .. })));
        assert!(matches!(m.read_u32(2), Err(Error::Unaligned { .. })));
        assert!(m.read_u64(u64::MAX - 3).is_err());
    }

    #[test]
    fn bytes_cross_pages() {
        let m = anon(8192);
        m.write_bytes(4093, &[1, 2, 3, 4, 5, 6]).expect("write");
        let mut b = [0u8; 6];
        m.read_bytes(4093, &mut b).expect("read");
        assert_eq!(b, [1, 2, 3, 4, 5, 6]);
        assert!(m.write_bytes(8190, &[0; 3]).is_err());
    }

    #[test]
    fn word_slices() {
        let m = anon(8192);
        m.write_u64_slice(8, &[1, 2, 3]).expect("u64s");
        let mut w = [0u64; 3];
        m.read_u64_slice(8, &mut w).expect("read u64s");
        assert_eq!(w, [1, 2, 3]);
        m.write_u32_slice(8188, &[7]).expect("last u32");
        let mut v = [0u32; 1];
        m.read_u32_slice(8188, &mut v).expect("read");
        assert_eq!(v, [7]);
        assert!(m.write_u32_slice(8188, &[7, 8]).is_err());
        assert!(m.write_u64_slice(4, &[1]).is_err());
        assert!(m.read_u64_slice(8192, &mut [0u64; 1]).is_err());
        assert!(m.write_u64_slice(0, &[]).is_ok());
    }

    #[test]
    fn fill_and_verify() {
        let m = anon(16384);
        m.fill_u64(0, 16384, |o| o ^ 0x5a5a).expect("fill");
        assert_eq!(
            m.verify_u64(0, 16384, |o| o ^ 0x5a5a).expect("verify"),
            None
        );
        m.write_u64(4096, 0).expect("poke");
        let r = m.verify_u64(0, 16384, |o| o ^ 0x5a5a).expect("verify");
        assert_eq!(
            r,
            Some(Mismatch {
                offset: 4096,
                found: 0,
                expected: 4096 ^ 0x5a5a,
                count: 1
            })
        );
        assert!(m.fill_u64(4, 8, |_| 0).is_err());
        assert!(m.fill_u64(0, 12, |_| 0).is_err());
    }
}
