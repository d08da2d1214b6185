//! A small TAP test harness for suites of named rig tests.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::{Instance, MdevType, Parent};

use crate::sys;

/// Why a test failed.
pub struct Fail(pub String);

impl fmt::Debug for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

/// A test's result.
pub type TestResult = Result<(), Fail>;

/// Add context to an error.
pub trait Context<T> {
    /// Prefix the error with `what`.
    fn ctx(self, what: impl fmt::Display) -> Result<T, Fail>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T, Fail> {
        self.map_err(|e| Fail(format!("{what}: {e}")))
    }
}

/// Prefix a test failure with context.
pub trait FailContext<T> {
    /// Prefix the failure with `what`.
    fn fctx(self, what: impl fmt::Display) -> Result<T, Fail>;
}

impl<T> FailContext<T> for Result<T, Fail> {
    fn fctx(self, what: impl fmt::Display) -> Result<T, Fail> {
        self.map_err(|e| Fail(format!("{what}: {}", e.0)))
    }
}

/// Fail unless a condition holds.
#[macro_export]
macro_rules! ensure {
    ($c:expr, $($a:tt)+) => {
        let ok: bool = $c;
        if !ok {
            return Err($crate::harness::Fail(format!($($a)+)));
        }
    };
}

/// Fail unless two values are equal.
#[macro_export]
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($a:tt)+) => {{
        let (g, w) = (&$got, &$want);
        if g != w {
            return Err($crate::harness::Fail(format!(
                "{}: got {:?}, want {:?}",
                format!($($a)+),
                g,
                w
            )));
        }
    }};
}

/// One named test. `params` are the module parameters to load with before the test; `None`
/// means the test loads the module itself.
pub struct Test {
    /// Name (TAP description, filter target).
    pub name: &'static str,
    /// Module parameters, or None to leave the module unloaded.
    pub params: Option<&'static str>,
    /// The body.
    pub run: fn(&mut Ctx) -> TestResult,
}

/// A named list of tests.
pub struct Suite {
    /// Name used on the command line.
    pub name: &'static str,
    /// What it covers.
    pub about: &'static str,
    /// The tests, in order.
    pub tests: Vec<Test>,
}

/// What a test gets: module control and instance helpers that clean up after it.
pub struct Ctx {
    ko: String,
    notes: Vec<String>,
    soft: Vec<String>,
}

/// `--executor ref`: every load of the module puts every parent in `external` mode
/// served by a reference executor (crate::execref), so a whole suite runs its commands
/// through the handoff queue.
static REF_EXECUTOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--executor vulkan`: as `ref`, with the host's `vgpu-executor` (lavapipe) per parent
/// (crate::execvk).
static VULKAN_EXECUTOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The parents served by `vgpu-executor` now (stopped before any unload).
static VULKAN_PARENTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The reference executors of the module loaded now, each a process of its own (they
/// hold it: stopped before any unload, by [`stop_executors`]).
static EXECUTORS: std::sync::Mutex<Vec<crate::execref::RefProcess>> =
    std::sync::Mutex::new(Vec::new());

/// Load vgpu_shim from `ko` with `params`; with `--executor ref`, in external mode with a
/// reference executor serving each parent.
pub fn load(ko: &str, params: &str) -> TestResult {
    let vulkan = VULKAN_EXECUTOR.load(std::sync::atomic::Ordering::Relaxed);
    if !REF_EXECUTOR.load(std::sync::atomic::Ordering::Relaxed) && !vulkan {
        return sys::load_module(ko, params).ctx(format!("finit_module({ko}, {params:?})"));
    }
    let params = format!("{params} executor=external");
    sys::load_module(ko, &params).ctx(format!("finit_module({ko}, {params:?})"))?;
    if vulkan {
        for p in Parent::all_vgpu().ctx("list parents")? {
            // lavapipe on the rig's TCG vCPUs takes seconds for what the CPU executor
            // does in milliseconds: the longest watchdog (tests that judge the
            // watchdog set their own)
            p.set_watchdog_ms("60000").ctx("watchdog_ms")?;
            crate::execvk::start(p.name())?;
            match VULKAN_PARENTS.lock() {
                Ok(mut g) => g.push(p.name().to_string()),
                Err(e) => e.into_inner().push(p.name().to_string()),
            }
        }
        return Ok(());
    }
    for p in Parent::all_vgpu().ctx("list parents")? {
        let i = p.index().ok_or(Fail(format!("parent {}", p.name())))?;
        let x = crate::execref::RefProcess::start(i)
            .ctx(format!("reference executor for {}", p.name()))?;
        match EXECUTORS.lock() {
            Ok(mut g) => g.push(x),
            Err(p) => p.into_inner().push(x),
        }
    }
    Ok(())
}

/// Stop the reference executors `--executor ref` started.
pub fn stop_executors() -> TestResult {
    let names: Vec<String> = match VULKAN_PARENTS.lock() {
        Ok(mut g) => g.drain(..).collect(),
        Err(p) => p.into_inner().drain(..).collect(),
    };
    let mut first = Ok(());
    for n in names {
        if let Err(e) = crate::execvk::stop(&n) {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first?;
    let xs: Vec<_> = match EXECUTORS.lock() {
        Ok(mut g) => g.drain(..).collect(),
        Err(p) => p.into_inner().drain(..).collect(),
    };
    for x in xs {
        x.stop()
            .and_then(|st| st.completed())
            .ctx("reference executor")?;
    }
    Ok(())
}

/// Run suites in `external` mode with reference executors.
pub fn use_ref_executor() {
    REF_EXECUTOR.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Run suites in `external` mode with the host's `vgpu-executor` (crate::execvk).
pub fn use_vulkan_executor() {
    VULKAN_EXECUTOR.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `--executor ref` was given (reference executors in external mode).
pub fn ref_executor() -> bool {
    REF_EXECUTOR.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `--executor vulkan` was given.
pub fn vulkan_executor() -> bool {
    VULKAN_EXECUTOR.load(std::sync::atomic::Ordering::Relaxed)
}

/// `--daemon vulkan` (suite `external`): its tests that need a well-behaved daemon run
/// the host's `vgpu-executor` (lavapipe) instead of the reference executor.
static VULKAN_DAEMON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Serve the `external` suite's tests with the host's `vgpu-executor`.
pub fn use_vulkan_daemon() {
    VULKAN_DAEMON.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `--daemon vulkan` was given.
pub fn vulkan_daemon() -> bool {
    VULKAN_DAEMON.load(std::sync::atomic::Ordering::Relaxed)
}

/// How long a blocked `remove` may take before the harness gives up.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

impl Ctx {
    fn new() -> Self {
        Ctx {
            ko: sys::ko_path(),
            notes: Vec::new(),
            soft: Vec::new(),
        }
    }

    /// Load vgpu_shim with `params` (see [`load`]).
    pub fn load(&mut self, params: &str) -> TestResult {
        load(&self.ko, params)
    }

    /// Unload vgpu_shim (errno preserved).
    pub fn unload(&mut self) -> std::io::Result<()> {
        if let Err(f) = stop_executors() {
            self.soft.push(f.0);
        }
        sys::unload_module(sys::MODULE)
    }

    /// Record a failure without stopping the test (the test still fails at the end), so
    /// one broken check does not hide the ones after it.
    pub fn soft(&mut self, r: TestResult) {
        if let Err(f) = r {
            self.soft.push(f.0);
        }
    }

    /// A diagnostic line printed as a TAP comment after the result.
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// Parent `vgpu_shim<i>`, checked to exist.
    pub fn parent(&self, i: u32) -> Result<Parent, Fail> {
        let p = Parent::vgpu(i);
        ensure!(p.exists(), "parent {} missing", p.path().display());
        Ok(p)
    }

    /// Create an instance of `type_id` on `parent` and check it appeared.
    pub fn create(&self, parent: &Parent, type_id: &str) -> Result<Instance, Fail> {
        let t = parent.mdev_type(type_id);
        let inst = t
            .create_new()
            .ctx(format!("create {type_id} on {}", parent.name()))?;
        ensure!(
            inst.exists(),
            "{} missing after create",
            inst.path().display()
        );
        Ok(inst)
    }

    /// Try to create an instance of `t`, returning the library error on failure.
    pub fn try_create(&self, t: &MdevType) -> vgpu_sysfs::Result<Instance> {
        t.create_new()
    }

    /// Remove an instance, giving up after [`REMOVE_TIMEOUT`].
    pub fn remove(&self, inst: &Instance) -> TestResult {
        remove_with_timeout(inst, REMOVE_TIMEOUT)
    }
}

/// Write `remove` from a helper thread; fail if it has not returned within `timeout`.
pub fn remove_with_timeout(inst: &Instance, timeout: Duration) -> TestResult {
    let (tx, rx) = mpsc::channel();
    let i2 = inst.clone();
    std::thread::spawn(move || {
        let _ = tx.send(i2.remove());
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => {
            r.ctx(format!("remove {}", inst.uuid()))?;
            ensure!(!inst.exists(), "{} still present after remove", inst.uuid());
            Ok(())
        }
        Err(_) => Err(Fail(format!(
            "HANG: remove of {} did not return within {timeout:?}",
            inst.uuid()
        ))),
    }
}

/// Bring the machine back to "vgpu_shim not loaded": remove every instance of every
/// vgpu parent, then unload. Errors mean the next test cannot start clean.
pub fn clean_state() -> TestResult {
    stop_executors()?;
    if !sys::module_loaded(sys::MODULE) {
        return Ok(());
    }
    for p in Parent::all_vgpu().ctx("list parents")? {
        for inst in p.instances().ctx("list instances")? {
            remove_with_timeout(&inst, REMOVE_TIMEOUT)?;
        }
    }
    let start = Instant::now();
    loop {
        match sys::unload_module(sys::MODULE) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(Fail(format!("cannot unload {}: {e}", sys::MODULE))),
        }
    }
    ensure!(
        !sys::module_loaded(sys::MODULE),
        "{} still loaded after delete_module",
        sys::MODULE
    );
    Ok(())
}

fn one_line(s: &str) -> String {
    s.replace('\n', " | ")
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Which tests of a suite to run: names containing `filter`, among `only` when that is
/// not empty, except those in `skip`.
#[derive(Default)]
pub struct Select {
    pub filter: Option<String>,
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl Select {
    pub fn picks(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
            && (self.only.is_empty() || self.only.iter().any(|s| s == name))
            && !self.skip.iter().any(|s| s == name)
    }
}

/// Run the tests of `suite` that `sel` picks (`repeat` times over); print TAP; return
/// failures.
pub fn run_suite(suite: &Suite, sel: &Select, repeat: usize) -> usize {
    let once: Vec<&Test> = suite.tests.iter().filter(|t| sel.picks(t.name)).collect();
    if !sel.skip.is_empty() {
        println!("# skipped by request: {}", sel.skip.join(", "));
    }
    let tests: Vec<&Test> = (0..repeat.max(1))
        .flat_map(|_| once.iter().copied())
        .collect();
    println!("1..{}", tests.len());
    let mut failed = 0;
    for (n, t) in tests.iter().enumerate() {
        let n = n + 1;
        let start = Instant::now();
        let mut ctx = Ctx::new();
        let mut result = clean_state().map_err(|e| Fail(format!("setup: {}", e.0)));
        if result.is_ok() {
            if let Some(p) = t.params {
                result = ctx.load(p).map_err(|e| Fail(format!("setup: {}", e.0)));
            }
        }
        if result.is_ok() {
            result = match catch_unwind(AssertUnwindSafe(|| (t.run)(&mut ctx))) {
                Ok(r) => r,
                Err(p) => Err(Fail(format!("panicked: {}", panic_text(p)))),
            };
            if !ctx.soft.is_empty() {
                let soft = ctx.soft.join("; ");
                result = match result {
                    Ok(()) => Err(Fail(soft)),
                    Err(f) => Err(Fail(format!("{soft}; {}", f.0))),
                };
            }
        }
        let cleanup = clean_state();
        if let Err(e) = &cleanup {
            let msg = format!("cleanup: {}", e.0);
            result = match result {
                Ok(()) => Err(Fail(msg)),
                Err(f) => Err(Fail(format!("{}; {msg}", f.0))),
            };
        }
        match &result {
            Ok(()) => println!("ok {n} - {}", t.name),
            Err(f) => {
                failed += 1;
                println!("not ok {n} - {}: {}", t.name, one_line(&f.0));
            }
        }
        for note in &ctx.notes {
            println!("# {}", one_line(note));
        }
        println!("# {} took {:.1} s", t.name, start.elapsed().as_secs_f64());
        if let Err(e) = cleanup {
            if e.0.contains("HANG") {
                println!(
                    "Bail out! cannot return to a clean state: {}",
                    one_line(&e.0)
                );
                return failed + tests.len() - n;
            }
        }
    }
    failed
}
