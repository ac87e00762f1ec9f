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

var<workgroup> wsum: array<f32, WG>;

// Workgroup sum of one value per thread; every thread gets the result.
fn wg_sum(lid: u32, mine: f32) -> f32 {
  wsum[lid] = mine;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off >>= 1u) {
    if (lid < off) { wsum[lid] += wsum[lid + off]; }
    workgroupBarrier();
  }
  let res = wsum[0];
  workgroupBarrier(); // wsum is reused by the next sum
  return res;
}

// Per-thread partial sums are flushed every BLOCK terms so a long strided run does not accumulate
// rounding error linearly.
const BLOCK: u32 = 64u;

@compute @workgroup_size(WG)
fn norm_stats(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let job = wid.x + wid.y * nwg.x;
  if (job >= ns.rows * ns.chunks) { return; }
  let row = job / ns.chunks;
  let start = (job % ns.chunks) * ns.chunk;
  let cnt = min(ns.chunk, ns.len - start);
  let base = row * ns.len + start;

  var total = 0.0;
  var part = 0.0;
  var terms = 0u;
  for (var i = lid; i < cnt; i += WG) {
    part += f32(nx[base + i]);
    terms++;
    if (terms == BLOCK) { total += part; part = 0.0; terms = 0u; }
  }
  let mu = wg_sum(lid, total + part) / f32(cnt);

  total = 0.0;
  part = 0.0;
  terms = 0u;
  for (var i = lid; i < cnt; i += WG) {
    let d = f32(nx[base + i]) - mu;
    part += d * d;
    terms++;
    if (terms == BLOCK) { total += part; part = 0.0; terms = 0u; }
  }
  let m2 = wg_sum(lid, total + part);

  if (lid == 0u) {
    if (ns.chunks == 1u) {
      nmom[2u * row] = mu;
      nmom[2u * row + 1u] = inverseSqrt(m2 / f32(cnt) + ns.eps);
    } else {
      nmom[2u * job] = mu;
      nmom[2u * job + 1u] = m2;
    }
  }
}

@compute @workgroup_size(WG)
fn norm_stats_row(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * WG;
  if (row >= ns.rows) { return; }
  let base = row * ns.len;
  var total = 0.0;
  var part = 0.0;
  for (var i = 0u; i < ns.len; i++) {
    part += f32(nx[base + i]);
    if ((i & (BLOCK - 1u)) == BLOCK - 1u) { total += part; part = 0.0; }
  }
  let mu = (total + part) / f32(ns.len);
  total = 0.0;
  part = 0.0;
  for (var i = 0u; i < ns.len; i++) {
    let d = f32(nx[base + i]) - mu;
    part += d * d;
    if ((i & (BLOCK - 1u)) == BLOCK - 1u) { total += part; part = 0.0; }
  }
  nmom[2u * row] = mu;
  nmom[2u * row + 1u] = inverseSqrt((total + part) / f32(ns.len) + ns.eps);
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
@group(0) @binding(8) var<storage, read> aw: array<ST>;
@group(0) @binding(9) var<storage, read> ab: array<ST>;
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
