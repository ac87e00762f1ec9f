// Whole-tensor reductions to one f32: sum (and mean via `scale`), L2 norm, max |x|, count of non-finite.
// Multi-stage: each workgroup reduces a chunk of WG * PER elements to one partial (a vec2 stored as two
// f32), later stages reduce the partials the same way, and the last stage (`finish` = 1) writes the
// result to rout[slot]. Each thread folds PER elements in blocks of BLOCK, then a tree over the workgroup: the
// summation order is near pairwise, so the rounding error grows like BLOCK + PER / BLOCK + log2(n),
// not like n. A large PER (many elements per workgroup barrier) matters on CPU adapters, where
// barriers are expensive (SwiftShader runs 5-10x faster with PER 256 than with 16).
// Partials are pairs because the L2 norm carries (m, s) with value m^2 * s, m = max |x|: squares are
// taken of x / m <= 1, so it neither overflows for |x| > 1.8e19 nor underflows for tiny x.
// OP (module constant): 0 sum, 1 l2, 2 max-abs. The count reuses OP 0 on 0/1 leaves.
// NaN and Inf propagate as in IEEE / PyTorch (l2 or max |x| of anything with a NaN is NaN, with an Inf
// and no NaN is Inf). max() and comparisons leave NaN to the implementation and compilers may assume
// no NaN/Inf, so l2 and max-abs test the bit patterns and build NaN/Inf from bits, never from x != x.

struct Reduce {
  n: u32,        // elements (stage 1) or partials (later stages)
  groups: u32,   // workgroups that hold work (the 2-D grid may launch a few more)
  finish: u32,   // 1: write the final scalar to rout[0]; 0: write partials (2 f32 per workgroup)
  scale: f32,    // sum multiplier on finish (1 / n for the mean)
  slot: u32,     // finish writes rout[slot] (many scalars into one buffer, e.g. per-weight counts)
}

@group(0) @binding(0) var<storage, read> rx: array<ST>;
@group(0) @binding(1) var<storage, read> rbits: array<u32>;
@group(0) @binding(2) var<storage, read> rpart: array<f32>;
@group(0) @binding(3) var<storage, read_write> rout: array<f32>;
@group(0) @binding(4) var<uniform> ru: Reduce;

var<workgroup> wpair: array<vec2f, WG>;

const BLOCK: u32 = 16u;

const NAN_BITS: u32 = 0x7fc00000u;
const INF_BITS: u32 = 0x7f800000u;

fn bits_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > INF_BITS;
}

fn bits_nonfinite(v: f32) -> bool {
  return (bitcast<u32>(v) & INF_BITS) == INF_BITS;
}

// Partials of l2 and max-abs hold |x| >= 0 (or NaN) in .x: NaN wins, then +Inf, else the finite path.
fn special(pa: vec2f, pb: vec2f) -> vec2f {
  let bits = select(INF_BITS, NAN_BITS, bits_nan(pa.x) || bits_nan(pb.x));
  return vec2f(bitcast<f32>(bits), 1.0);
}

// Associative combine of two partials; (0, 0) is the identity for every OP.
fn combine(pa: vec2f, pb: vec2f) -> vec2f {
  switch OP {
    case 1u: {
      if (bits_nonfinite(pa.x) || bits_nonfinite(pb.x)) { return special(pa, pb); }
      let m = max(pa.x, pb.x);
      if (m == 0.0) { return vec2f(0.0, 0.0); }
      // The equality test keeps the ratio exactly 1 for the larger side.
      let ra = select(pa.x / m, 1.0, pa.x == m);
      let rb = select(pb.x / m, 1.0, pb.x == m);
      return vec2f(m, pa.y * ra * ra + pb.y * rb * rb);
    }
    case 2u: {
      if (bits_nonfinite(pa.x) || bits_nonfinite(pb.x)) { return vec2f(special(pa, pb).x, 0.0); }
      return vec2f(max(pa.x, pb.x), 0.0);
    }
    // IEEE addition already gives NaN for NaN or Inf - Inf, Inf for Inf + finite.
    default: { return vec2f(pa.x + pb.x, 0.0); }
  }
}

// A single element as a partial.
fn leaf(xv: f32) -> vec2f {
  switch OP {
    case 1u: { return vec2f(abs(xv), 1.0); }
    case 2u: { return vec2f(abs(xv), 0.0); }
    default: { return vec2f(xv, 0.0); }
  }
}

fn finish_value(pr: vec2f) -> f32 {
  switch OP {
    case 1u: { return select(pr.x * sqrt(pr.y), pr.x, bits_nonfinite(pr.x)); }
    case 2u: { return pr.x; }
    default: { return pr.x * ru.scale; }
  }
}

// Tree-reduces one partial per thread and writes the workgroup's result (uniform control flow).
fn emit(wgi: u32, lid: u32, mine: vec2f) {
  wpair[lid] = mine;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off >>= 1u) {
    if (lid < off) { wpair[lid] = combine(wpair[lid], wpair[lid + off]); }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let res = wpair[0];
    if (ru.finish == 1u) {
      rout[ru.slot] = finish_value(res);
    } else {
      rout[2u * wgi] = res.x;
      rout[2u * wgi + 1u] = res.y;
    }
  }
}

// Thread `lid` of workgroup `wgi` owns elements wgi * WG * PER + lid + k * WG, k < PER (coalesced).
fn first_index(wgi: u32, lid: u32) -> u32 {
  return wgi * WG * PER + lid;
}

@compute @workgroup_size(WG)
fn reduce_input(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let wgi = wid.x + wid.y * nwg.x;
  if (wgi >= ru.groups) { return; }
  let i0 = first_index(wgi, lid);
  var acc = vec2f(0.0, 0.0);
  var blk = vec2f(0.0, 0.0);
  for (var k = 0u; k < PER; k++) {
    let i = i0 + k * WG;
    if (i < ru.n) { blk = combine(blk, leaf(f32(rx[i]))); }
    if ((k & (BLOCK - 1u)) == BLOCK - 1u) { acc = combine(acc, blk); blk = vec2f(0.0, 0.0); }
  }
  acc = combine(acc, blk);
  emit(wgi, lid, acc);
}

// Non-finite test on the bit pattern (exponent all ones), never on float comparisons, which
// compilers may fold under the assumption that NaN and Inf do not occur.
fn nonfinite_at(i: u32) -> bool {
  if (F16) {
    let h16 = (rbits[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
    return (h16 & 0x7c00u) == 0x7c00u;
  }
  return (rbits[i] & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(WG)
fn count_nonfinite(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let wgi = wid.x + wid.y * nwg.x;
  if (wgi >= ru.groups) { return; }
  let i0 = first_index(wgi, lid);
  var cnt = 0.0;
  for (var k = 0u; k < PER; k++) {
    let i = i0 + k * WG;
    if (i < ru.n && nonfinite_at(i)) { cnt += 1.0; }
  }
  emit(wgi, lid, vec2f(cnt, 0.0));
}

@compute @workgroup_size(WG)
fn reduce_partials(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let wgi = wid.x + wid.y * nwg.x;
  if (wgi >= ru.groups) { return; }
  let i0 = first_index(wgi, lid);
  var acc = vec2f(0.0, 0.0);
  var blk = vec2f(0.0, 0.0);
  for (var k = 0u; k < PER; k++) {
    let i = i0 + k * WG;
    if (i < ru.n) { blk = combine(blk, vec2f(rpart[2u * i], rpart[2u * i + 1u])); }
    if ((k & (BLOCK - 1u)) == BLOCK - 1u) { acc = combine(acc, blk); blk = vec2f(0.0, 0.0); }
  }
  acc = combine(acc, blk);
  emit(wgi, lid, acc);
}
