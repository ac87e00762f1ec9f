// Naive baseline for benchmarks: group norm + SiLU with one thread per (batch, group) computing the
// statistics serially, then one thread per output element. Measured beside the real kernel.

struct Stats {
  rows: u32,      // N * groups
  len: u32,       // elements per group
  eps: f32,
}
@group(0) @binding(0) var<storage, read> gn_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gn_stats: array<f32>;
@group(0) @binding(2) var<uniform> sp: Stats;

@compute @workgroup_size(64)
fn gn_stats_naive(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x;
  if (r >= sp.rows) { return; }
  var sum = 0.0;
  for (var i = 0u; i < sp.len; i++) { sum += gn_x[r * sp.len + i]; }
  let mean = sum / f32(sp.len);
  var sq = 0.0;
  for (var i = 0u; i < sp.len; i++) { let d = gn_x[r * sp.len + i] - mean; sq += d * d; }
  gn_stats[2u * r] = mean;
  gn_stats[2u * r + 1u] = inverseSqrt(sq / f32(sp.len) + sp.eps);
}

struct Apply {
  n: u32,
  row: u32,
  hw: u32,
  channels: u32,
  cpg: u32,       // channels per group
  groups: u32,
}
@group(0) @binding(3) var<storage, read> ap_x: array<f32>;
@group(0) @binding(4) var<storage, read> ap_stats: array<f32>;
@group(0) @binding(5) var<storage, read> ap_w: array<f32>;
@group(0) @binding(6) var<storage, read> ap_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> ap_out: array<f32>;
@group(0) @binding(8) var<uniform> app: Apply;

@compute @workgroup_size(64)
fn gn_apply_naive(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * app.row;
  if (i >= app.n) { return; }
  let c = (i / app.hw) % app.channels;
  let b = i / (app.hw * app.channels);
  let r = b * app.groups + c / app.cpg;
  let y = (ap_x[i] - ap_stats[2u * r]) * ap_stats[2u * r + 1u] * ap_w[c] + ap_b[c];
  ap_out[i] = y / (1.0 + exp(-y));
}
