// Normalisation over rows: GroupNorm (a row = one (batch, group): C/groups channels x spatial, which
// are contiguous in [N, C, ...]) and LayerNorm (a row = the trailing normalised dims).
//   norm_stats:   one workgroup per (row, chunk). Two passes over the chunk: the mean, then the sum of
//                 squared deviations (no E[x^2] - E[x]^2 cancellation). With one chunk per row it
//                 writes (mean, 1/sqrt(var + eps)) directly; otherwise (mean, M2) per chunk.
//   norm_stats_row: the same two passes with one thread per row and no barriers (short rows, and
//                 CPU adapters with many rows, where barriers cost more than they parallelise).
//   norm_combine: one thread per row merges the chunks' (count, mean, M2) with Chan's pairwise formula,
//                 so long rows with few of them (the VAE at 512x512, LayerNorm([C, 64, 64])) still
//                 spread over many workgroups.
//   norm_apply:   elementwise (x - mean) * rstd * w + b, then the fused activation ACT.
// Statistics are f32 whatever the storage type; variance is biased (divide by the row length).

struct NormStats {
  rows: u32,
  len: u32,      // elements per row
  chunk: u32,    // elements per chunk (the last chunk of a row may be shorter)
  chunks: u32,   // chunks per row
  eps: f32,
}

@group(0) @binding(0) var<storage, read> nx: array<ST>;
@group(0) @binding(1) var<storage, read_write> nmom: array<f32>;
@group(0) @binding(2) var<uniform> ns: NormStats;

// wg_sum and `struct Lane` come from the lane include (lane_tree.wgsl or lane_subgroup.wgsl).

// Per-thread partial sums are flushed every BLOCK terms so a long strided run does not accumulate
// rounding error linearly.
const BLOCK: u32 = 64u;

@compute @workgroup_size(WG)
fn norm_stats(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              lane: Lane) {
  let job = wid.x + wid.y * nwg.x;
  if (job >= ns.rows * ns.chunks) { return; }
  let row = job / ns.chunks;
  let start = (job % ns.chunks) * ns.chunk;
  let cnt = min(ns.chunk, ns.len - start);
  let base = row * ns.len + start;

  var total = 0.0;
  var part = 0.0;
  var terms = 0u;
  for (var i = lane.lid; i < cnt; i += WG) {
    part += f32(nx[base + i]);
    terms++;
    if (terms == BLOCK) { total += part; part = 0.0; terms = 0u; }
  }
  let mu = wg_sum(lane, total + part) / f32(cnt);

  total = 0.0;
  part = 0.0;
  terms = 0u;
  for (var i = lane.lid; i < cnt; i += WG) {
    let d = f32(nx[base + i]) - mu;
    part += d * d;
    terms++;
    if (terms == BLOCK) { total += part; part = 0.0; terms = 0u; }
  }
  let m2 = wg_sum(lane, total + part);

  if (lane.lid == 0u) {
    if (ns.chunks == 1u) {
      nmom[2u * row] = mu;
      nmom[2u * row + 1u] = inverseSqrt(m2 / f32(cnt) + ns.eps);
    } else {
      nmom[2u * job] = mu;
      nmom[2u * job + 1u] = m2;
    }
  }
}

// One thread per (row, chunk). The chunk is short enough (a few KiB per thread) that the second pass
// (squared deviations) reads it back from cache: one read of the activation from memory, and the same
// two-pass numerics as norm_stats. Writes (mean, rstd) when a row is one chunk, else (mean, M2).
@compute @workgroup_size(WG)
fn norm_stats_chunk(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let job = gid.x + gid.y * nwg.x * WG;
  if (job >= ns.rows * ns.chunks) { return; }
  let row = job / ns.chunks;
  let start = (job % ns.chunks) * ns.chunk;
  let cnt = min(ns.chunk, ns.len - start);
  let base = row * ns.len + start;
  var total = 0.0;
  var part = 0.0;
  for (var i = 0u; i < cnt; i++) {
    part += f32(nx[base + i]);
    if ((i & (BLOCK - 1u)) == BLOCK - 1u) { total += part; part = 0.0; }
  }
  let mu = (total + part) / f32(cnt);
  total = 0.0;
  part = 0.0;
  for (var i = 0u; i < cnt; i++) {
    let d = f32(nx[base + i]) - mu;
    part += d * d;
    if ((i & (BLOCK - 1u)) == BLOCK - 1u) { total += part; part = 0.0; }
  }
  let m2 = total + part;
  if (ns.chunks == 1u) {
    nmom[2u * row] = mu;
    nmom[2u * row + 1u] = inverseSqrt(m2 / f32(cnt) + ns.eps);
  } else {
    nmom[2u * job] = mu;
    nmom[2u * job + 1u] = m2;
  }
}

// norm_stats_chunk on vec4s (rows and chunks a multiple of 4 long): a quarter of the loads and loop trips.
@group(0) @binding(41) var<storage, read> nx4: array<vec4<ST>>;
@group(0) @binding(42) var<storage, read_write> nmom4: array<f32>;
@group(0) @binding(43) var<uniform> ns4: NormStats;

@compute @workgroup_size(WG)
fn norm_stats_chunk4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let job = gid.x + gid.y * nwg.x * WG;
  if (job >= ns4.rows * ns4.chunks) { return; }
  let row = job / ns4.chunks;
  let start = (job % ns4.chunks) * ns4.chunk;
  let cnt = min(ns4.chunk, ns4.len - start);
  let base = (row * ns4.len + start) / 4u;
  let cnt4 = cnt / 4u;
  var total = vec4f(0.0);
  var part = vec4f(0.0);
  for (var i = 0u; i < cnt4; i++) {
    part += vec4f(nx4[base + i]);
    if ((i & (BLOCK / 4u - 1u)) == BLOCK / 4u - 1u) { total += part; part = vec4f(0.0); }
  }
  total += part;
  let mu = (total.x + total.y + total.z + total.w) / f32(cnt);
  total = vec4f(0.0);
  part = vec4f(0.0);
  for (var i = 0u; i < cnt4; i++) {
    let d = vec4f(nx4[base + i]) - mu;
    part += d * d;
    if ((i & (BLOCK / 4u - 1u)) == BLOCK / 4u - 1u) { total += part; part = vec4f(0.0); }
  }
  total += part;
  let m2 = total.x + total.y + total.z + total.w;
  if (ns4.chunks == 1u) {
    nmom4[2u * row] = mu;
    nmom4[2u * row + 1u] = inverseSqrt(m2 / f32(cnt) + ns4.eps);
  } else {
    nmom4[2u * job] = mu;
    nmom4[2u * job + 1u] = m2;
  }
}

@group(0) @binding(3) var<storage, read> cmom: array<f32>;
@group(0) @binding(4) var<storage, read_write> cstats: array<f32>;
@group(0) @binding(5) var<uniform> cs: NormStats;

@compute @workgroup_size(64)
fn norm_combine(@builtin(global_invocation_id) gid: vec3u) {
  let row = gid.x;
  if (row >= cs.rows) { return; }
  var cnt = 0.0;
  var mu = 0.0;
  var m2 = 0.0;
  for (var k = 0u; k < cs.chunks; k++) {
    let nb = f32(min(cs.chunk, cs.len - k * cs.chunk));
    let at = 2u * (row * cs.chunks + k);
    let delta = cmom[at] - mu;
    let tot = cnt + nb;
    mu += delta * (nb / tot);
    m2 += cmom[at + 1u] + delta * delta * (cnt * (nb / tot));
    cnt = tot;
  }
  cstats[2u * row] = mu;
  cstats[2u * row + 1u] = inverseSqrt(m2 / cnt + cs.eps);
}

struct NormApply {
  n: u32,
  row: u32,      // threads per grid row
  len: u32,      // elements per normalised row
  adiv: u32,     // affine index = (i / adiv) % amod: GroupNorm (S, C), LayerNorm (1, len)
  amod: u32,
}

@group(0) @binding(6) var<storage, read> ax: array<ST>;
@group(0) @binding(7) var<storage, read> astats: array<f32>;
@group(0) @binding(8) var<storage, read> aw: array<WT>;
@group(0) @binding(9) var<storage, read> ab: array<WT>;
@group(0) @binding(10) var<storage, read_write> aout: array<ST>;
@group(0) @binding(11) var<uniform> na: NormApply;

@compute @workgroup_size(WG)
fn norm_apply(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * na.row;
  if (i >= na.n) { return; }
  let r = i / na.len;
  let ai = (i / na.adiv) % na.amod;
  var y = (f32(ax[i]) - astats[2u * r]) * astats[2u * r + 1u];
  if (HAS_W) { y *= f32(aw[ai]); }
  if (HAS_B) { y += f32(ab[ai]); }
  aout[i] = ST(activate(ACT, y, 0.0));
}

// norm_apply over segments: runs of a row that share one affine index (GroupNorm: a channel's plane,
// AFF_SHARED) or a whole row whose elements index the affine parameters (LayerNorm), in vec4s. The
// segment comes from the workgroup id, so the row and affine index cost one division per workgroup
// instead of three per element (integer division is scalarised on CPU adapters and dominated
// norm_apply there); x may split a long segment over several workgroups of `span` vec4s each.
override AFF_SHARED: bool = true;

struct NormSeg {
  segs: u32,
  seg4: u32,     // vec4s per segment
  span: u32,     // vec4s per workgroup along a segment
  per_wg: u32,   // whole segments per workgroup (short segments; then span >= seg4)
  per_row: u32,  // segments per normalised row
  amod: u32,     // affine parameters (AFF_SHARED: index = segment % amod)
}

@group(0) @binding(35) var<storage, read> vx: array<vec4<ST>>;
@group(0) @binding(36) var<storage, read> vstats: array<f32>;
@group(0) @binding(37) var<storage, read> vw: array<WT>;
@group(0) @binding(38) var<storage, read> vb: array<WT>;
@group(0) @binding(39) var<storage, read_write> vout: array<vec4<ST>>;
@group(0) @binding(40) var<uniform> nv: NormSeg;

fn vparam4(w: bool, at: u32) -> vec4f {
  if (w) { return vec4f(f32(vw[at]), f32(vw[at + 1u]), f32(vw[at + 2u]), f32(vw[at + 3u])); }
  return vec4f(f32(vb[at]), f32(vb[at + 1u]), f32(vb[at + 2u]), f32(vb[at + 3u]));
}

@compute @workgroup_size(WG)
fn norm_apply_seg(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let first = (wid.y + wid.z * nwg.y) * nv.per_wg;
  let start = wid.x * nv.span;
  let end = min(start + nv.span, nv.seg4);
  for (var s = first; s < min(first + nv.per_wg, nv.segs); s++) {
    let r = s / nv.per_row;
    let mu = vstats[2u * r];
    let rs = vstats[2u * r + 1u];
    var ws = 1.0;
    var bs = 0.0;
    if (AFF_SHARED) {
      let a = s % nv.amod;
      if (HAS_W) { ws = f32(vw[a]); }
      if (HAS_B) { bs = f32(vb[a]); }
    }
    for (var v = start + lid; v < end; v += WG) {
      let j = s * nv.seg4 + v;
      var y = (vec4f(vx[j]) - mu) * rs;
      if (AFF_SHARED) {
        y = y * ws + bs;
      } else {
        if (HAS_W) { y *= vparam4(true, 4u * v); }
        if (HAS_B) { y += vparam4(false, 4u * v); }
      }
      vout[j] = vec4<ST>(vec4f(activate(ACT, y.x, 0.0), activate(ACT, y.y, 0.0), activate(ACT, y.z, 0.0), activate(ACT, y.w, 0.0)));
    }
  }
}

// ---- Statistics and apply in one dispatch (rows that are one chunk) ----
// A short row's statistics and its normalisation need not be two dispatches: the row is still in cache
// when it is applied. Each keeps its two-pass entry's summation order exactly (norm_stats with the same
// WG; norm_stats_chunk4), so results are bit-identical to stats + apply, and it writes the statistics too
// (the backward ops reuse them).
//   norm_fused:      one workgroup per row (GPUs), any affine layout.
//   norm_fused_row4: one thread per row of whole vec4s with element-wise affine (LayerNorm on CPU
//                    adapters, where barriers cost more than a row's parallelism gains).

struct NormFused {
  rows: u32,
  len: u32,
  adiv: u32,
  amod: u32,
  eps: f32,
}

@group(0) @binding(44) var<storage, read> fx: array<ST>;
@group(0) @binding(45) var<storage, read_write> fstats: array<f32>;
@group(0) @binding(46) var<storage, read> fw: array<WT>;
@group(0) @binding(47) var<storage, read> fb: array<WT>;
@group(0) @binding(48) var<storage, read_write> fout: array<ST>;
@group(0) @binding(49) var<uniform> nf: NormFused;

@compute @workgroup_size(WG)
fn norm_fused(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              lane: Lane) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= nf.rows) { return; } // uniform per workgroup: the barriers below stay in uniform control flow
  let base = row * nf.len;
  var total = 0.0;
  var part = 0.0;
  var terms = 0u;
  for (var i = lane.lid; i < nf.len; i += WG) {
    part += f32(fx[base + i]);
    terms++;
    if (terms == BLOCK) { total += part; part = 0.0; terms = 0u; }
  }
  let mu = wg_sum(lane, total + part) / f32(nf.len);
  total = 0.0;
  part = 0.0;
  terms = 0u;
  for (var i = lane.lid; i < nf.len; i += WG) {
    let d = f32(fx[base + i]) - mu;
    part += d * d;
    terms++;
    if (terms == BLOCK) { total += part; part = 0.0; terms = 0u; }
  }
  let rs = inverseSqrt(wg_sum(lane, total + part) / f32(nf.len) + nf.eps);
  if (lane.lid == 0u) {
    fstats[2u * row] = mu;
    fstats[2u * row + 1u] = rs;
  }
  for (var k = lane.lid; k < nf.len; k += WG) {
    let i = base + k;
    let ai = (i / nf.adiv) % nf.amod;
    var y = (f32(fx[i]) - mu) * rs;
    if (HAS_W) { y *= f32(fw[ai]); }
    if (HAS_B) { y += f32(fb[ai]); }
    fout[i] = ST(activate(ACT, y, 0.0));
  }
}

@group(0) @binding(50) var<storage, read> rx4: array<vec4<ST>>;
@group(0) @binding(51) var<storage, read_write> rstats4: array<f32>;
@group(0) @binding(52) var<storage, read> rw4: array<WT>;
@group(0) @binding(53) var<storage, read> rb4: array<WT>;
@group(0) @binding(54) var<storage, read_write> rout4: array<vec4<ST>>;
@group(0) @binding(55) var<uniform> nr4: NormFused;

fn rparam4(w: bool, at: u32) -> vec4f {
  if (w) { return vec4f(f32(rw4[at]), f32(rw4[at + 1u]), f32(rw4[at + 2u]), f32(rw4[at + 3u])); }
  return vec4f(f32(rb4[at]), f32(rb4[at + 1u]), f32(rb4[at + 2u]), f32(rb4[at + 3u]));
}

@compute @workgroup_size(WG)
fn norm_fused_row4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * WG;
  if (row >= nr4.rows) { return; }
  let cnt4 = nr4.len / 4u;
  let base = row * cnt4;
  var total = vec4f(0.0);
  var part = vec4f(0.0);
  for (var i = 0u; i < cnt4; i++) {
    part += vec4f(rx4[base + i]);
    if ((i & (BLOCK / 4u - 1u)) == BLOCK / 4u - 1u) { total += part; part = vec4f(0.0); }
  }
  total += part;
  let mu = (total.x + total.y + total.z + total.w) / f32(nr4.len);
  total = vec4f(0.0);
  part = vec4f(0.0);
  for (var i = 0u; i < cnt4; i++) {
    let d = vec4f(rx4[base + i]) - mu;
    part += d * d;
    if ((i & (BLOCK / 4u - 1u)) == BLOCK / 4u - 1u) { total += part; part = vec4f(0.0); }
  }
  total += part;
  let rs = inverseSqrt((total.x + total.y + total.z + total.w) / f32(nr4.len) + nr4.eps);
  rstats4[2u * row] = mu;
  rstats4[2u * row + 1u] = rs;
  for (var i = 0u; i < cnt4; i++) {
    var y = (vec4f(rx4[base + i]) - mu) * rs;
    if (HAS_W) { y *= rparam4(true, 4u * i); }
    if (HAS_B) { y += rparam4(false, 4u * i); }
    rout4[base + i] = vec4<ST>(vec4f(activate(ACT, y.x, 0.0), activate(ACT, y.y, 0.0), activate(ACT, y.z, 0.0), activate(ACT, y.w, 0.0)));
  }
}

// ---- Backward (f32 storage only) ----
// Forward per element: y = (x - mean) * rstd, z = y * w + b, out = act(z). With gz = gradOut * act'(z)
// and gy = gz * w, the row's input gradient is dx = rstd * (gy - mean(gy) - y * mean(gy * y)).
//   norm_bw_rows:  one workgroup per row: (sum gy, sum gy * y).
//   norm_bw_dx:    elementwise dx from those sums.
//   norm_bw_param: one thread per affine index: dWeight = sum gz * y, dBias = sum gz over the elements
//                  that share it (GroupNorm: batch x spatial; LayerNorm: the rows).
// Only SiLU (or none) is fused in the forward, so only its derivative is needed here.

struct NormBw {
  n: u32,        // elements
  row: u32,      // threads per grid row (norm_bw_dx)
  rows: u32,
  len: u32,
  adiv: u32,
  amod: u32,
  outer: u32,    // n / (amod * adiv): repeats of the affine pattern
}

fn norm_act_grad(v: f32) -> f32 {
  if (ACT == 2u) { return sigmoid_f32(v) * (1.0 + v * sigmoid_f32(-v)); }
  return 1.0;
}

// (y, gz, gy) of one element from its input, incoming gradient, row stats and affine parameters.
fn norm_bw_terms(xv: f32, gv: f32, mu: f32, rstd: f32, wv: f32, bv: f32) -> vec3f {
  let y = (xv - mu) * rstd;
  var wt = 1.0;
  if (HAS_W) { wt = wv; }
  var z = y * wt;
  if (HAS_B) { z += bv; }
  let gz = gv * norm_act_grad(z);
  return vec3f(y, gz, gz * wt);
}

@group(0) @binding(12) var<storage, read> brx: array<ST>;
@group(0) @binding(13) var<storage, read> brg: array<ST>;
@group(0) @binding(14) var<storage, read> brstats: array<f32>;
@group(0) @binding(15) var<storage, read> brw: array<WT>;
@group(0) @binding(16) var<storage, read> brb: array<WT>;
@group(0) @binding(17) var<storage, read_write> brsum: array<f32>;
@group(0) @binding(18) var<uniform> nbr: NormBw;

@compute @workgroup_size(WG)
fn norm_bw_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                lane: Lane) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= nbr.rows) { return; } // uniform per workgroup: the barriers below stay in uniform control flow
  let base = r * nbr.len;
  let mu = brstats[2u * r];
  let rstd = brstats[2u * r + 1u];
  var tot = vec2f(0.0);
  var part = vec2f(0.0);
  var terms = 0u;
  for (var k = lane.lid; k < nbr.len; k += WG) {
    let i = base + k;
    let ai = (i / nbr.adiv) % nbr.amod;
    var wv = 1.0;
    var bv = 0.0;
    if (HAS_W) { wv = f32(brw[ai]); }
    if (HAS_B) { bv = f32(brb[ai]); }
    let t = norm_bw_terms(f32(brx[i]), f32(brg[i]), mu, rstd, wv, bv);
    part += vec2f(t.z, t.z * t.x);
    terms++;
    if (terms == BLOCK) { tot += part; part = vec2f(0.0); terms = 0u; }
  }
  let s1 = wg_sum(lane, tot.x + part.x);
  let s2 = wg_sum(lane, tot.y + part.y);
  if (lane.lid == 0u) {
    brsum[2u * r] = s1;
    brsum[2u * r + 1u] = s2;
  }
}

@group(0) @binding(19) var<storage, read> bdx_x: array<ST>;
@group(0) @binding(20) var<storage, read> bdx_g: array<ST>;
@group(0) @binding(21) var<storage, read> bdx_stats: array<f32>;
@group(0) @binding(22) var<storage, read> bdx_w: array<WT>;
@group(0) @binding(23) var<storage, read> bdx_b: array<WT>;
@group(0) @binding(24) var<storage, read> bdx_sums: array<f32>;
@group(0) @binding(25) var<storage, read_write> bdx_out: array<ST>;
@group(0) @binding(26) var<uniform> nbd: NormBw;

@compute @workgroup_size(WG)
fn norm_bw_dx(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * nbd.row;
  if (i >= nbd.n) { return; }
  let r = i / nbd.len;
  let ai = (i / nbd.adiv) % nbd.amod;
  var wv = 1.0;
  var bv = 0.0;
  if (HAS_W) { wv = f32(bdx_w[ai]); }
  if (HAS_B) { bv = f32(bdx_b[ai]); }
  let rstd = bdx_stats[2u * r + 1u];
  let t = norm_bw_terms(f32(bdx_x[i]), f32(bdx_g[i]), bdx_stats[2u * r], rstd, wv, bv);
  let inv = 1.0 / f32(nbd.len);
  bdx_out[i] = ST(rstd * (t.z - bdx_sums[2u * r] * inv - t.x * bdx_sums[2u * r + 1u] * inv));
}

// norm_bw_rows and norm_bw_dx in one dispatch (rows short enough for one workgroup each, and CPU
// adapters): the same sums in the same order, then the row's dx, plus `res` when HAS_RES (a VJP's
// residual gradient, added here instead of by its own dispatch).
override HAS_RES: bool = false;

@group(0) @binding(56) var<storage, read> bf_x: array<ST>;
@group(0) @binding(57) var<storage, read> bf_g: array<ST>;
@group(0) @binding(58) var<storage, read> bf_stats: array<f32>;
@group(0) @binding(59) var<storage, read> bf_w: array<WT>;
@group(0) @binding(60) var<storage, read> bf_b: array<WT>;
@group(0) @binding(61) var<storage, read> bf_res: array<ST>;
@group(0) @binding(62) var<storage, read_write> bf_out: array<ST>;
@group(0) @binding(63) var<uniform> nbf: NormBw;

fn bf_affine(i: u32) -> vec2f {
  let ai = (i / nbf.adiv) % nbf.amod;
  var wb = vec2f(1.0, 0.0);
  if (HAS_W) { wb.x = f32(bf_w[ai]); }
  if (HAS_B) { wb.y = f32(bf_b[ai]); }
  return wb;
}

@compute @workgroup_size(WG)
fn norm_bw_fused(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 lane: Lane) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= nbf.rows) { return; } // uniform per workgroup: the barriers below stay in uniform control flow
  let base = r * nbf.len;
  let mu = bf_stats[2u * r];
  let rstd = bf_stats[2u * r + 1u];
  var tot = vec2f(0.0);
  var part = vec2f(0.0);
  var terms = 0u;
  for (var k = lane.lid; k < nbf.len; k += WG) {
    let i = base + k;
    let wb = bf_affine(i);
    let t = norm_bw_terms(f32(bf_x[i]), f32(bf_g[i]), mu, rstd, wb.x, wb.y);
    part += vec2f(t.z, t.z * t.x);
    terms++;
    if (terms == BLOCK) { tot += part; part = vec2f(0.0); terms = 0u; }
  }
  let s1 = wg_sum(lane, tot.x + part.x);
  let s2 = wg_sum(lane, tot.y + part.y);
  let inv = 1.0 / f32(nbf.len);
  for (var k = lane.lid; k < nbf.len; k += WG) {
    let i = base + k;
    let wb = bf_affine(i);
    let t = norm_bw_terms(f32(bf_x[i]), f32(bf_g[i]), mu, rstd, wb.x, wb.y);
    var v = ST(rstd * (t.z - s1 * inv - t.x * s2 * inv));
    if (HAS_RES) { v = bf_res[i] + v; }
    bf_out[i] = v;
  }
}

@group(0) @binding(27) var<storage, read> bp_x: array<ST>;
@group(0) @binding(28) var<storage, read> bp_g: array<ST>;
@group(0) @binding(29) var<storage, read> bp_stats: array<f32>;
@group(0) @binding(30) var<storage, read> bp_w: array<WT>;
@group(0) @binding(31) var<storage, read> bp_b: array<WT>;
@group(0) @binding(32) var<storage, read_write> bp_dw: array<ST>;
@group(0) @binding(33) var<storage, read_write> bp_db: array<ST>;
@group(0) @binding(34) var<uniform> nbp: NormBw;

@compute @workgroup_size(WG)
fn norm_bw_param(@builtin(global_invocation_id) gid: vec3u) {
  let a = gid.x;
  if (a >= nbp.amod) { return; }
  var wv = 1.0;
  var bv = 0.0;
  if (HAS_W) { wv = f32(bp_w[a]); }
  if (HAS_B) { bv = f32(bp_b[a]); }
  var tot = vec2f(0.0);
  var part = vec2f(0.0);
  var terms = 0u;
  for (var o = 0u; o < nbp.outer; o++) {
    let base = (o * nbp.amod + a) * nbp.adiv;
    for (var k = 0u; k < nbp.adiv; k++) {
      let i = base + k;
      let r = i / nbp.len;
      let t = norm_bw_terms(f32(bp_x[i]), f32(bp_g[i]), bp_stats[2u * r], bp_stats[2u * r + 1u], wv, bv);
      part += vec2f(t.y * t.x, t.y);
      terms++;
      if (terms == BLOCK) { tot += part; part = vec2f(0.0); terms = 0u; }
    }
  }
  bp_dw[a] = ST(tot.x + part.x);
  bp_db[a] = ST(tot.y + part.y);
}
