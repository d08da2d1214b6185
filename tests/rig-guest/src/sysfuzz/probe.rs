//! Touch memory that may fault. A byte load or store whose SIGBUS or SIGSEGV becomes an
//! error return instead of killing the fuzzer: the kernel's exception-table idea, in user
//! space. The two probe instructions live in a small assembly routine; the signal handler
//! recognises a fault at exactly those instructions and moves the instruction pointer to a
//! fix-up label that returns -1 (SIGBUS) or -2 (SIGSEGV). A fault anywhere else restores
//! the default action, so a real crash of the fuzzer still crashes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

// System V ABI: rdi = address, sil = value; eax = byte read, 0 after a store, -1 after a
// SIGBUS, -2 after a SIGSEGV.
std::arch::global_asm!(
    ".pushsection .text.sysfuzz_probe,\"ax\",@progbits",
    ".p2align 4",
    ".globl sysfuzz_probe_load",
    ".hidden sysfuzz_probe_load",
    "sysfuzz_probe_load:",
    ".globl sysfuzz_probe_load_insn",
    ".hidden sysfuzz_probe_load_insn",
    "sysfuzz_probe_load_insn:",
    "    movzx eax, byte ptr [rdi]",
    "    ret",
    ".globl sysfuzz_probe_store",
    ".hidden sysfuzz_probe_store",
    "sysfuzz_probe_store:",
    ".globl sysfuzz_probe_store_insn",
    ".hidden sysfuzz_probe_store_insn",
    "sysfuzz_probe_store_insn:",
    "    mov byte ptr [rdi], sil",
    "    xor eax, eax",
    "    ret",
    ".globl sysfuzz_probe_fix_bus",
    ".hidden sysfuzz_probe_fix_bus",
    "sysfuzz_probe_fix_bus:",
    "    mov eax, -1",
    "    ret",
    ".globl sysfuzz_probe_fix_segv",
    ".hidden sysfuzz_probe_fix_segv",
    "sysfuzz_probe_fix_segv:",
    "    mov eax, -2",
    "    ret",
    ".popsection",
);

extern "C" {
    fn sysfuzz_probe_load(p: *const u8) -> i32;
    fn sysfuzz_probe_store(p: *mut u8, v: u8) -> i32;
    // Labels: only their addresses are used, they are never called.
    fn sysfuzz_probe_load_insn();
    fn sysfuzz_probe_store_insn();
    fn sysfuzz_probe_fix_bus();
    fn sysfuzz_probe_fix_segv();
}

/// How a probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// The access completed (the byte read, or 0 for a store).
    Ok(u8),
    /// SIGBUS.
    Bus,
    /// SIGSEGV.
    Segv,
}

static RECOVERED: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

extern "C" fn on_fault(sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for an SA_SIGINFO handler; we only
    // read and write the saved instruction pointer of the interrupted thread.
    unsafe {
        let uc = ctx as *mut libc::ucontext_t;
        let rip = &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize];
        let pc = *rip as usize;
        if pc == sysfuzz_probe_load_insn as *const () as usize
            || pc == sysfuzz_probe_store_insn as *const () as usize
        {
            let fix = if sig == libc::SIGBUS {
                sysfuzz_probe_fix_bus as *const () as usize
            } else {
                sysfuzz_probe_fix_segv as *const () as usize
            };
            *rip = fix as _;
            RECOVERED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let msg = b"sysfuzz: SIGBUS/SIGSEGV outside a probe: the fuzzer itself crashed\n";
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        // Returning re-executes the faulting instruction with the default action.
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Install the SIGBUS and SIGSEGV handlers (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        for sig in [libc::SIGBUS, libc::SIGSEGV] {
            // SAFETY: a zeroed sigaction is valid; we set a handler with the SA_SIGINFO
            // signature, and sa_mask is initialised by sigemptyset.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_fault as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

/// Size of a fuzzer thread's signal stack.
const ALT_STACK: usize = 64 * 1024;

/// Give the calling thread a signal stack whose pages are all present, and pre-fault
/// some of its normal stack. Delivering a signal writes a frame on the stack; if that
/// needed a page while an allocation failure is armed (fail-nth), the kernel could not
/// deliver the signal and would kill the fuzzer instead.
pub fn thread_init() -> std::io::Result<()> {
    // SAFETY: a fresh anonymous mapping, populated now.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let ss = libc::stack_t {
        ss_sp: p,
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `ss` describes the mapping above, which stays mapped for the rest of the
    // process (it is never unmapped: the thread may take signals until it exits).
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    prefault_stack();
    Ok(())
}

#[inline(never)]
fn prefault_stack() {
    let mut buf = [0u8; 128 * 1024];
    for i in (0..buf.len()).step_by(4096) {
        // SAFETY: in bounds of a live local array.
        unsafe { std::ptr::write_volatile(buf.as_mut_ptr().add(i), 1) };
    }
    std::hint::black_box(&buf);
}

/// Faults recovered so far (all threads).
pub fn recovered() -> u64 {
    RECOVERED.load(Ordering::Relaxed)
}

fn result(r: i32) -> Touch {
    match r {
        -1 => Touch::Bus,
        -2 => Touch::Segv,
        v => Touch::Ok(v as u8),
    }
}

/// Read the byte at `p`.
///
/// # Safety
/// `p` must not point into memory Rust code holds references to (it may be any address
/// otherwise: unmapped or faulting addresses are reported, not dereferenced by Rust).
/// [`install`] must have been called.
pub unsafe fn load(p: *const u8) -> Touch {
    // SAFETY: the routine reads one byte; a fault there is recovered by the handler.
    result(unsafe { sysfuzz_probe_load(p) })
}

/// Write `v` at `p`.
///
/// # Safety
/// As for [`load`], and nothing else may rely on the byte's value.
pub unsafe fn store(p: *mut u8, v: u8) -> Touch {
    // SAFETY: the routine writes one byte; a fault there is recovered by the handler.
    result(unsafe { sysfuzz_probe_store(p, v) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_recovered() {
        install();
        // SAFETY: a fresh private mapping, 3 pages; the middle one is made PROT_NONE.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as *mut u8;
        assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
        // SAFETY: the second page is inside the mapping.
        let r = unsafe { libc::mprotect(p.add(4096) as *mut libc::c_void, 4096, libc::PROT_READ) };
        assert_eq!(r, 0);
        // SAFETY: all three addresses are inside the mapping; faults are recovered.
        unsafe {
            assert_eq!(store(p, 7), Touch::Ok(0));
            assert_eq!(load(p), Touch::Ok(7));
            assert_eq!(store(p.add(4096), 1), Touch::Segv);
            assert_eq!(load(p.add(4096)), Touch::Ok(0));
            libc::munmap(p.add(8192) as *mut libc::c_void, 4096);
            assert_eq!(load(p.add(8192)), Touch::Segv);
            libc::munmap(p as *mut libc::c_void, 8192);
        }
        assert!(recovered() >= 2);
    }

    #[test]
    fn sigbus_past_the_end_of_a_file() {
        install();
        // SAFETY: memfd_create takes a NUL-terminated name; the fd is ours.
        let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: plain syscalls on our fd; the mapping is 2 pages of a 1-page file.
        unsafe {
            assert_eq!(libc::ftruncate(fd, 4096), 0);
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            ) as *mut u8;
            assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
            assert_eq!(store(p, 3), Touch::Ok(0));
            assert_eq!(load(p.add(4096)), Touch::Bus);
            assert_eq!(store(p.add(4097), 3), Touch::Bus);
            libc::munmap(p as *mut libc::c_void, 8192);
            libc::close(fd);
        }
    }
}
