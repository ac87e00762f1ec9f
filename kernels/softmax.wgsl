// Stable softmax over the last dimension of scale * x: exp(v - max) / sum exp(v - max).
// Two layouts: softmax_thread gives each thread a whole (short) row and keeps an online running
// max/sum in one read; softmax_group gives each workgroup a row (long rows: attention over 4096 keys)
// with three strided passes (max, sum of exps, write) and workgroup reductions in between (the lane
// include: a tree in workgroup memory, or subgroup operations).
// The running max starts at the lowest finite f32, not -inf, so -inf logits (masks) give exp(-inf) = 0
// instead of NaN from (-inf) - (-inf); a row that is entirely -inf gives 0 / 0 = NaN, as in PyTorch.

struct Softmax {
  rows: u32,
  cols: u32,
  row: u32,      // softmax_thread: threads per grid row
  scale: f32,
}

@group(0) @binding(0) var<storage, read> sx: array<ST>;
@group(0) @binding(1) var<storage, read_write> sout: array<ST>;
@group(0) @binding(2) var<uniform> sm: Softmax;

const LOWEST: f32 = -3.4028234663852886e38;

@compute @workgroup_size(WG)
fn softmax_thread(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x + gid.y * sm.row;
  if (r >= sm.rows) { return; }
  let base = r * sm.cols;
  var m = LOWEST;
  var s = 0.0;
  for (var j = 0u; j < sm.cols; j++) {
    let xv = sm.scale * f32(sx[base + j]);
    if (xv > m) {
      s = s * exp(m - xv) + 1.0;
      m = xv;
    } else {
      s += exp(xv - m);
    }
  }
  let inv = 1.0 / s;
  for (var j = 0u; j < sm.cols; j++) {
    sout[base + j] = ST(exp(sm.scale * f32(sx[base + j]) - m) * inv);
  }
}

// wg_reduce and `struct Lane` come from the lane include (lane_tree.wgsl or lane_subgroup.wgsl).

@compute @workgroup_size(WG)
fn softmax_group(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 lane: Lane) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= sm.rows) { return; }
  let base = r * sm.cols;
  var m = LOWEST;
  for (var j = lane.lid; j < sm.cols; j += WG) { m = max(m, sm.scale * f32(sx[base + j])); }
  m = wg_reduce(lane, m, true);
  var s = 0.0;
  for (var j = lane.lid; j < sm.cols; j += WG) { s += exp(sm.scale * f32(sx[base + j]) - m); }
  s = wg_reduce(lane, s, false);
  let inv = 1.0 / s;
  for (var j = lane.lid; j < sm.cols; j += WG) {
    sout[base + j] = ST(exp(sm.scale * f32(sx[base + j]) - m) * inv);
  }
}

// ---- Backward (f32 storage only) ----
// With y = softmax(scale * x) (the forward's output) and incoming gradient g:
//   dx = scale * y * (g - sum_j g_j y_j).
// Same two layouts as the forward: a thread per row, or a workgroup per row with a workgroup sum.

@group(0) @binding(3) var<storage, read> sb_y: array<ST>;
@group(0) @binding(4) var<storage, read> sb_g: array<ST>;
@group(0) @binding(5) var<storage, read_write> sb_out: array<ST>;
@group(0) @binding(6) var<uniform> sbt: Softmax;

@compute @workgroup_size(WG)
fn softmax_bw_thread(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x + gid.y * sbt.row;
  if (r >= sbt.rows) { return; }
  let base = r * sbt.cols;
  var tot = 0.0;
  var part = 0.0;
  for (var j = 0u; j < sbt.cols; j++) {
    part += f32(sb_g[base + j]) * f32(sb_y[base + j]);
    if ((j & 63u) == 63u) { tot += part; part = 0.0; } // blocked: long rows keep ~1e-7 relative error
  }
  let d = tot + part;
  for (var j = 0u; j < sbt.cols; j++) {
    sb_out[base + j] = ST(sbt.scale * f32(sb_y[base + j]) * (f32(sb_g[base + j]) - d));
  }
}

@group(0) @binding(7) var<storage, read> sbg_y: array<ST>;
@group(0) @binding(8) var<storage, read> sbg_g: array<ST>;
@group(0) @binding(9) var<storage, read_write> sbg_out: array<ST>;
@group(0) @binding(10) var<uniform> sbg: Softmax;

@compute @workgroup_size(WG)
fn softmax_bw_group(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    lane: Lane) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= sbg.rows) { return; } // uniform per workgroup
  let base = r * sbg.cols;
  var part = 0.0;
  for (var j = lane.lid; j < sbg.cols; j += WG) { part += f32(sbg_g[base + j]) * f32(sbg_y[base + j]); }
  let d = wg_reduce(lane, part, false);
  for (var j = lane.lid; j < sbg.cols; j += WG) {
    sbg_out[base + j] = ST(sbg.scale * f32(sbg_y[base + j]) * (f32(sbg_g[base + j]) - d));
  }
}
