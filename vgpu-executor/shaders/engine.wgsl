// vgpu engine commands as Vulkan compute (docs/executor.md, docs/engine-abi.md).
//
// Compiled to SPIR-V at build time by naga (build.rs). Every entry point sees the same
// bindings and the same push-constant block; what p0..p7 mean is per entry point (and
// mirrored in src/exec.rs). VRAM is an array of little-endian u32 words; byte offsets
// are u32 (VRAM of at most 4 GiB: src/vram.rs checks).

struct Params {
    p0: u32,
    p1: u32,
    p2: u32,
    p3: u32,
    p4: u32,
    p5: u32,
    p6: u32,
    p7: u32,
}

@group(0) @binding(0) var<storage, read_write> vram: array<u32>;
@group(0) @binding(1) var<storage, read_write> scratch: array<u32>;
var<push_constant> pc: Params;

const WG: u32 = 64u;

// FILL: p0 first word, p1 words, p2 value. Grid-stride loop.
@compute @workgroup_size(64)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = nwg.x * WG;
    for (var i = gid.x; i < pc.p1; i += total) {
        vram[pc.p0 + i] = pc.p2;
    }
}

fn load_byte(from_scratch: bool, b: u32) -> u32 {
    var w: u32;
    if from_scratch {
        w = scratch[b >> 2u];
    } else {
        w = vram[b >> 2u];
    }
    return (w >> ((b & 3u) * 8u)) & 0xffu;
}

// A strided byte copy ("rows" rows of "row_bytes" bytes), the core of COPY and BLIT.
// p0 dst first byte, p1 dst stride (bytes between rows, > 0), p2 row bytes,
// p3 rows, p4 src first byte, p5 src stride, p6 dst words to cover (from p0 / 4),
// p7 bit 0: source is the scratch buffer, bit 1: destination is the scratch buffer.
// Each invocation owns whole destination words (so no two write the same word), takes
// each of its bytes that lies in a row from the source and keeps the others. The
// source must not be written by the same dispatch (the caller goes through scratch
// when it would be).
@compute @workgroup_size(64)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = nwg.x * WG;
    let src_scratch = (pc.p7 & 1u) != 0u;
    let dst_scratch = (pc.p7 & 2u) != 0u;
    let first = pc.p0;
    let w0 = first >> 2u;
    for (var j = gid.x; j < pc.p6; j += total) {
        let word = w0 + j;
        var old: u32;
        if dst_scratch {
            old = scratch[word];
        } else {
            old = vram[word];
        }
        var out = 0u;
        for (var i = 0u; i < 4u; i++) {
            let b = word * 4u + i;
            var v = (old >> (i * 8u)) & 0xffu;
            if b >= first {
                let rel = b - first;
                let row = rel / pc.p1;
                let col = rel % pc.p1;
                if row < pc.p3 && col < pc.p2 {
                    v = load_byte(src_scratch, pc.p4 + row * pc.p5 + col);
                }
            }
            out |= v << (i * 8u);
        }
        if dst_scratch {
            scratch[word] = out;
        } else {
            vram[word] = out;
        }
    }
}

// (hi, lo) * 0x100000001b3 mod 2^64 in u32 arithmetic (no shaderInt64 needed):
// h * 0x1b3 + (h << 40), and h << 40 only adds lo << 8 to the high word.
fn fnv_mul(h: vec2<u32>) -> vec2<u32> {
    let lo = h.y;
    let l0 = (lo & 0xffffu) * 0x1b3u;
    let l1 = (lo >> 16u) * 0x1b3u;
    let t = l1 << 16u;
    let low = l0 + t;
    let carry = select(0u, 1u, low < t);
    let high = h.x * 0x1b3u + (l1 >> 16u) + carry + (lo << 8u);
    return vec2<u32>(high, low);
}

// CHECKSUM, one piece: FNV-1a-64 is a strict sequence (no associative combine of
// partial states), so one invocation walks the words; a long checksum is split into
// pieces that carry the state in scratch[0..2] (lo, hi).
// p0 first word, p1 words, p2 bit 0 first piece, bit 1 last piece, bit 2 the state
// before this piece is (p5 high, p4 low) (a piece the kernel handed, its state carried
// in the queue entry), p3 result word (the u64 goes to vram[p3], vram[p3 + 1],
// little-endian).
@compute @workgroup_size(1)
fn checksum() {
    var h = vec2<u32>(0xcbf29ce4u, 0x84222325u);
    if (pc.p2 & 4u) != 0u {
        h = vec2<u32>(pc.p5, pc.p4);
    } else if (pc.p2 & 1u) == 0u {
        h = vec2<u32>(scratch[1], scratch[0]);
    }
    for (var i = 0u; i < pc.p1; i++) {
        h.y ^= vram[pc.p0 + i];
        h = fnv_mul(h);
    }
    if (pc.p2 & 2u) != 0u {
        vram[pc.p3] = h.y;
        vram[pc.p3 + 1u] = h.x;
    } else {
        scratch[0] = h.y;
        scratch[1] = h.x;
    }
}

// Two multiply-adds per iteration: k <= 65536 takes at most 32768 iterations (llvmpipe
// ends any loop after 65535 iterations; see src/exec.rs, MAX_LOOP).
fn gemm_element(i: u32, j: u32) -> u32 {
    let a = pc.p0 + i * pc.p5;
    let n = pc.p4;
    var acc = 0u;
    let pairs = pc.p5 >> 1u;
    for (var q = 0u; q < pairs; q++) {
        let p = q * 2u;
        acc += vram[a + p] * vram[pc.p1 + p * n + j];
        acc += vram[a + p + 1u] * vram[pc.p1 + (p + 1u) * n + j];
    }
    if (pc.p5 & 1u) != 0u {
        let p = pc.p5 - 1u;
        acc += vram[a + p] * vram[pc.p1 + p * n + j];
    }
    return acc;
}

// GEMM when C overlaps neither A nor B: one invocation per four adjacent elements of a
// band of rows (each A word loaded once for four multiply-adds; 1.5-2x the throughput
// of one element per invocation on lavapipe). p0 A word, p1 B word, p2 C word, p3 m, p4 n,
// p5 k, p6 first row, p7 rows in the band. Dispatch
// (ceil(ceil(n / 4) / 64), rows). Columns past n are neither read nor written.
@compute @workgroup_size(64)
fn gemm(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = pc.p4;
    let j = gid.x * 4u;
    if j >= n || gid.y >= pc.p7 {
        return;
    }
    let i = pc.p6 + gid.y;
    let a = pc.p0 + i * pc.p5;
    // Column indexes clamped to the last one for the loads; the extra sums are dropped.
    let j1 = min(j + 1u, n - 1u);
    let j2 = min(j + 2u, n - 1u);
    let j3 = min(j + 3u, n - 1u);
    var acc = vec4<u32>(0u);
    // One multiply-add per column per iteration: k <= 65536 iterations would hit
    // llvmpipe's loop limit, so two rows of B per iteration.
    let pairs = pc.p5 >> 1u;
    for (var q = 0u; q < pairs; q++) {
        let p = q * 2u;
        let b0 = pc.p1 + p * n;
        let b1 = b0 + n;
        let x0 = vram[a + p];
        let x1 = vram[a + p + 1u];
        acc += x0 * vec4<u32>(vram[b0 + j], vram[b0 + j1], vram[b0 + j2], vram[b0 + j3]);
        acc += x1 * vec4<u32>(vram[b1 + j], vram[b1 + j1], vram[b1 + j2], vram[b1 + j3]);
    }
    if (pc.p5 & 1u) != 0u {
        let p = pc.p5 - 1u;
        let b0 = pc.p1 + p * n;
        acc += vram[a + p] * vec4<u32>(vram[b0 + j], vram[b0 + j1], vram[b0 + j2], vram[b0 + j3]);
    }
    let c = pc.p2 + i * n + j;
    vram[c] = acc.x;
    if j + 1u < n {
        vram[c + 1u] = acc.y;
    }
    if j + 2u < n {
        vram[c + 2u] = acc.z;
    }
    if j + 3u < n {
        vram[c + 3u] = acc.w;
    }
}

// GEMM when C overlaps A or B: the ABI computes and stores the elements one after the
// other in row-major order, so one invocation does exactly that.
// p0..p5 as for gemm4, p6 first element (row-major index), p7 elements.
@compute @workgroup_size(1)
fn gemm_serial() {
    for (var e = pc.p6; e < pc.p6 + pc.p7; e++) {
        let i = e / pc.p4;
        let j = e % pc.p4;
        vram[pc.p2 + e] = gemm_element(i, j);
    }
}

// GEMM, elements [p6, p6 + p7) of C in row-major order, one invocation each (grid-stride):
// a piece the kernel handed that does not cover whole rows, or (into scratch) one whose
// C overlaps A or B. p0, p1, p2, p4, p5 as for gemm; p3 = 0: store element e into C,
// else into scratch[e + 1 - p3] (p3 - 1 is the piece's first element: the caller
// copies scratch to C once every element of the piece is computed, as
// vgpu_engine_abi::exec::apply_piece reads all before it writes).
@compute @workgroup_size(64)
fn gemm_elems(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = nwg.x * WG;
    for (var t = gid.x; t < pc.p7; t += total) {
        let e = pc.p6 + t;
        let v = gemm_element(e / pc.p4, e % pc.p4);
        if pc.p3 == 0u {
            vram[pc.p2 + e] = v;
        } else {
            scratch[e + 1u - pc.p3] = v;
        }
    }
}
