//! The daemon a test of the `external` suite runs against: by default the reference
//! executor (`execref`) as a process of its own (`vgpu-rig-tests exec-serve`; in a
//! thread of this process only for a misbehaviour a test asks of it); with `--daemon vulkan` the host's
//! `vgpu-executor --serve` on lavapipe (`execvk`, a process of its own either way).

use vgpu_sysfs::handle::Parent;

use crate::execref::{Behaviour, RefExecutor, RefProcess};
use crate::execvk;
use crate::harness::{vulkan_daemon, Context, Fail, TestResult};

enum Kind {
    Ref(RefExecutor),
    RefProc(RefProcess),
    Vulkan(execvk::Daemon),
}

/// A well-behaved daemon serving one parent. A process that is neither stopped nor
/// killed is killed when dropped (a failed test), so the module can be unloaded.
pub(super) struct Daemon(Option<Kind>);

impl Daemon {
    /// A daemon for parent `i` in a process of its own (kill -9 able): the reference
    /// executor (`RefProcess`: not in this one, whose VRAM users would share its address
    /// space), or with `--daemon vulkan` vgpu-executor. Returns once it serves.
    pub(super) fn start(i: u32) -> Result<Daemon, Fail> {
        if vulkan_daemon() {
            return Self::vulkan(i);
        }
        let x = RefProcess::start(i).ctx("start exec-serve")?;
        Ok(Daemon(Some(Kind::RefProc(x))))
    }

    /// The reference executor for parent `i` behaving as `how`, whatever `--daemon`
    /// says (a test that needs a behaviour only it has).
    pub(super) fn reference(i: u32, how: Behaviour) -> Result<Daemon, Fail> {
        let x = RefExecutor::start(i, how).ctx("start the executor")?;
        Ok(Daemon(Some(Kind::Ref(x))))
    }

    fn vulkan(i: u32) -> Result<Daemon, Fail> {
        let p = Parent::vgpu(i);
        // lavapipe in the TCG guest takes seconds where the CPU executor takes
        // milliseconds
        super::judge_bytes(&p)?;
        Ok(Daemon(Some(Kind::Vulkan(execvk::Daemon::start(p.name())?))))
    }

    /// Whether it is the host's vgpu-executor.
    pub(super) fn is_vulkan(&self) -> bool {
        matches!(self.0, Some(Kind::Vulkan(_)))
    }

    /// SIGKILL and wait for the exit (not the in-process executor of `reference`).
    pub(super) fn kill(mut self) -> TestResult {
        match self.0.take() {
            Some(Kind::RefProc(x)) => x.kill().ctx("kill -9 exec-serve"),
            Some(Kind::Vulkan(d)) => d.kill(),
            Some(Kind::Ref(x)) => {
                let _ = x.stop();
                Err(Fail("kill: the in-process reference executor".into()))
            }
            None => Ok(()),
        }
    }

    /// A clean stop: the pieces it completed (none refused or failed).
    pub(super) fn stop(mut self) -> Result<u64, Fail> {
        match self.0.take() {
            Some(Kind::Ref(x)) => x.stop().and_then(|st| st.completed()).ctx("executor"),
            Some(Kind::RefProc(x)) => x.stop().and_then(|st| st.completed()).ctx("exec-serve"),
            Some(Kind::Vulkan(d)) => d.stop(),
            None => Ok(0),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        match self.0.take() {
            Some(Kind::Ref(x)) => {
                let _ = x.stop();
            }
            // RefProcess kills its process when dropped, execvk::Daemon kills itself when dropped
            Some(Kind::RefProc(_)) | Some(Kind::Vulkan(_)) | None => {}
        }
    }
}
