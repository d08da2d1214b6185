//! Serialising `vgpuctl` processes that change things: an exclusive `flock(2)` on
//! `<root>/run/lock/vgpuctl.lock`, held until the [`Lock`] is dropped (or the process
//! dies: the kernel releases it, so a `kill -9` never leaves it held).

use std::fs::{self, File, OpenOptions};

use crate::env::Environment;
use crate::error::{Error, Result};

/// The held lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for the lock and takes it.
    pub fn acquire(env: &impl Environment) -> Result<Self> {
        let path = env.lock_path();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::store("create", dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::store("open", &path, e))?;
        file.lock().map_err(|e| Error::store("lock", &path, e))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::TempEnvironment;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn excludes_a_second_holder() {
        let env = TempEnvironment::new();
        let held = Lock::acquire(&env).unwrap();
        let root = env.root().to_path_buf();
        let got = Arc::new(AtomicBool::new(false));
        let flag = got.clone();
        let t = std::thread::spawn(move || {
            let env = crate::RootedEnvironment::new(root);
            let _l = Lock::acquire(&env).unwrap();
            flag.store(true, Ordering::SeqCst);
        });
        // flock locks belong to the open file description: the thread's own open
        // cannot take it while `held` lives. Proven by try_lock rather than timing.
        let probe = File::open(env.lock_path()).unwrap();
        assert!(probe.try_lock().is_err());
        assert!(!got.load(Ordering::SeqCst));
        drop(held);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }
}
