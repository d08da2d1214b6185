//! Compiles shaders/engine.wgsl to SPIR-V with naga (no system tool, no prebuilt blob).
use std::path::PathBuf;

fn main() {
    let src_path = "shaders/engine.wgsl";
    println!("cargo:rerun-if-changed={src_path}");
    let src = std::fs::read_to_string(src_path).expect("read shaders/engine.wgsl");
    let module = match naga::front::wgsl::parse_str(&src) {
        Ok(m) => m,
        Err(e) => panic!("{}", e.emit_to_string_with_path(&src, src_path)),
    };
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::PUSH_CONSTANT,
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&src, src_path)));
    let opts = naga::back::spv::Options {
        lang_version: (1, 3),
        // Indexes are checked by the executor against the VRAM size before dispatch.
        bounds_check_policies: naga::proc::BoundsCheckPolicies::default(),
        ..Default::default()
    };
    let words = naga::back::spv::write_vec(&module, &info, &opts, None)
        .unwrap_or_else(|e| panic!("SPIR-V output: {e}"));
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("engine.spv");
    std::fs::write(&out, bytes).expect("write engine.spv");
}
