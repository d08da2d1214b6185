use super::*;
use crate::fake::{FakeSysfs, SAMPLE_UUIDS};
use crate::model::TypeDescription;
use crate::render;
use crate::test_env::TempEnvironment;
use std::io;
use std::path::Path;
use vgpu_sysfs::io::{parent_and_type, write_attr};

fn sample() -> (Manager<TempEnvironment>, FakeSysfs) {
    let env = TempEnvironment::new();
    let fake = FakeSysfs::sample(env.root()).expect("build fake sysfs");
    (Manager::new(env), fake)
}

/// Compares with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites the file instead.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

const ABSENT: Uuid = Uuid::from_u128(0x44444444_4444_4444_8444_444444444444);

#[test]
fn golden_parents() {
    let (m, _fake) = sample();
    let parents = m.parents().unwrap();
    golden("parents.txt", &render::parents_table(&parents));
    golden("parents.json", &render::json(&parents));
}

#[test]
fn golden_types() {
    let (m, _fake) = sample();
    let types = m.types(None).unwrap();
    golden("types.txt", &render::types_table(&types));
    golden("types.json", &render::json(&types));
    let one = m.types(Some("vgpu_shim1")).unwrap();
    golden("types-vgpu_shim1.txt", &render::types_table(&one));
}

#[test]
fn golden_list() {
    let (m, _fake) = sample();
    let instances = m.instances().unwrap();
    golden("list.txt", &render::instances_table(&instances));
    golden("list.json", &render::json(&instances));
}

#[test]
fn golden_pool() {
    let (m, _fake) = sample();
    let pool = m.pool("vgpu_shim0").unwrap();
    golden("pool.txt", &render::pool_text(&pool));
    golden("pool.json", &render::json(&pool));
}

#[test]
fn model_values() {
    let (m, _fake) = sample();
    let parents = m.parents().unwrap();
    let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["vgpu_shim0", "vgpu_shim1"],
        "foreign parent ignored"
    );
    let p0 = &parents[0];
    assert_eq!(
        (p0.pool_mb, p0.pool_free_mb, p0.vram_pages),
        (2048, 768, 1152)
    );
    assert_eq!(p0.reserved_mb(), 1280);
    let t = &p0.types[1];
    assert_eq!(t.id, "vgpu_shim-256M");
    assert_eq!(t.name, "vgpu 256M");
    assert_eq!(
        t.description,
        TypeDescription {
            vram_mb: 256,
            weight: 1,
            max_instances: 8
        }
    );
    assert_eq!(t.available_instances, 3);
    assert_eq!(t.device_api, "vfio-pci");
    let ids: Vec<&str> = p0.types.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "vgpu_shim-128M",
            "vgpu_shim-256M",
            "vgpu_shim-512M",
            "vgpu_shim-1G",
            "vgpu_shim-2G",
            "vgpu_shim-4G"
        ],
        "smallest quota first"
    );

    let instances = m.instances().unwrap();
    assert_eq!(instances.len(), 2, "foreign instance ignored");
    assert_eq!(
        instances[1],
        Instance {
            uuid: SAMPLE_UUIDS[1],
            parent: "vgpu_shim0".into(),
            type_id: "vgpu_shim-1G".into(),
            vram_mb: 1024,
            vram_used_kb: 4096,
            weight: 50,
            cap: 25,
        }
    );
    assert_eq!(m.instance(SAMPLE_UUIDS[0]).unwrap().weight, 1);
    assert!(matches!(
        m.instance(SAMPLE_UUIDS[2]),
        Err(Error::InstanceNotFound(_))
    ));
    assert!(matches!(
        m.instance(ABSENT),
        Err(Error::InstanceNotFound(_))
    ));
}

#[test]
fn empty_system() {
    let env = TempEnvironment::new();
    let m = Manager::new(&env);
    assert!(m.parents().unwrap().is_empty());
    assert!(m.instances().unwrap().is_empty());
    assert_eq!(
        m.create("vgpu_shim0", "256M", None)
            .unwrap_err()
            .to_string(),
        "no vgpu parent named `vgpu_shim0` (known: none; is the vgpu_shim module loaded?)"
    );
}

#[test]
fn unknown_parents() {
    let (m, _fake) = sample();
    for name in ["vgpu_shim9", "0000:00:02.0", "../vgpu_shim0", ""] {
        let e = m.types(Some(name)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no vgpu parent named `{name}` (known: vgpu_shim0, vgpu_shim1)")
        );
    }
}

#[test]
fn create_writes_the_uuid() {
    let (m, fake) = sample();
    let uuid = m
        .create("vgpu_shim1", "vgpu_shim-512M", Some(ABSENT))
        .unwrap();
    assert_eq!(uuid, ABSENT);
    assert_eq!(
        read(&fake.type_dir("vgpu_shim1", "vgpu_shim-512M").join("create")),
        ABSENT.to_string()
    );
}

#[test]
fn create_generates_a_v4_uuid_and_takes_short_types() {
    let (m, fake) = sample();
    let uuid = m.create("vgpu_shim0", "256M", None).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    let written = read(&fake.type_dir("vgpu_shim0", "vgpu_shim-256M").join("create"));
    assert_eq!(Uuid::parse_str(&written).unwrap(), uuid);
    let other = m.create("vgpu_shim0", "256M", None).unwrap();
    assert_ne!(uuid, other);
}

#[test]
fn create_rejects_unknown_type() {
    let (m, _fake) = sample();
    let e = m.create("vgpu_shim0", "3G", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "parent vgpu_shim0: unknown type `3G` (known: vgpu_shim-128M, vgpu_shim-256M, \
         vgpu_shim-512M, vgpu_shim-1G, vgpu_shim-2G, vgpu_shim-4G; the short form `256M`, any \
         case, or the quota in MiB also work)"
    );
    assert!(matches!(
        m.create("vgpu_shim0", "i915-GVTg_V5_4", None),
        Err(Error::TypeNotFound { .. })
    ));
}

#[test]
fn create_rejects_a_taken_uuid_without_writing() {
    let (m, fake) = sample();
    for uuid in SAMPLE_UUIDS {
        let e = m.create("vgpu_shim1", "128M", Some(uuid)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("an mdev device {uuid} already exists")
        );
    }
    assert_eq!(
        read(&fake.type_dir("vgpu_shim1", "vgpu_shim-128M").join("create")),
        ""
    );
}

#[test]
fn create_prechecks_available_instances() {
    let (m, fake) = sample();
    let e = m.create("vgpu_shim1", "4G", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no vgpu_shim-4G instance available on vgpu_shim1: pool of vgpu_shim1 has 1024 MiB free, \
         type needs 4096 MiB"
    );
    assert_eq!(
        read(&fake.type_dir("vgpu_shim1", "vgpu_shim-4G").join("create")),
        ""
    );
}

#[test]
fn create_maps_enospc() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let (m, fake) = sample();
    // The pool shrank between our read and the kernel's check: writes fail with ENOSPC.
    let create = fake.type_dir("vgpu_shim0", "vgpu_shim-512M").join("create");
    fs::remove_file(&create).unwrap();
    std::os::unix::fs::symlink("/dev/full", &create).unwrap();
    let e = m.create("vgpu_shim0", "512M", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pool of vgpu_shim0 has 768 MiB free, type vgpu_shim-512M needs 512 MiB"
    );
}

#[test]
fn remove_writes_one() {
    let (m, fake) = sample();
    m.remove(SAMPLE_UUIDS[1]).unwrap();
    assert_eq!(
        read(
            &fake
                .instance_dir("vgpu_shim0", SAMPLE_UUIDS[1])
                .join("remove")
        ),
        "1"
    );
    assert_eq!(
        read(
            &fake
                .instance_dir("vgpu_shim0", SAMPLE_UUIDS[0])
                .join("remove")
        ),
        ""
    );
}

#[test]
fn remove_ignores_unknown_and_foreign() {
    let (m, fake) = sample();
    assert_eq!(
        m.remove(ABSENT).unwrap_err().to_string(),
        format!("no vgpu instance {ABSENT}")
    );
    assert!(matches!(
        m.remove(SAMPLE_UUIDS[2]),
        Err(Error::InstanceNotFound(_))
    ));
    assert_eq!(
        read(
            &fake
                .instance_dir("0000:00:02.0", SAMPLE_UUIDS[2])
                .join("remove")
        ),
        ""
    );
}

#[test]
fn modify_writes_and_reads_back() {
    let (m, fake) = sample();
    let uuid = SAMPLE_UUIDS[0];
    let i = m
        .modify(
            uuid,
            InstanceUpdate {
                weight: Some(100),
                cap: Some(0),
            },
        )
        .unwrap();
    assert_eq!((i.weight, i.cap), (100, 0));
    let vgpu = fake.instance_dir("vgpu_shim0", uuid).join("vgpu");
    assert_eq!(read(&vgpu.join("weight")), "100");
    assert_eq!(read(&vgpu.join("cap")), "0");
    assert_eq!(m.set_cap(uuid, 100).unwrap().cap, 100);
    assert_eq!(m.set_weight(uuid, 1).unwrap().weight, 1);
    assert_eq!(m.instance(uuid).unwrap().cap, 100);
}

#[test]
fn modify_validates_before_writing() {
    let (m, fake) = sample();
    let uuid = SAMPLE_UUIDS[1];
    let cases = [
        (
            InstanceUpdate {
                weight: Some(0),
                cap: None,
            },
            "weight must be between 1 and 100, got 0",
        ),
        (
            InstanceUpdate {
                weight: Some(101),
                cap: None,
            },
            "weight must be between 1 and 100, got 101",
        ),
        (
            InstanceUpdate {
                weight: Some(5),
                cap: Some(101),
            },
            "cap must be between 0 and 100, got 101",
        ),
    ];
    for (update, msg) in cases {
        assert_eq!(m.modify(uuid, update).unwrap_err().to_string(), msg);
    }
    let vgpu = fake.instance_dir("vgpu_shim0", uuid).join("vgpu");
    assert_eq!(read(&vgpu.join("weight")), "50\n", "nothing written");
    assert_eq!(read(&vgpu.join("cap")), "25\n", "nothing written");
    assert!(matches!(
        m.set_weight(ABSENT, 5),
        Err(Error::InstanceNotFound(_))
    ));
}

#[test]
fn pool_resize() {
    let (m, fake) = sample();
    let pool = m.set_pool_mb("vgpu_shim1", 4096).unwrap();
    assert_eq!(pool.pool_mb, 4096);
    assert_eq!(
        read(&fake.parent_dir("vgpu_shim1").join("vgpu/pool_mb")),
        "4096"
    );

    for (mb, msg) in [
        (63, "pool_mb must be between 64 and 1048576, got 63"),
        (
            1_048_577,
            "pool_mb must be between 64 and 1048576, got 1048577",
        ),
        (
            1024,
            "cannot set pool of vgpu_shim0 to 1024 MiB: instances reserve 1280 MiB",
        ),
    ] {
        assert_eq!(
            m.set_pool_mb("vgpu_shim0", mb).unwrap_err().to_string(),
            msg
        );
    }
    assert_eq!(
        read(&fake.parent_dir("vgpu_shim0").join("vgpu/pool_mb")),
        "2048\n"
    );
    assert!(matches!(
        m.set_pool_mb("nope", 128),
        Err(Error::ParentNotFound { .. })
    ));
}

#[test]
fn bad_description_is_reported_with_its_path() {
    let (m, fake) = sample();
    let desc = fake
        .type_dir("vgpu_shim1", "vgpu_shim-2G")
        .join("description");
    fs::write(&desc, "vram_mb=2048, weight=8\n").unwrap();
    let e = m.parents().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "bad type description in {}: expected 3 fields `vram_mb=<N>, weight=<W>, \
             max_instances=<M>`, found 2",
            m.env()
                .parent_base()
                .join("vgpu_shim1/mdev_supported_types/vgpu_shim-2G/description")
                .display()
        )
    );
}

#[test]
fn malformed_and_missing_attributes() {
    let (m, fake) = sample();
    let attr = fake.parent_dir("vgpu_shim0").join("vgpu/pool_free_mb");
    fs::write(&attr, "lots\n").unwrap();
    let e = m.parents().unwrap_err().to_string();
    assert!(
        e.starts_with("unexpected content in ") && e.ends_with("`lots` is not a decimal number"),
        "{e}"
    );
    fs::remove_file(&attr).unwrap();
    let e = m.pool("vgpu_shim0").unwrap_err().to_string();
    assert!(
        e.starts_with("cannot read ") && e.contains("pool_free_mb"),
        "{e}"
    );
}

#[test]
fn writes_never_create_attributes() {
    let (m, fake) = sample();
    let cap = fake
        .instance_dir("vgpu_shim0", SAMPLE_UUIDS[0])
        .join("vgpu/cap");
    fs::remove_file(&cap).unwrap();
    // Reading fails first; the write path must not invent the file either.
    assert!(m.set_cap(SAMPLE_UUIDS[0], 5).is_err());
    assert!(!cap.exists());
    assert!(write_attr(&cap, "5").is_err());
    assert!(!cap.exists());
}

#[test]
fn errno_mapping() {
    let p = PathBuf::from("/sys/x/weight");
    let e = write_error(
        p.clone(),
        io::Error::from_raw_os_error(libc::EACCES),
        "w".into(),
    );
    assert_eq!(
        e.to_string(),
        "permission denied writing /sys/x/weight (run as root)"
    );
    let e = write_error(
        p.clone(),
        io::Error::from_raw_os_error(libc::EPERM),
        "w".into(),
    );
    assert!(matches!(e, Error::PermissionDenied { .. }));
    let e = write_error(
        p,
        io::Error::from_raw_os_error(libc::EINVAL),
        "weight=5 for x".into(),
    );
    assert!(
        e.to_string().starts_with("kernel refused weight=5 for x: "),
        "{e}"
    );
}

#[test]
fn instance_links_are_parsed() {
    assert_eq!(
        parent_and_type(Path::new(
            "/sys/devices/virtual/vgpu_shim/vgpu_shim3/mdev_supported_types/vgpu_shim-1G"
        )),
        Some(("vgpu_shim3".into(), "vgpu_shim-1G".into()))
    );
    assert_eq!(
        parent_and_type(Path::new("/sys/devices/x/vgpu_shim-1G")),
        None
    );
    assert_eq!(parent_and_type(Path::new("mdev_supported_types/t")), None);
}
