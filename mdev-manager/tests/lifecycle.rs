//! define / undefine / start / stop / modify --defined against a fake sysfs tree and a
//! temporary /etc/mdevctl.d.

use std::fs;
use uuid::Uuid;

use vgpu_mdev_manager::definition::Definition;
use vgpu_mdev_manager::fake::{FakeSysfs, SAMPLE_UUIDS};
use vgpu_mdev_manager::{
    DefinitionUpdate, Done, Error, Manager, Placement, RootedEnvironment, Spec, StartMode,
};

const NEW: Uuid = Uuid::from_u128(0x55555555_5555_4555_8555_555555555555);
const OTHER: Uuid = Uuid::from_u128(0x66666666_6666_4666_8666_666666666666);

fn sample() -> (tempfile::TempDir, FakeSysfs, Manager<RootedEnvironment>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::sample(dir.path()).unwrap();
    let m = Manager::new(RootedEnvironment::new(dir.path()));
    (dir, fake, m)
}

fn spec(parent: Option<&str>, t: &str) -> Spec {
    Spec {
        parent: parent.map(str::to_string),
        type_spec: Some(t.to_string()),
        ..Spec::default()
    }
}

fn def_file(dir: &tempfile::TempDir, parent: &str, uuid: Uuid) -> String {
    fs::read_to_string(
        dir.path()
            .join("etc/mdevctl.d")
            .join(parent)
            .join(uuid.to_string()),
    )
    .unwrap()
}

#[test]
fn define_writes_mdevctls_format_and_is_idempotent() {
    let (dir, _fake, m) = sample();
    let mut s = spec(Some("vgpu_shim1"), "1g");
    s.weight = Some(8);
    s.cap = Some(40);
    let (d, done) = m.define(Some(NEW), &s, StartMode::Auto).unwrap();
    assert_eq!(done, Done::Defined);
    assert_eq!(d.mdev_type, "vgpu_shim-1G");
    assert_eq!(
        def_file(&dir, "vgpu_shim1", NEW),
        "{\n  \"mdev_type\": \"vgpu_shim-1G\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \
         \"vgpu/weight\": \"8\"\n    },\n    {\n      \"vgpu/cap\": \"40\"\n    }\n  ]\n}"
    );
    // Same again: success, nothing written.
    let (_, done) = m.define(Some(NEW), &s, StartMode::Auto).unwrap();
    assert_eq!(done, Done::Unchanged);
    // Different: refused, the file is left as it was.
    s.cap = Some(10);
    let e = m.define(Some(NEW), &s, StartMode::Auto).unwrap_err();
    assert!(
        e.to_string()
            .contains("already defined on vgpu_shim1 as vgpu_shim-1G (auto, weight 8, cap 40)"),
        "{e}"
    );
    assert!(def_file(&dir, "vgpu_shim1", NEW).contains("\"40\""));
    let defs = m.definitions().unwrap();
    assert_eq!(defs.len(), 1);
    assert_eq!((defs[0].weight(), defs[0].cap()), (Some(8), Some(40)));
    // No temporary left behind.
    let names: Vec<_> = fs::read_dir(dir.path().join("etc/mdevctl.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["vgpu_shim1"]);
}

#[test]
fn define_captures_a_running_instance_with_its_knobs() {
    let (dir, _fake, m) = sample();
    // SAMPLE_UUIDS[1]: vgpu_shim0, 1G, weight 50, cap 25.
    let (d, _) = m
        .define(Some(SAMPLE_UUIDS[1]), &Spec::default(), StartMode::Manual)
        .unwrap();
    assert_eq!(
        (d.parent.as_str(), d.mdev_type.as_str()),
        ("vgpu_shim0", "vgpu_shim-1G")
    );
    assert_eq!((d.weight(), d.cap()), (Some(50), Some(25)));
    assert!(def_file(&dir, "vgpu_shim0", SAMPLE_UUIDS[1]).contains("\"vgpu/weight\": \"50\""));
    // A type that differs from what runs is refused.
    let e = m
        .define(Some(SAMPLE_UUIDS[0]), &spec(None, "2G"), StartMode::Manual)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("is running on vgpu_shim0 as vgpu_shim-256M"),
        "{e}"
    );
    // Neither a type nor a running instance.
    let e = m
        .define(Some(NEW), &Spec::default(), StartMode::Manual)
        .unwrap_err();
    assert!(e.to_string().starts_with("say which type to define"), "{e}");
}

#[test]
fn placement_spreads_or_packs_and_counts_definitions() {
    let (_dir, _fake, m) = sample();
    // vgpu_shim0: 2048 MiB pool, 1280 reserved by running instances; vgpu_shim1: 1024 free.
    let (d, _) = m
        .define(Some(NEW), &spec(None, "512M"), StartMode::Auto)
        .unwrap();
    assert_eq!(d.parent, "vgpu_shim1", "spread: most left after placing");
    let mut s = spec(None, "256M");
    s.placement = Placement::Pack;
    let (d, _) = m.define(Some(OTHER), &s, StartMode::Auto).unwrap();
    assert_eq!(
        d.parent, "vgpu_shim1",
        "pack: 256 left on 1 after placing, 512 on 0"
    );
    // Now committed: shim0 1280 of 2048; shim1 768 of 1024. 1G fits nowhere.
    let e = m
        .define(None, &spec(None, "1G"), StartMode::Auto)
        .unwrap_err();
    assert!(matches!(e, Error::Admission(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "no parent has room for a 1G vGPU: vgpu_shim0: a 1G vGPU needs 1024 MiB, 768 of its \
         2048 MiB pool are left; vgpu_shim1: a 1G vGPU needs 1024 MiB, 256 of its 1024 MiB \
         pool are left (counting every definition there, and every running instance without \
         one)"
    );
    // With an explicit parent the definitions are counted too.
    let e = m
        .define(None, &spec(Some("vgpu_shim1"), "1G"), StartMode::Auto)
        .unwrap_err();
    assert!(e.to_string().contains("counting every definition"), "{e}");
    assert_eq!(m.definitions().unwrap().len(), 2);
}

#[test]
fn fixed_share_weights_are_admitted_per_engine() {
    let (_dir, fake, m) = sample();
    fake.set_parent_attr("vgpu_shim1", "policy", "fixed_share")
        .unwrap();
    let mut s = spec(Some("vgpu_shim1"), "128M");
    s.weight = Some(60);
    m.define(Some(NEW), &s, StartMode::Auto).unwrap();
    let e = m.define(Some(OTHER), &s, StartMode::Auto).unwrap_err();
    assert!(
        e.to_string()
            .contains("fixed_share weights would add up to 120 (+60), over 100"),
        "{e}"
    );
    fake.set_parent_attr("vgpu_shim1", "engines", 2).unwrap();
    m.define(Some(OTHER), &s, StartMode::Auto).unwrap();
}

#[test]
fn start_writes_create_and_rolls_back_failed_attributes() {
    let (_dir, fake, m) = sample();
    let mut s = spec(Some("vgpu_shim1"), "256M");
    s.weight = Some(9);
    // The fake does not react to `create`, so the weight has no device to go to: the
    // attribute write fails, and the removal that undoes the create fails as well.
    let e = m.start(Some(NEW), &s).unwrap_err();
    let create = fake.type_dir("vgpu_shim1", "vgpu_shim-256M").join("create");
    assert_eq!(fs::read_to_string(create).unwrap(), NEW.to_string());
    assert!(matches!(e, Error::RolledBack { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("was removed again, but removing it failed too"),
        "{msg}"
    );
    // Already running: success, nothing written.
    let o = m.start(Some(SAMPLE_UUIDS[0]), &spec(None, "256M")).unwrap();
    assert_eq!(o.done, Done::AlreadyRunning);
    assert_eq!(
        o.note().unwrap(),
        format!("{} is already running on vgpu_shim0", SAMPLE_UUIDS[0])
    );
    // Running as another type: refused.
    assert!(matches!(
        m.start(Some(SAMPLE_UUIDS[0]), &spec(None, "1G")),
        Err(Error::UuidInUse(_))
    ));
}

#[test]
fn start_of_a_definition_checks_admission_first() {
    let (_dir, fake, m) = sample();
    m.define(
        Some(NEW),
        &spec(Some("vgpu_shim0"), "512M"),
        StartMode::Manual,
    )
    .unwrap();
    // Another tenant took the room meanwhile.
    fake.add_instance("vgpu_shim0", "vgpu_shim-512M", OTHER, None, 0, 0)
        .unwrap();
    let e = m.start(Some(NEW), &Spec::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "refused: vgpu_shim0: {NEW} (vgpu_shim-512M) needs 512 MiB, 256 of its 2048 MiB \
             pool are left"
        )
    );
    let create = fake.type_dir("vgpu_shim0", "vgpu_shim-512M").join("create");
    assert_eq!(fs::read_to_string(create).unwrap(), "", "nothing written");
}

#[test]
fn start_parent_starts_only_auto_definitions() {
    let (_dir, fake, m) = sample();
    m.define(
        Some(NEW),
        &spec(Some("vgpu_shim1"), "128M"),
        StartMode::Auto,
    )
    .unwrap();
    m.define(
        Some(OTHER),
        &spec(Some("vgpu_shim1"), "256M"),
        StartMode::Manual,
    )
    .unwrap();
    let r = m.start_parent("vgpu_shim1").unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, NEW);
    let create = fake.type_dir("vgpu_shim1", "vgpu_shim-128M").join("create");
    assert_eq!(fs::read_to_string(create).unwrap(), NEW.to_string());
    let manual = fake.type_dir("vgpu_shim1", "vgpu_shim-256M").join("create");
    assert_eq!(fs::read_to_string(manual).unwrap(), "");
}

#[test]
fn stop_and_undefine_are_idempotent() {
    let (dir, fake, m) = sample();
    assert_eq!(m.stop(NEW).unwrap().done, Done::NotRunning);
    assert_eq!(m.stop(SAMPLE_UUIDS[0]).unwrap().done, Done::Stopped);
    let remove = fake
        .instance_dir("vgpu_shim0", SAMPLE_UUIDS[0])
        .join("remove");
    assert_eq!(fs::read_to_string(remove).unwrap(), "1");
    m.define(
        Some(NEW),
        &spec(Some("vgpu_shim1"), "128M"),
        StartMode::Auto,
    )
    .unwrap();
    assert_eq!(m.undefine(NEW, None).unwrap()[0].done, Done::Undefined);
    assert!(!dir
        .path()
        .join("etc/mdevctl.d/vgpu_shim1")
        .join(NEW.to_string())
        .exists());
    assert_eq!(m.undefine(NEW, None).unwrap()[0].done, Done::NotDefined);
}

#[test]
fn modify_defined_and_live() {
    let (dir, fake, m) = sample();
    m.define(Some(SAMPLE_UUIDS[1]), &Spec::default(), StartMode::Manual)
        .unwrap();
    let update = DefinitionUpdate {
        weight: Some(7),
        cap: None,
        start: Some(StartMode::Auto),
    };
    let (d, done) = m.modify_definition(SAMPLE_UUIDS[1], None, update).unwrap();
    assert_eq!(
        (done, d.weight(), d.cap(), d.start),
        (Done::Modified, Some(7), Some(25), StartMode::Auto)
    );
    let (_, done) = m.modify_definition(SAMPLE_UUIDS[1], None, update).unwrap();
    assert_eq!(done, Done::Unchanged);
    let vgpu = fake
        .instance_dir("vgpu_shim0", SAMPLE_UUIDS[1])
        .join("vgpu");
    assert_eq!(
        fs::read_to_string(vgpu.join("weight")).unwrap(),
        "50\n",
        "live untouched"
    );
    let both = DefinitionUpdate {
        weight: Some(3),
        cap: Some(0),
        start: None,
    };
    let (_, d) = m.modify_both(SAMPLE_UUIDS[1], None, both).unwrap();
    assert_eq!(fs::read_to_string(vgpu.join("weight")).unwrap(), "3");
    assert_eq!(fs::read_to_string(vgpu.join("cap")).unwrap(), "0");
    assert_eq!((d.weight(), d.cap()), (Some(3), Some(0)));
    assert!(def_file(&dir, "vgpu_shim0", SAMPLE_UUIDS[1]).contains("\"vgpu/weight\": \"3\""));
    // Not defined: an error, nothing written.
    assert!(matches!(
        m.modify_definition(NEW, None, both),
        Err(Error::NotDefined(_))
    ));
}

#[test]
fn reads_mdevctl_definitions_and_skips_other_drivers_and_bad_files() {
    let (dir, _fake, m) = sample();
    let base = dir.path().join("etc/mdevctl.d");
    fs::create_dir_all(base.join("vgpu_shim0")).unwrap();
    fs::create_dir_all(base.join("0000:00:02.0")).unwrap();
    fs::create_dir_all(base.join("scripts.d/callouts")).unwrap();
    // As mdevctl 1.2.0 writes them.
    fs::write(
        base.join("vgpu_shim0").join(NEW.to_string()),
        "{\n  \"mdev_type\": \"vgpu_shim-128M\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \
         \"vgpu/weight\": \"5\"\n    }\n  ]\n}",
    )
    .unwrap();
    fs::write(
        base.join("0000:00:02.0").join(OTHER.to_string()),
        "{\"mdev_type\": \"i915-GVTg_V5_4\", \"start\": \"auto\", \"attrs\": []}",
    )
    .unwrap();
    fs::write(base.join("vgpu_shim0").join(OTHER.to_string()), "{ half").unwrap();
    fs::write(base.join("vgpu_shim0").join("notes.txt"), "x").unwrap();
    let defs = m.definitions().unwrap();
    assert_eq!(
        defs,
        vec![Definition {
            uuid: NEW,
            parent: "vgpu_shim0".into(),
            mdev_type: "vgpu_shim-128M".into(),
            start: StartMode::Auto,
            attrs: vec![("vgpu/weight".into(), "5".into())],
        }]
    );
    // The broken file is an error when it is the one asked for.
    let e = m.definition(OTHER, Some("vgpu_shim0")).unwrap_err();
    assert!(e.to_string().starts_with("bad definition "), "{e}");
}
