// Regression losses between an output and a target (f32): per element, the loss term and its gradient
// with respect to the output, in one pass; the caller sums the terms (reduce.wgsl) for the mean.
//   d = out - clamp(target, lo, hi)                      (lo, hi = -inf, inf: no clamp)
//   MODE 0, L1 (F.l1_loss):   term |d|,  grad sign(d) / n   (0 where d == 0, as torch's sign)
//   MODE 1, MSE (F.mse_loss): term d^2,  grad 2 d / n
// A NaN in the output or the target gives NaN term and gradient (as torch, whose clamp keeps NaN): WGSL's
// clamp and comparisons would otherwise turn it into a finite value and hide it. NaN is tested on the
// bits, which no compiler may fold away.

struct Loss {
  n: u32,
  row: u32,
  lo: f32,
  hi: f32,
  inv_n: f32,
}

@group(0) @binding(0) var<storage, read> lo_out: array<f32>;
@group(0) @binding(1) var<storage, read> lo_target: array<f32>;
@group(0) @binding(2) var<storage, read_write> lo_terms: array<f32>;
@group(0) @binding(3) var<storage, read_write> lo_grad: array<f32>;
@group(0) @binding(4) var<uniform> lp: Loss;

@compute @workgroup_size(WG)
fn loss_terms(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * lp.row;
  if (i >= lp.n) { return; }
  let o = lo_out[i];
  let t = lo_target[i];
  let nan = (bitcast<u32>(o) & 0x7fffffffu) > 0x7f800000u || (bitcast<u32>(t) & 0x7fffffffu) > 0x7f800000u;
  let d = o - clamp(t, lp.lo, lp.hi);
  // Built from a runtime value: a constant NaN is a WGSL compile error.
  let qnan = bitcast<f32>(0x7fc00000u | (lp.n & 0u));
  if (MODE == 1u) {
    lo_terms[i] = select(d * d, qnan, nan);
    lo_grad[i] = select(2.0 * d * lp.inv_n, qnan, nan);
  } else {
    lo_terms[i] = select(abs(d), qnan, nan);
    lo_grad[i] = select(select(select(-lp.inv_n, lp.inv_n, d > 0.0), 0.0, d == 0.0), qnan, nan);
  }
}
