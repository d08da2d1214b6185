//! `vgpu-executor`: the host daemon that will run vgpu's validated engine commands on a
//! Vulkan device (docs/executor.md). For now: list and select devices, and check the
//! chosen one against the reference (`--self-test`); the kernel handoff queue comes next.

use std::process::ExitCode;

use log::{error, info};
use vgpu_engine_abi::reference;
use vgpu_engine_abi::Cmd;
use vgpu_executor::{list_devices, logger, DeviceSelector, Executor};

const USAGE: &str = "usage: vgpu-executor --list-devices
       vgpu-executor [--device NAME|INDEX|UUID] --self-test
  --list-devices   index, name, UUID and type of every Vulkan device
  --device SEL     the device: an index, a UUID, or (part of) a name (default: the
                   first GPU with a compute queue, else the first device)
  --self-test      run one of each command on the device and compare with the reference
  VGPU_LOG=debug   more logging (error, warn, info, debug, trace)";

fn self_test(ex: &Executor) -> Result<(), String> {
    let len = 1 << 20;
    let mut vram = ex.alloc_vram(len).map_err(|e| e.to_string())?;
    info!(
        "VRAM: {} KiB, {}",
        len >> 10,
        if vram.imported() {
            "host memory imported with VK_EXT_external_memory_host"
        } else {
            "mapped device memory (no VK_EXT_external_memory_host)"
        }
    );
    let mut seed = 0x1234_5678_9abc_def0u64;
    for b in vram.bytes_mut() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *b = (seed >> 56) as u8;
    }
    let mut image = vram.bytes().to_vec();
    let mode = reference::ScanoutMode {
        xres: 64,
        yres: 32,
        bytes_pp: 3,
        stride: 200,
        start: 512 << 10,
    };
    let cmds = [
        Cmd::Fill {
            dst: 4096,
            len: 8192,
            value: 0x1234_5678,
        },
        Cmd::Copy {
            dst: 3,
            src: 0,
            len: 10_000,
        },
        Cmd::Checksum {
            src: 0,
            len: 65_536 * 4,
            dst: 8,
        },
        Cmd::Gemm {
            a: 0,
            b: 40_000,
            c: 200_000,
            m: 33,
            n: 47,
            k: 29,
        },
        Cmd::Gemm {
            a: 0,
            b: 4096,
            c: 64,
            m: 5,
            n: 5,
            k: 5,
        },
        Cmd::Blit {
            src: 510 << 10,
            src_stride: 100,
            width: 50,
            height: 30,
            dst_x: 3,
            dst_y: 2,
        },
        Cmd::Fence {
            seqno: 42,
            addr: 16,
            irq: false,
            write: true,
        },
    ];
    let raw: Vec<_> = cmds.iter().map(Cmd::raw).collect();
    for c in &raw {
        reference::apply(&mut image, c, Some(&mode))
            .ok_or("reference refused a self-test command")?;
    }
    ex.execute(&mut vram, &raw, Some(mode))
        .map_err(|e| e.to_string())?;
    match vram.bytes().iter().zip(&image).position(|(a, b)| a != b) {
        None => {
            info!(
                "self-test: {} commands bit-identical to the reference",
                raw.len()
            );
            Ok(())
        }
        Some(off) => Err(format!(
            "self-test: GPU and reference differ at VRAM offset {off:#x}"
        )),
    }
}

fn main() -> ExitCode {
    logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sel = DeviceSelector::Default;
    let (mut list, mut test) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list-devices" => list = true,
            "--self-test" => test = true,
            "--device" => match it.next() {
                Some(v) => sel = DeviceSelector::parse(v),
                None => {
                    eprintln!("--device needs a value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("unknown argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if list {
        return match list_devices() {
            Ok(devs) => {
                println!("index\tname\tuuid\ttype");
                for d in devs {
                    println!("{d}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if !test {
        eprintln!("nothing to do (the kernel handoff queue is not implemented yet)\n{USAGE}");
        return ExitCode::from(2);
    }
    let ex = match Executor::new(&sel) {
        Ok(ex) => ex,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match self_test(&ex) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
