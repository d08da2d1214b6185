//! `vgpuctl metrics`: the counters of every parent and instance in the Prometheus text
//! exposition format (version 0.0.4), and a tiny HTTP endpoint for a scraper.
//!
//! Names follow Prometheus conventions: base units (seconds, bytes), `_total` for
//! counters, one `# HELP` and `# TYPE` per family; instance series carry the labels
//! `uuid`, `parent` and `type`, parent series `parent`. The latency histogram has
//! cumulative `_bucket`s on fixed bounds and `_count`, but no `_sum` (the kernel keeps
//! no sum of latencies).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::stats::Snapshot;

/// Bucket bounds of `vgpu_instance_submission_latency_seconds`, in ns (10 µs … 10 s).
pub const LATENCY_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

const MIB: u64 = 1 << 20;

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out, name }
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Nanoseconds as seconds, exactly as a decimal (no float rounding).
fn seconds(ns: u64) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:09}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

type InstanceGetter = fn(&crate::stats::InstanceStats) -> String;
type ParentGetter = fn(&crate::stats::ParentStats) -> String;

/// The exposition of a snapshot.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    let parent_families: [(&'static str, &str, &str, ParentGetter); 17] = [
        (
            "vgpu_parent_pool_bytes",
            "gauge",
            "VRAM pool of the parent (pool_mb).",
            |p| (p.parent.pool_mb * MIB).to_string(),
        ),
        (
            "vgpu_parent_pool_free_bytes",
            "gauge",
            "VRAM pool left for new instances (pool_free_mb).",
            |p| (p.parent.pool_free_mb * MIB).to_string(),
        ),
        (
            "vgpu_parent_vram_allocated_bytes",
            "gauge",
            "VRAM pages allocated for the parent's instances (vram_pages x 4 KiB).",
            |p| (p.parent.vram_pages * 4096).to_string(),
        ),
        (
            "vgpu_parent_engines",
            "gauge",
            "Engine threads of the parent.",
            |p| p.counters.engines.to_string(),
        ),
        (
            "vgpu_parent_slice_seconds",
            "gauge",
            "Scheduler slice length (slice_us).",
            |p| seconds(p.counters.slice_us * 1000),
        ),
        (
            "vgpu_parent_watchdog_seconds",
            "gauge",
            "Engine time without a fence before a ring is declared hung (watchdog_ms).",
            |p| seconds(p.counters.watchdog_ms * 1_000_000),
        ),
        (
            "vgpu_parent_busy_seconds_total",
            "counter",
            "Engine time spent running instances, summed over engines (busy_ns).",
            |p| seconds(p.counters.busy_ns),
        ),
        (
            "vgpu_parent_idle_seconds_total",
            "counter",
            "Engine time with nothing eligible, summed over engines (idle_ns).",
            |p| seconds(p.counters.idle_ns),
        ),
        (
            "vgpu_parent_switches_total",
            "counter",
            "Slices started for a different instance than the engine's previous one.",
            |p| p.counters.switches.to_string(),
        ),
        (
            "vgpu_parent_preemptions_total",
            "counter",
            "Slices ended early for a waking instance (preemptions; absent without wake-up \
             preemption).",
            |p| {
                p.counters
                    .preemptions
                    .map_or(String::new(), |v| v.to_string())
            },
        ),
        (
            "vgpu_parent_gemm_macs_total",
            "counter",
            "GEMM multiply-adds of all the parent's instances, removed ones included.",
            |p| p.counters.macs.to_string(),
        ),
        (
            "vgpu_parent_executor_external",
            "gauge",
            "1 if the parent's commands run on the external executor, 0 on the in-kernel CPU \
             executor (executor; absent without external executor mode).",
            |p| {
                p.counters.executor.as_ref().map_or(String::new(), |x| {
                    u8::from(x.mode == "external").to_string()
                })
            },
        ),
        (
            "vgpu_parent_executor_connected",
            "gauge",
            "1 while an executor daemon has the parent's executor device open.",
            |p| {
                p.counters
                    .executor
                    .as_ref()
                    .map_or(String::new(), |x| u8::from(x.connected).to_string())
            },
        ),
        (
            "vgpu_parent_executor_handoffs_total",
            "counter",
            "Pieces of commands handed to an executor daemon.",
            |p| {
                p.counters
                    .executor
                    .as_ref()
                    .map_or(String::new(), |x| x.handoffs.to_string())
            },
        ),
        (
            "vgpu_parent_executor_requeues_total",
            "counter",
            "Pieces handed again to a new daemon after the previous one went away.",
            |p| {
                p.counters
                    .executor
                    .as_ref()
                    .map_or(String::new(), |x| x.requeues.to_string())
            },
        ),
        (
            "vgpu_parent_executor_errors_total",
            "counter",
            "Executor completions dropped or failed, and queue indices out of range.",
            |p| {
                p.counters
                    .executor
                    .as_ref()
                    .map_or(String::new(), |x| x.errors.to_string())
            },
        ),
        (
            "vgpu_parent_instances",
            "gauge",
            "vGPU instances on the parent.",
            |_| String::new(),
        ),
    ];
    for (name, kind, help, get) in parent_families {
        let mut f = Family::new(&mut out, name, kind, help);
        for p in &snap.parents {
            let value = if name == "vgpu_parent_instances" {
                snap.instances
                    .iter()
                    .filter(|i| i.instance.parent == p.parent.name)
                    .count()
                    .to_string()
            } else {
                get(p)
            };
            if value.is_empty() {
                continue; // not in this module's ABI
            }
            f.sample("", &[("parent", &p.parent.name)], value);
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "vgpu_parent_policy",
            "gauge",
            "Scheduling policy of the parent (1 for the policy in force).",
        );
        for p in &snap.parents {
            f.sample(
                "",
                &[("parent", &p.parent.name), ("policy", &p.counters.policy)],
                1,
            );
        }
    }
    let instance_families: [(&'static str, &str, &str, InstanceGetter); 12] = [
        (
            "vgpu_instance_busy_seconds_total",
            "counter",
            "Engine time spent running the instance's commands (busy_ns).",
            |i| seconds(i.counters.busy_ns),
        ),
        (
            "vgpu_instance_throttled_seconds_total",
            "counter",
            "Wall time runnable but held back by a cap or fixed share (throttled_ns).",
            |i| seconds(i.counters.throttled_ns),
        ),
        (
            "vgpu_instance_jobs_total",
            "counter",
            "Commands completed (jobs).",
            |i| i.counters.jobs.to_string(),
        ),
        (
            "vgpu_instance_commands_failed_total",
            "counter",
            "Commands rejected: errors and watchdog (cmds_failed).",
            |i| i.counters.cmds_failed.to_string(),
        ),
        (
            "vgpu_instance_slices_total",
            "counter",
            "Times an engine picked the instance (slices).",
            |i| i.counters.slices.to_string(),
        ),
        (
            "vgpu_instance_preemptions_total",
            "counter",
            "Times the instance took an engine from a running slice on waking (preemptions).",
            |i| {
                i.counters
                    .preemptions
                    .map_or(String::new(), |v| v.to_string())
            },
        ),
        (
            "vgpu_instance_gemm_macs_total",
            "counter",
            "GEMM multiply-adds done (macs).",
            |i| i.counters.macs.to_string(),
        ),
        (
            "vgpu_instance_queue_depth",
            "gauge",
            "Commands pending in the ring now (queue_depth).",
            |i| i.counters.queue_depth.to_string(),
        ),
        (
            "vgpu_instance_vram_quota_bytes",
            "gauge",
            "VRAM quota of the instance (vram_mb).",
            |i| (i.instance.vram_mb * MIB).to_string(),
        ),
        (
            "vgpu_instance_vram_used_bytes",
            "gauge",
            "VRAM touched since the device was opened (vram_used_kb; 0 after the last close).",
            |i| (i.instance.vram_used_kb * 1024).to_string(),
        ),
        (
            "vgpu_instance_weight",
            "gauge",
            "Scheduling weight, 1-100.",
            |i| i.instance.weight.to_string(),
        ),
        (
            "vgpu_instance_cap_ratio",
            "gauge",
            "Cap as a fraction of one engine (0 = no cap).",
            |i| {
                let c = i.instance.cap;
                if c == 0 || c == 100 {
                    (c / 100).to_string()
                } else {
                    format!("0.{c:02}").trim_end_matches('0').to_string()
                }
            },
        ),
    ];
    for (name, kind, help, get) in instance_families {
        let mut f = Family::new(&mut out, name, kind, help);
        for i in &snap.instances {
            let value = get(i);
            if value.is_empty() {
                continue; // not in this module's ABI
            }
            let uuid = i.instance.uuid.to_string();
            f.sample("", &instance_labels(&uuid, i), value);
        }
    }
    let mut f = Family::new(
        &mut out,
        "vgpu_instance_submission_latency_seconds",
        "histogram",
        "Doorbell to completion of the submitted commands (latency_hist; no _sum: the kernel \
         keeps none).",
    );
    for i in &snap.instances {
        let uuid = i.instance.uuid.to_string();
        let base = instance_labels(&uuid, i);
        let h = &i.counters.latency;
        for le in LATENCY_BOUNDS_NS {
            let le_s = seconds(le);
            let mut labels = base.to_vec();
            labels.push(("le", &le_s));
            f.sample("_bucket", &labels, h.count_le(le));
        }
        let mut labels = base.to_vec();
        labels.push(("le", "+Inf"));
        f.sample("_bucket", &labels, h.total());
        f.sample("_count", &base, h.total());
    }
    out
}

fn instance_labels<'a>(
    uuid: &'a str,
    i: &'a crate::stats::InstanceStats,
) -> [(&'static str, &'a str); 3] {
    [
        ("uuid", uuid),
        ("parent", &i.instance.parent),
        ("type", &i.instance.type_id),
    ]
}

/// Resolves `addr` and refuses anything but loopback addresses: the endpoint has no
/// authentication, so it must not be reachable from the network.
pub fn loopback_addr(addr: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("--listen {addr}: {e} (expected e.g. 127.0.0.1:9400)"))?
        .collect();
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => Err(format!(
            "--listen {addr}: {} is not a loopback address; metrics are served on loopback only \
             (127.0.0.1 or [::1]); put a proxy in front to export them",
            a.ip()
        )),
        None => addrs
            .first()
            .copied()
            .ok_or_else(|| format!("--listen {addr}: resolves to no address")),
    }
}

/// Serves `GET /metrics` on `listener` until the process is stopped, calling `scrape`
/// for each request. Any other path is 404; a client that sends nothing for 5 s is
/// dropped.
pub fn serve(
    listener: TcpListener,
    mut scrape: impl FnMut() -> Result<String, String>,
) -> io::Result<()> {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = answer(stream, &mut scrape) {
            log::debug!("metrics client: {e}");
        }
    }
    Ok(())
}

fn answer(
    mut stream: TcpStream,
    scrape: &mut impl FnMut() -> Result<String, String>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.by_ref().take(8192).read_line(&mut request)?;
    // Read (and ignore) the headers, up to the blank line.
    loop {
        let mut line = String::new();
        if reader.by_ref().take(8192).read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") | ("GET", "/") => match scrape() {
            Ok(body) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        },
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".into(),
        ),
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_500_000_000), "1.5");
        assert_eq!(seconds(10_000), "0.00001");
        assert_eq!(seconds(123_456_789_012), "123.456789012");
    }

    #[test]
    fn only_loopback() {
        assert!(loopback_addr("127.0.0.1:9400").is_ok());
        assert!(loopback_addr("[::1]:9400").is_ok());
        let e = loopback_addr("0.0.0.0:9400").unwrap_err();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(loopback_addr("10.1.2.3:80").is_err());
        assert!(loopback_addr("nonsense").is_err());
    }
}
