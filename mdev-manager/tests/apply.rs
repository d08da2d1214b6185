//! `apply` (a manifest) and `create --count` against the fake kernel: what is defined
//! and started, idempotent re-runs, all-or-nothing admission before any write, and a
//! failed write undone.

use std::fs;
use uuid::Uuid;

use vgpu_mdev_manager::fake::{FakeSysfs, SAMPLE_UUIDS};
use vgpu_mdev_manager::fake_kernel::FakeKernel;
use vgpu_mdev_manager::{render, Error, Manager, Manifest, Placement, Spec};

const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const B: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const C: &str = "aaaaaaaa-0000-4000-8000-000000000003";

/// The sample tree (vgpu_shim0: 2048 MiB pool, a 256M and a 1G instance running;
/// vgpu_shim1: 1024 MiB, empty) behind a fake kernel.
fn sample() -> (tempfile::TempDir, Manager<FakeKernel>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::sample(dir.path()).unwrap();
    (dir, Manager::new(FakeKernel::new(fake)))
}

fn manifest(entries: &[&str]) -> Manifest {
    Manifest::parse(&format!("{{\"vgpus\": [{}]}}", entries.join(", "))).unwrap()
}

fn three() -> Manifest {
    manifest(&[
        &format!(
            r#"{{"uuid": "{A}", "type": "512m", "parent": "vgpu_shim1", "weight": 8,
                "cap": "40%", "start": "auto"}}"#
        ),
        &format!(r#"{{"uuid": "{B}", "type": "256M"}}"#),
        &format!(r#"{{"uuid": "{C}", "type": "vgpu 128M", "running": false}}"#),
    ])
}

fn knob(m: &Manager<FakeKernel>, uuid: &str, attr: &str) -> String {
    fs::read_to_string(
        m.env()
            .root()
            .join("sys/bus/mdev/devices")
            .join(uuid)
            .join("vgpu")
            .join(attr),
    )
    .unwrap()
    .trim()
    .to_string()
}

fn def_files(m: &Manager<FakeKernel>) -> Vec<String> {
    let mut out = Vec::new();
    for d in m.definitions().unwrap() {
        out.push(format!("{}/{}", d.parent, d.uuid));
    }
    out
}

use vgpu_mdev_manager::Environment;

mod common;
use common::golden;

#[test]
fn apply_defines_and_starts_then_changes_nothing() {
    let (_dir, m) = sample();
    let applied = m.apply(&three(), false).unwrap();
    golden("apply.txt", &render::applied_table(&applied));
    golden("apply.json", &render::json(&applied));
    assert_eq!(
        (knob(&m, A, "weight"), knob(&m, A, "cap")),
        ("8".into(), "40".into())
    );
    assert_eq!(knob(&m, B, "weight"), "1", "the type's default");
    assert!(!m.env().root().join("sys/bus/mdev/devices").join(C).exists());
    assert_eq!(def_files(&m).len(), 3);
    let file = m.definition_path("vgpu_shim1", A.parse().unwrap());
    let before = fs::read(&file).unwrap();
    // Again: everything as it is, and not one sysfs write.
    let writes = m.env().writes().len();
    let again = m.apply(&three(), false).unwrap();
    golden("apply-again.txt", &render::applied_table(&again));
    assert_eq!(
        m.env().writes().len(),
        writes,
        "{:?}",
        &m.env().writes()[writes..]
    );
    assert_eq!(fs::read(&file).unwrap(), before);
}

#[test]
fn apply_changes_what_differs_and_adopts_a_running_instance() {
    let (_dir, m) = sample();
    m.apply(&three(), false).unwrap();
    let adopt = SAMPLE_UUIDS[1]; // vgpu_shim0, 1G, weight 50, cap 25, no definition
    let changed = manifest(&[
        &format!(r#"{{"uuid": "{A}", "type": "512M", "weight": 9}}"#),
        &format!(r#"{{"uuid": "{C}", "type": "128M", "start": "auto", "running": false}}"#),
        &format!(r#"{{"uuid": "{adopt}", "type": "1G", "cap": 30}}"#),
    ]);
    let writes = m.env().writes().len();
    let applied = m.apply(&changed, false).unwrap();
    golden("apply-changed.txt", &render::applied_table(&applied));
    // Live: only the two knobs that differ were written.
    assert_eq!(
        m.env().writes()[writes..]
            .iter()
            .map(|(p, v)| format!("{}={v}", p.rsplit('/').next().unwrap_or("")))
            .collect::<Vec<_>>(),
        ["weight=9", "cap=30"]
    );
    assert_eq!(knob(&m, A, "cap"), "40", "left out: left as it is");
    let d = m.definition(adopt, None).unwrap();
    assert_eq!(
        (d.weight(), d.cap()),
        (Some(50), Some(30)),
        "captured live weight"
    );
}

#[test]
fn admission_is_all_or_nothing_before_any_write() {
    let (_dir, m) = sample();
    // 768 MiB left on vgpu_shim0, 1024 on vgpu_shim1: the third 512M does not fit
    // once the first two are counted.
    let too_many = manifest(&[
        &format!(r#"{{"uuid": "{A}", "type": "512M", "parent": "vgpu_shim1"}}"#),
        &format!(r#"{{"uuid": "{B}", "type": "512M", "parent": "vgpu_shim1"}}"#),
        &format!(r#"{{"uuid": "{C}", "type": "1G"}}"#),
        r#"{"uuid": "aaaaaaaa-0000-4000-8000-000000000004", "type": "512M", "parent": "vgpu_shim1"}"#,
    ]);
    let e = m.apply(&too_many, false).unwrap_err();
    assert!(matches!(e, Error::Admission(_)), "{e}");
    golden("apply-refused.txt", &format!("{e}\n"));
    assert!(m.env().writes().is_empty());
    assert!(def_files(&m).is_empty());
    // A dry run plans the same and writes nothing either.
    assert!(m.apply(&too_many, true).is_err());
    let ok = m.apply(&three(), true).unwrap();
    assert_eq!(ok.len(), 3);
    assert!(m.env().writes().is_empty() && def_files(&m).is_empty());
}

#[test]
fn running_instances_are_never_moved_and_foreign_uuids_refused() {
    let (_dir, m) = sample();
    let u0 = SAMPLE_UUIDS[0]; // 256M on vgpu_shim0
    let foreign = SAMPLE_UUIDS[2];
    for (entry, want) in [
        (
            format!(r#"{{"uuid": "{u0}", "type": "256M", "parent": "vgpu_shim1"}}"#),
            "it runs on vgpu_shim0: stop it to move it to vgpu_shim1",
        ),
        (
            format!(r#"{{"uuid": "{u0}", "type": "512M"}}"#),
            "it runs as vgpu_shim-256M: stop it to make it a vgpu_shim-512M",
        ),
        (
            format!(r#"{{"uuid": "{foreign}", "type": "256M"}}"#),
            "the UUID is taken by another driver's mdev device",
        ),
        (
            format!(r#"{{"uuid": "{A}", "type": "3G"}}"#),
            "unknown type `3G`",
        ),
    ] {
        let e = m
            .apply(&manifest(&[&entry]), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{entry}: {e}");
    }
    assert!(m.env().writes().is_empty());
}

#[test]
fn a_failed_write_undoes_the_whole_run() {
    let (_dir, m) = sample();
    // An existing definition the run changes, to see it restored.
    m.apply(
        &manifest(&[&format!(
            r#"{{"uuid": "{C}", "type": "128M", "running": false}}"#
        )]),
        false,
    )
    .unwrap();
    let c_file = m.definition_path("vgpu_shim1", C.parse().unwrap());
    let c_before = fs::read(&c_file).unwrap();
    let creates_before = m.env().writes().len();
    m.env().fail_write("/create", 1); // the second create of the run
    let e = m.apply(&three(), false).unwrap_err();
    assert!(matches!(e, Error::Undone { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("everything this run had changed was undone"),
        "{e}"
    );
    let removes: Vec<_> = m.env().writes()[creates_before..]
        .iter()
        .filter(|(p, _)| p.ends_with("/remove"))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(removes, [format!("sys/bus/mdev/devices/{A}/remove")]);
    assert_eq!(m.instances().unwrap().len(), 2, "only the sample's");
    assert_eq!(def_files(&m), [format!("vgpu_shim1/{C}")]);
    assert_eq!(fs::read(&c_file).unwrap(), c_before, "restored");
}

#[test]
fn create_count_places_and_admits_all_before_the_first() {
    let (_dir, m) = sample();
    let spec = Spec {
        type_spec: Some("256M".into()),
        weight: Some(3),
        placement: Placement::Spread,
        ..Spec::default()
    };
    // 768 + 1024 MiB free: 7 of 256M fit, 8 do not.
    let e = m.start_transient_batch(&spec, 8).unwrap_err();
    assert!(
        e.to_string().contains("(vGPU 8 of 8; nothing created)"),
        "{e}"
    );
    assert!(m.env().writes().is_empty());
    let out = m.start_transient_batch(&spec, 7).unwrap();
    let on: Vec<&str> = out.iter().map(|o| o.parent.as_str()).collect();
    assert_eq!(
        on,
        [
            "vgpu_shim1",
            "vgpu_shim0",
            "vgpu_shim1",
            "vgpu_shim0",
            "vgpu_shim1",
            "vgpu_shim0",
            "vgpu_shim1"
        ]
    );
    assert!(out
        .iter()
        .all(|o| knob(&m, &o.uuid.to_string(), "weight") == "3"));
    for o in &out {
        m.remove(o.uuid).unwrap();
    }
    // A failure on the third removes the first two.
    m.env().fail_write("/vgpu/weight", 2);
    let e = m.start_transient_batch(&spec, 4).unwrap_err();
    assert!(matches!(e, Error::Undone { .. }), "{e}");
    assert_eq!(m.instances().unwrap().len(), 2, "only the sample's");
    let none: Vec<Uuid> = Vec::new();
    assert_eq!(
        m.instances()
            .unwrap()
            .iter()
            .map(|i| i.uuid)
            .filter(|u| !SAMPLE_UUIDS.contains(u))
            .collect::<Vec<_>>(),
        none
    );
}
