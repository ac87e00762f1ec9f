// Matrix multiply: C[b] = act(scale * A[b] B[b] + bias) (+ R[b], a residual), batched with broadcast batch dims.
// Storage type ST (f32 or f16), accumulation in f32.
//
// Work layout (all blocked variants): a workgroup of WG threads shares one block of ROWS output rows
// (16 in matmul_nn4, 8 in matmul_any), and each thread owns 8 columns of it (two groups of 4, strided by
// WG so neighbouring threads touch neighbouring columns). Every A load is then the same address for the
// whole workgroup (workgroup-uniform), which the CPU adapters turn into one scalar load and a broadcast;
// only B is gathered per thread (lavapipe runs a non-uniform load as a loop over the lanes, so these
// loads dominate there), and each gathered B value feeds ROWS FMAs. Of 4 x 4, 4 x 8, 8 x 4, 2 x 16,
// 8 x 8 and 16 x 8 (rows x columns), 16 x 8 measured best on both lavapipe and SwiftShader. The
// accumulators are named variables, not an array, in the inner loop (an array the driver fails to
// unroll would live in memory); no workgroup memory and no barriers (on CPU adapters those cost more
// than they save).
//
// A(m, k) is at tile.a + m * sam + k * sak, so every variant also serves A transposed.
// Variants, picked by the op from the shape:
//   matmul_nn4: B row-major [K, N] with N % 4 == 0: B, bias and C as vec4 along N.
//   matmul_any: any layout and size, scalar loads; B(k, n) at tile.b + k * sbk + n * sbn.
//   matmul_tiled: as matmul_nn4, through workgroup memory in 64 x 64 blocks: the GPU variant.
//   matmul_naive: one thread per output, no blocking: the benchmark baseline (row-major, no batch).
//   transpose_last2: [..., R, C] -> [..., C, R]. A transposed B ([N, K], the nn.Linear weight) is
//     transposed first: read in place, neighbouring threads would walk rows K apart (one memory
//     stream per column), which measured 2x slower on lavapipe than this extra pass plus matmul_nn4.
// Edges: loads use row/column indices clamped into range (always in bounds, no branch in the inner
// loop); the stores are guarded.

struct MatmulParams {
  M: u32,
  N: u32,
  K: u32,
  row_groups: u32,   // ceil(M / 8)
  sam: u32,          // A element strides for m and k
  sak: u32,
  sbk: u32,          // B element strides for k and n (matmul_any)
  sbn: u32,
  ny: u32,           // workgroups launched along y; (y, z) enumerate `tiles` row blocks
  tiles: u32,        // row_groups * batches
  scale: f32,
  slope: f32,        // leaky-relu slope of the fused activation
  bdims: vec4u,      // output batch dims, innermost last, padded with leading 1s
  bsa: vec4u,        // A batch strides in elements (0 where broadcast)
  bsb: vec4u,        // B batch strides in elements (0 where broadcast)
}

@group(0) @binding(0) var<storage, read> mm_a: array<AT>;
@group(0) @binding(1) var<storage, read> mm_b: array<WT>;
@group(0) @binding(2) var<storage, read> mm_b4: array<WT4>;
@group(0) @binding(3) var<storage, read> mm_bias: array<WT>;
@group(0) @binding(4) var<storage, read> mm_bias4: array<WT4>;
@group(0) @binding(5) var<storage, read_write> mm_c: array<ST>;
@group(0) @binding(6) var<storage, read_write> mm_c4: array<ST4>;
@group(0) @binding(7) var<uniform> mm_p: MatmulParams;
// The residual added after the activation (HAS_RES): same layout as C.
@group(0) @binding(14) var<storage, read> mm_r: array<ST>;
@group(0) @binding(15) var<storage, read> mm_r4: array<ST4>;


// Where one workgroup's tile starts: element offsets of its batch in A, B and C, and its first row.
struct Tile {
  a: u32,
  b: u32,
  c: u32,
  r0: u32,
}

// Tile t = row block + batch; the last z layer of the launch may hold t >= tiles (caller returns).
fn tile_of(t: u32) -> Tile {
  var batch = t / mm_p.row_groups;
  let rg = t - batch * mm_p.row_groups;
  var tl = Tile(0u, 0u, batch * mm_p.M * mm_p.N, rg * ROWS);
  for (var d = 3i; d >= 0i; d--) {
    let extent = mm_p.bdims[d];
    let i = batch % extent;
    batch = batch / extent;
    tl.a += i * mm_p.bsa[d];
    tl.b += i * mm_p.bsb[d];
  }
  return tl;
}

// Offset in A of row r0 + i, clamped to the last row.
fn a_row(tl: Tile, i: u32) -> u32 {
  return tl.a + min(tl.r0 + i, mm_p.M - 1u) * mm_p.sam;
}

fn epilogue(v: f32, n: u32) -> f32 {
  var y = v * mm_p.scale;
  if (HAS_BIAS) { y += f32(mm_bias[n]); }
  return activate(ACT, y, mm_p.slope);
}

fn epilogue4(v: vec4f, n4: u32) -> vec4f {
  var y = v * mm_p.scale;
  if (HAS_BIAS) { y += vec4f(mm_bias4[n4]); }
  return vec4f(activate(ACT, y.x, mm_p.slope), activate(ACT, y.y, mm_p.slope),
               activate(ACT, y.z, mm_p.slope), activate(ACT, y.w, mm_p.slope));
}

// Row i (< M) of a tile: 4 scalar columns.
fn store_cols(tl: Tile, i: u32, cols: vec4u, v: vec4f) {
  let base = tl.c + (tl.r0 + i) * mm_p.N;
  for (var j = 0u; j < 4u; j++) {
    if (cols[j] < mm_p.N) {
      var y = epilogue(v[j], cols[j]);
      if (HAS_RES) { y += f32(mm_r[base + cols[j]]); }
      mm_c[base + cols[j]] = ST(y);
    }
  }
}

// Row i (< M) of a tile: vec4 column c4.
fn store_vec4(tl: Tile, i: u32, c4: u32, v: vec4f) {
  let n4 = mm_p.N / 4u;
  if (c4 < n4) {
    let at = tl.c / 4u + (tl.r0 + i) * n4 + c4;
    var y = epilogue4(v, c4);
    if (HAS_RES) { y += vec4f(mm_r4[at]); }
    mm_c4[at] = ST4(y);
  }
}

@compute @workgroup_size(WG)
fn matmul_nn4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let t = wid.y + wid.z * mm_p.ny;
  if (t >= mm_p.tiles) { return; }
  let tl = tile_of(t);
  let a0 = a_row(tl, 0u); let a1 = a_row(tl, 1u); let a2 = a_row(tl, 2u); let a3 = a_row(tl, 3u);
  let a4 = a_row(tl, 4u); let a5 = a_row(tl, 5u); let a6 = a_row(tl, 6u); let a7 = a_row(tl, 7u);
  let a8 = a_row(tl, 8u); let a9 = a_row(tl, 9u); let a10 = a_row(tl, 10u); let a11 = a_row(tl, 11u);
  let a12 = a_row(tl, 12u); let a13 = a_row(tl, 13u); let a14 = a_row(tl, 14u); let a15 = a_row(tl, 15u);
  let sak = mm_p.sak;
  let n4 = mm_p.N / 4u;
  // Two vec4 columns per thread, WG apart.
  let c0 = wid.x * (2u * WG) + lid.x;
  let c1 = c0 + WG;
  let b0 = tl.b / 4u + min(c0, n4 - 1u);
  let b1 = tl.b / 4u + min(c1, n4 - 1u);
  var s0 = mat2x4f(); var s1 = mat2x4f(); var s2 = mat2x4f(); var s3 = mat2x4f();
  var s4 = mat2x4f(); var s5 = mat2x4f(); var s6 = mat2x4f(); var s7 = mat2x4f();
  var s8 = mat2x4f(); var s9 = mat2x4f(); var s10 = mat2x4f(); var s11 = mat2x4f();
  var s12 = mat2x4f(); var s13 = mat2x4f(); var s14 = mat2x4f(); var s15 = mat2x4f();
  for (var k = 0u; k < mm_p.K; k++) {
    let x = mat2x4f(vec4f(mm_b4[b0 + k * n4]), vec4f(mm_b4[b1 + k * n4]));
    let ka = k * sak;
    s0 += f32(mm_a[a0 + ka]) * x;
    s1 += f32(mm_a[a1 + ka]) * x;
    s2 += f32(mm_a[a2 + ka]) * x;
    s3 += f32(mm_a[a3 + ka]) * x;
    s4 += f32(mm_a[a4 + ka]) * x;
    s5 += f32(mm_a[a5 + ka]) * x;
    s6 += f32(mm_a[a6 + ka]) * x;
    s7 += f32(mm_a[a7 + ka]) * x;
    if (ROWS == 16u) {
      s8 += f32(mm_a[a8 + ka]) * x;
      s9 += f32(mm_a[a9 + ka]) * x;
      s10 += f32(mm_a[a10 + ka]) * x;
      s11 += f32(mm_a[a11 + ka]) * x;
      s12 += f32(mm_a[a12 + ka]) * x;
      s13 += f32(mm_a[a13 + ka]) * x;
      s14 += f32(mm_a[a14 + ka]) * x;
      s15 += f32(mm_a[a15 + ka]) * x;
    }
  }
  // A rolled store loop over (row inside M, column group); its bound is not a constant, so it stays
  // rolled: one copy of the epilogue and its activation instead of sixteen keeps compiles short.
  var res = array<mat2x4f, 16>(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15);
  for (var q = 0u; q < 2u * min(ROWS, mm_p.M - tl.r0); q++) {
    store_vec4(tl, q / 2u, select(c0, c1, (q & 1u) == 1u), res[q / 2u][q & 1u]);
  }
}

@compute @workgroup_size(WG)
fn matmul_any(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let t = wid.y + wid.z * mm_p.ny;
  if (t >= mm_p.tiles) { return; }
  let tl = tile_of(t);
  let a0 = a_row(tl, 0u); let a1 = a_row(tl, 1u); let a2 = a_row(tl, 2u); let a3 = a_row(tl, 3u);
  let a4 = a_row(tl, 4u); let a5 = a_row(tl, 5u); let a6 = a_row(tl, 6u); let a7 = a_row(tl, 7u);
  let sak = mm_p.sak;
  let sbk = mm_p.sbk;
  let lo = wid.x * (8u * WG) + lid.x + vec4u(0u, 1u, 2u, 3u) * WG;
  let hi = lo + 4u * WG;
  let last = vec4u(mm_p.N - 1u);
  let bl = tl.b + min(lo, last) * mm_p.sbn;
  let bh = tl.b + min(hi, last) * mm_p.sbn;
  var s0 = mat2x4f(); var s1 = mat2x4f(); var s2 = mat2x4f(); var s3 = mat2x4f();
  var s4 = mat2x4f(); var s5 = mat2x4f(); var s6 = mat2x4f(); var s7 = mat2x4f();
  for (var k = 0u; k < mm_p.K; k++) {
    let kb = k * sbk;
    let x = mat2x4f(
      vec4f(f32(mm_b[bl.x + kb]), f32(mm_b[bl.y + kb]), f32(mm_b[bl.z + kb]), f32(mm_b[bl.w + kb])),
      vec4f(f32(mm_b[bh.x + kb]), f32(mm_b[bh.y + kb]), f32(mm_b[bh.z + kb]), f32(mm_b[bh.w + kb])));
    let ka = k * sak;
    s0 += f32(mm_a[a0 + ka]) * x;
    s1 += f32(mm_a[a1 + ka]) * x;
    s2 += f32(mm_a[a2 + ka]) * x;
    s3 += f32(mm_a[a3 + ka]) * x;
    s4 += f32(mm_a[a4 + ka]) * x;
    s5 += f32(mm_a[a5 + ka]) * x;
    s6 += f32(mm_a[a6 + ka]) * x;
    s7 += f32(mm_a[a7 + ka]) * x;
  }
  var res = array<mat2x4f, 8>(s0, s1, s2, s3, s4, s5, s6, s7);
  for (var q = 0u; q < 2u * min(ROWS, mm_p.M - tl.r0); q++) {
    store_cols(tl, q / 2u, select(lo, hi, (q & 1u) == 1u), res[q / 2u][q & 1u]);
  }
}

// matmul_tiled: the GPU variant (N % 4 == 0; B row-major as vec4s, or in any layout when B_VEC4 is false,
// so a transposed B needs no copy). A 16 x 16 workgroup computes a 64 x 64 block
// of C (ROWS = 64 rows, 64 columns), each thread a 4 x 4 sub-block (rows 4 ty.., vec4 column tx). K is
// walked in slabs of 16: the block's A slab (64 x 16, stored k-major) and B slab (16 x 64, as vec4s)
// are staged in workgroup memory by all 256 threads (4 A values and one B vec4 each), so every value
// read from storage feeds 64 FMAs; out-of-range rows repeat the last row (clamped, never stored) and
// out-of-range k or columns load zeros. What GPUs want (shared tiles, coalesced vec4 loads); the CPU
// adapters prefer matmul_nn4 (barriers cost them more than the reuse saves).
const TILE_K: u32 = 16u;
var<workgroup> tile_a: array<vec4f, 256>;   // [k][m / 4]: A(r0 + m, k0 + k) at [k * 16 + m / 4][m % 4]
var<workgroup> tile_b: array<vec4f, 256>;   // [k][c4]: B(k0 + k, 64 wid.x + 4 c4 ..)

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let t = wid.y + wid.z * mm_p.ny;
  // Uniform per workgroup, so the barriers below stay in uniform control flow.
  if (t >= mm_p.tiles) { return; }
  let tl = tile_of(t);
  let n4 = mm_p.N / 4u;
  let li = lid.y * 16u + lid.x;
  // This thread's loads: A rows 4 (li % 16) .. +3 at slab column li / 16; B slab row li / 16, vec4 li % 16.
  let am = (li % 16u) * 4u;
  let ak = li / 16u;
  let ar = vec4u(a_row(tl, am), a_row(tl, am + 1u), a_row(tl, am + 2u), a_row(tl, am + 3u));
  let bc4 = wid.x * 16u + li % 16u;
  let bcol = tl.b / 4u + min(bc4, n4 - 1u);
  // B in any layout (B_VEC4 false: nn.Linear's [N, K] weight read in place, no transposed copy):
  // four scalar loads at B(k, 4 bc4 + j) = tl.b + k * sbk + n * sbn.
  let bn = tl.b + min(vec4u(bc4 * 4u) + vec4u(0u, 1u, 2u, 3u), vec4u(mm_p.N - 1u)) * mm_p.sbn;
  var acc0 = vec4f(); var acc1 = vec4f(); var acc2 = vec4f(); var acc3 = vec4f();
  for (var k0 = 0u; k0 < mm_p.K; k0 += TILE_K) {
    let k = k0 + ak;
    let kin = k < mm_p.K;
    let kc = min(k, mm_p.K - 1u) * mm_p.sak;
    let av = vec4f(f32(mm_a[ar.x + kc]), f32(mm_a[ar.y + kc]), f32(mm_a[ar.z + kc]), f32(mm_a[ar.w + kc]));
    tile_a[ak * 16u + li % 16u] = select(vec4f(), av, kin);
    var bv: vec4f;
    if (B_VEC4) {
      bv = vec4f(mm_b4[bcol + min(k, mm_p.K - 1u) * n4]);
    } else {
      let kb = min(k, mm_p.K - 1u) * mm_p.sbk;
      bv = vec4f(f32(mm_b[bn.x + kb]), f32(mm_b[bn.y + kb]), f32(mm_b[bn.z + kb]), f32(mm_b[bn.w + kb]));
    }
    tile_b[ak * 16u + li % 16u] = select(vec4f(), bv, kin && bc4 < n4);
    workgroupBarrier();
    for (var kk = 0u; kk < TILE_K; kk++) {
      let a = tile_a[kk * 16u + lid.y];
      let b = tile_b[kk * 16u + lid.x];
      acc0 += a.x * b;
      acc1 += a.y * b;
      acc2 += a.z * b;
      acc3 += a.w * b;
    }
    workgroupBarrier();
  }
  let c4 = wid.x * 16u + lid.x;
  let r = lid.y * 4u;
  var res = array<vec4f, 4>(acc0, acc1, acc2, acc3);
  for (var i = 0u; i < 4u; i++) {
    if (tl.r0 + r + i < mm_p.M) { store_vec4(tl, r + i, c4, res[i]); }
  }
}

struct TransposeParams {
  rows: u32,
  cols: u32,
  row_len: u32,      // threads per grid row along y (= workgroups.y * 8)
  total: u32,        // cols * batches
}

@group(0) @binding(8) var<storage, read> tp_in: array<ST>;
@group(0) @binding(9) var<storage, read_write> tp_out: array<ST>;
@group(0) @binding(10) var<uniform> tp_p: TransposeParams;

// x runs along r (contiguous in the output); (y, z) enumerate (batch, c).
@compute @workgroup_size(8, 8)
fn transpose_last2(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x;
  let q = gid.y + gid.z * tp_p.row_len;
  if (r >= tp_p.rows || q >= tp_p.total) { return; }
  let batch = q / tp_p.cols;
  let c = q - batch * tp_p.cols;
  let base = batch * tp_p.rows * tp_p.cols;
  tp_out[base + c * tp_p.rows + r] = tp_in[base + r * tp_p.cols + c];
}

// transpose_last2 in 4x4 blocks (R and C multiples of 4): a thread reads four vec4 rows and writes four
// vec4 columns, so every load and store is a vector and neighbouring threads write neighbouring vec4s.
// The one-element-per-thread kernel above ran at 0.27 GB/s on lavapipe for SD's feed-forward weights.
@group(0) @binding(11) var<storage, read> tq_in: array<ST4>;
@group(0) @binding(12) var<storage, read_write> tq_out: array<ST4>;
@group(0) @binding(13) var<uniform> tq_p: TransposeParams;

// x runs along blocks of 4 rows; (y, z) enumerate (batch, block of 4 columns).
@compute @workgroup_size(8, 8)
fn transpose_last2_4(@builtin(global_invocation_id) gid: vec3u) {
  let rb = gid.x;
  let q = gid.y + gid.z * tq_p.row_len;
  let c4 = tq_p.cols / 4u;
  let r4 = tq_p.rows / 4u;
  if (rb >= r4 || q >= tq_p.total) { return; }
  let batch = q / c4;
  let cb = q - batch * c4;
  let base = batch * tq_p.rows * c4; // in vec4s, the same for input and output
  let at = base + 4u * rb * c4 + cb;
  let v0 = tq_in[at];
  let v1 = tq_in[at + c4];
  let v2 = tq_in[at + 2u * c4];
  let v3 = tq_in[at + 3u * c4];
  let o = base + 4u * cb * r4 + rb;
  tq_out[o] = ST4(v0.x, v1.x, v2.x, v3.x);
  tq_out[o + r4] = ST4(v0.y, v1.y, v2.y, v3.y);
  tq_out[o + 2u * r4] = ST4(v0.z, v1.z, v2.z, v3.z);
  tq_out[o + 3u * r4] = ST4(v0.w, v1.w, v2.w, v3.w);
}

// The baseline: one output per thread on an 8x8 workgroup, x along N and y along M.
@compute @workgroup_size(8, 8)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let m = gid.y;
  if (m >= mm_p.M || n >= mm_p.N) { return; }
  var sum = 0.0;
  for (var k = 0u; k < mm_p.K; k++) {
    sum += f32(mm_a[m * mm_p.K + k]) * f32(mm_b[k * mm_p.N + n]);
  }
  mm_c[m * mm_p.N + n] = ST(sum);
}
