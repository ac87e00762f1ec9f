// Optimizer steps, one fused pass over a parameter tensor (f32 master weights, f32 moments, f32 gradient),
// in place on p, m and v.
//
// adam_step: torch.optim.Adam / AdamW (torch 1.13's single-tensor path), element by element:
//   g = g * gscale * clip                              (clip: see below; gscale e.g. 1 / accumulation steps)
//   Adam with weight decay:  g = g + wd * p            (L2 penalty in the gradient)
//   AdamW:                   p = p * (1 - lr * wd)     (decoupled decay, before the update; skipped at wd 0)
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   p = p + (-step_size * m) / (sqrt(v) / bc2_sqrt + eps)
// with step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) computed on the host in f64 for
// step t, as torch does. Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_): `onorms`
// holds the L2 norm of every gradient of the step (before gscale); total = |gscale| sqrt(sum of squares),
// clip = min(1, max_norm / (total + 1e-6)); every thread folds the few norms itself (uniform loads),
// so no value returns to the host.

struct Adam {
  n: u32,
  row: u32,
  nnorms: u32,        // gradients in the clipping group (0: no clipping)
  decoupled: u32,     // 1: AdamW
  beta1: f32,
  beta2: f32,
  c1: f32,            // 1 - beta1, 1 - beta2 and 1 - lr * wd: host f64 values rounded once, as torch's
  c2: f32,            // Python-float arguments are
  decay: f32,
  eps: f32,
  wd: f32,
  step_size: f32,
  bc2_sqrt: f32,
  gscale: f32,
  max_norm: f32,
}

@group(0) @binding(0) var<storage, read_write> op_p: array<f32>;
@group(0) @binding(1) var<storage, read_write> op_m: array<f32>;
@group(0) @binding(2) var<storage, read_write> op_v: array<f32>;
@group(0) @binding(3) var<storage, read> op_g: array<f32>;
@group(0) @binding(4) var<storage, read> op_norms: array<f32>;
@group(0) @binding(5) var<uniform> oa: Adam;

fn clip_factor() -> f32 {
  if (oa.nnorms == 0u) { return 1.0; }
  var ss = 0.0;
  for (var i = 0u; i < oa.nnorms; i++) {
    let nv = op_norms[i];
    ss += nv * nv;
  }
  return min(1.0, oa.max_norm / (abs(oa.gscale) * sqrt(ss) + 1e-6));
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * oa.row;
  if (i >= oa.n) { return; }
  var p = op_p[i];
  var g = op_g[i] * oa.gscale;
  if (oa.nnorms > 0u) { g = g * clip_factor(); }
  if (oa.decoupled == 1u) {
    p = p * oa.decay;
  } else if (oa.wd != 0.0) {
    g = g + oa.wd * p;
  }
  let m = oa.beta1 * op_m[i] + oa.c1 * g;
  let v = oa.beta2 * op_v[i] + oa.c2 * g * g;
  op_m[i] = m;
  op_v[i] = v;
  op_p[i] = p + (-oa.step_size * m) / (sqrt(v) / oa.bc2_sqrt + oa.eps);
}
