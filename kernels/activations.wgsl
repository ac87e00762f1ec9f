// Shared activation functions, included by kernels that fuse an activation (elementwise, matmul,
// conv2d, norms). Codes: 0 none, 1 relu, 2 silu, 3 gelu (erf), 4 gelu (tanh), 5 quick-gelu,
// 6 leaky-relu(slope), 7 sigmoid. The code is a module constant, so the switch folds away.

// erfc with relative error < 1.2e-7 everywhere (Chebyshev fit in t = 1/(1+|x|/2)); accurate in the
// tails, where 1 - erf(x) would cancel.
// Local names here avoid the resource names of including files (v, slope): wgsl_reflect mistakes a
// local that shares a global's name for a use of that global.
fn erfc_abs(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
          t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(p);
}

fn erf_f32(v: f32) -> f32 {
  let c = erfc_abs(abs(v));
  return select(c - 1.0, 1.0 - c, v >= 0.0);
}

// tanh without overflow for large |x|.
fn tanh_safe(v: f32) -> f32 {
  let e = exp(-2.0 * abs(v));
  return sign(v) * (1.0 - e) / (1.0 + e);
}

fn sigmoid_f32(v: f32) -> f32 {
  return 1.0 / (1.0 + exp(-v));
}

fn gelu_erf(v: f32) -> f32 {
  // 0.5 v (1 + erf(v / sqrt 2)), written with erfc so negative inputs keep full relative accuracy.
  let c = erfc_abs(abs(v) * 0.70710678118654752);
  return select(0.5 * v * c, v - 0.5 * v * c, v >= 0.0);
}

fn gelu_tanh(v: f32) -> f32 {
  return 0.5 * v * (1.0 + tanh_safe(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

// NaN test on the bits: max/min/clamp leave NaN to the implementation (often returning the other
// operand), and compilers may fold v != v away. PyTorch's relu, clamp, maximum propagate NaN; so do we.
fn is_nan_bits(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn activate(code: u32, v: f32, slope: f32) -> f32 {
  switch code {
    case 1u: { return select(max(v, 0.0), v, is_nan_bits(v)); }
    case 2u: { return v * sigmoid_f32(v); }
    case 3u: { return gelu_erf(v); }
    case 4u: { return gelu_tanh(v); }
    case 5u: { return v * sigmoid_f32(1.702 * v); }
    case 6u: { return select(slope * v, v, v >= 0.0); }
    case 7u: { return sigmoid_f32(v); }
    default: { return v; }
  }
}
