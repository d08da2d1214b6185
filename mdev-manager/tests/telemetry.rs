//! `vgpuctl metrics` and `top`: golden outputs from a fake tree with counters, the
//! exposition checked by the Prometheus project's own Python parser
//! (python3-prometheus-client, which scripts/setup installs), and the HTTP endpoint.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use vgpu_mdev_manager::fake::{FakeSysfs, SAMPLE_UUIDS};
use vgpu_mdev_manager::{render, top, Manager, RootedEnvironment};

mod common;
use common::golden;

/// The sample tree after some engine work: instance 0 busy 0.6 s of a 1 s window, 1
/// throttled by its cap.
fn busy_sample() -> (tempfile::TempDir, FakeSysfs) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::sample(dir.path()).unwrap();
    let (a, b) = (SAMPLE_UUIDS[0], SAMPLE_UUIDS[1]);
    for (u, attr, v) in [
        (a, "busy_ns", "1600000000"),
        (a, "jobs", "5000"),
        (a, "slices", "800"),
        (a, "macs", "3000000000"),
        (a, "queue_depth", "3"),
        (a, "latency_hist", "800000 10\n1000000 85\n3000000 5\n"),
        (b, "busy_ns", "250000000"),
        (b, "throttled_ns", "750000000"),
        (b, "jobs", "100"),
        (b, "cmds_failed", "2"),
        (b, "macs", "500000000"),
        (b, "preemptions", "17"),
        (b, "latency_hist", "12000000 3\nmore 1\n"),
    ] {
        fake.set_instance_attr("vgpu_shim0", u, attr, v).unwrap();
    }
    for (attr, v) in [
        ("busy_ns", "1850000000"),
        ("idle_ns", "150000000"),
        ("switches", "42"),
        ("preemptions", "19"),
        ("macs", "3500000000"),
    ] {
        fake.set_parent_attr("vgpu_shim0", attr, v).unwrap();
    }
    fake.set_parent_attr("vgpu_shim1", "policy", "fixed_share")
        .unwrap();
    (dir, fake)
}

#[test]
fn top_rates_over_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::sample(dir.path()).unwrap();
    let m = Manager::new(RootedEnvironment::new(dir.path()));
    fake.set_instance_attr("vgpu_shim0", SAMPLE_UUIDS[0], "busy_ns", "1000000000")
        .unwrap();
    fake.set_instance_attr("vgpu_shim0", SAMPLE_UUIDS[0], "latency_hist", "800000 10\n")
        .unwrap();
    let before = m.snapshot().unwrap();
    let (busy_dir, _busy) = busy_sample();
    let after = Manager::new(RootedEnvironment::new(busy_dir.path()))
        .snapshot()
        .unwrap();
    let rows = top::rows(Some(&before), &after, 1_000_000_000);
    // 0.6 s of engine time in 1 s; the window's latencies exclude the 10 earlier ones.
    assert!((rows[0].engine_pct.unwrap() - 60.0).abs() < 1e-9);
    assert_eq!(
        (rows[0].p50_ns, rows[0].p99_ns),
        (Some(1_000_000), Some(3_000_000))
    );
    assert!((rows[1].throttled_pct.unwrap() - 75.0).abs() < 1e-9);
    assert_eq!(rows[1].p99_ns, Some(u64::MAX));
    // 17 wake-up preemptions in the window of 1 s
    assert_eq!(
        (rows[0].preempt_per_s, rows[1].preempt_per_s),
        (Some(0.0), Some(17.0))
    );
    golden("top.txt", &top::render(&rows));
    golden("top.json", &render::json(&rows));
    // No window: no rates, latencies over the whole histogram.
    let once = top::rows(None, &after, 0);
    assert_eq!(
        (once[0].engine_pct, once[0].p50_ns, once[1].preempt_per_s),
        (None, Some(1_000_000), None)
    );
}

/// `vgpuctl --root ROOT metrics`, which must succeed.
fn metrics_text(root: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .arg("metrics")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A module from before wake-up preemption has no `preempt`/`preemptions`: their
/// families have no samples there, the rest is unchanged.
#[test]
fn metrics_without_preemption_attributes() {
    let (dir, fake) = busy_sample();
    std::fs::remove_file(fake.parent_dir("vgpu_shim1").join("vgpu/preemptions")).unwrap();
    std::fs::remove_file(fake.parent_dir("vgpu_shim1").join("vgpu/preempt")).unwrap();
    std::fs::remove_file(
        fake.instance_dir("vgpu_shim0", SAMPLE_UUIDS[0])
            .join("vgpu/preemptions"),
    )
    .unwrap();
    let text = metrics_text(dir.path());
    let samples = |name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        samples("vgpu_parent_preemptions_total"),
        ["vgpu_parent_preemptions_total{parent=\"vgpu_shim0\"} 19"]
    );
    let inst = samples("vgpu_instance_preemptions_total");
    assert_eq!(inst.len(), 1, "{inst:?}");
    assert!(inst[0].ends_with(" 17"), "{inst:?}");
    assert_eq!(samples("vgpu_parent_switches_total").len(), 2);
    // `top`: no preemption rate for the instance without the counter, even over a window
    let snap = Manager::new(RootedEnvironment::new(dir.path()))
        .snapshot()
        .unwrap();
    let rows = top::rows(Some(&snap), &snap, 1_000_000_000);
    let rate = |i: usize| {
        rows.iter()
            .find(|r| r.uuid == SAMPLE_UUIDS[i])
            .map(|r| r.preempt_per_s)
    };
    assert_eq!(rate(0), Some(None));
    assert_eq!(rate(1), Some(Some(0.0)));
}

#[test]
fn metrics_golden_and_parsed_by_prometheus_client() {
    let (dir, _fake) = busy_sample();
    let text = metrics_text(dir.path());
    golden("metrics.txt", &text);
    // Debian's package installs for the system python; a pyenv or venv python3 first on
    // PATH would not see it.
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        eprintln!(
            "SKIPPED: python3 prometheus_client not found (apt-get install \
             python3-prometheus-client; scripts/setup installs it)"
        );
        return;
    };
    // Parse with the reference parser; print `name type samples` per family and a few
    // values, and fail on anything it rejects.
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = list(text_string_to_metric_families(sys.stdin.read()))
for f in fams:
    print(f.name, f.type, len(f.samples))
v = {(s.name, s.labels.get('uuid', s.labels.get('parent')), s.labels.get('le')): s.value for f in fams for s in f.samples}
print(v[('vgpu_instance_busy_seconds_total', '11111111-1111-4111-8111-111111111111', None)])
print(v[('vgpu_instance_submission_latency_seconds_bucket', '11111111-1111-4111-8111-111111111111', '0.001')])
print(v[('vgpu_parent_pool_bytes', 'vgpu_shim0', None)])
"#;
    let mut py = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let res = py.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "parser: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    golden(
        "metrics-parsed.txt",
        &String::from_utf8(res.stdout).unwrap(),
    );
}

#[test]
fn metrics_served_on_loopback_only() {
    let (dir, _fake) = busy_sample();
    let bin = env!("CARGO_BIN_EXE_vgpuctl");
    let refused = Command::new(bin)
        .arg("--root")
        .arg(dir.path())
        .args(["metrics", "--listen", "0.0.0.0:9400"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a loopback address"));

    let mut child = Command::new(bin)
        .arg("--root")
        .arg(dir.path())
        .args(["metrics", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("vgpuctl: serving metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    let resp = get("/metrics");
    let missing = get("/nope");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Content-Type: text/plain; version=0.0.4"));
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        body,
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metrics.txt"))
            .unwrap()
    );
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
}
