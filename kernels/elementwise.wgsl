// Elementwise ops. Storage type ST (f32 or f16), arithmetic in f32.
// unary:  out = act(alpha_in * x + beta_in) then clamp, with ACT chosen by a module constant.
// binary: out = act(ca * a + cb * b) or a * b, etc., with numpy broadcasting via per-operand strides
//         (stride 0 on broadcast dims) over up to 8 dims.
// geglu:  x [..., 2D] -> out [..., D] = x[..., :D] * gelu(x[..., D:]) (diffusers' GEGLU split order).
// Every resource in a family file has its own binding number (reflection matches by number).
// Threads are laid out on a 2-D grid so more than 65535 workgroups of work can be launched.

struct Unary {
  n: u32,
  row: u32,          // threads per grid row (= workgroups.x * WG)
  scale: f32,
  shift: f32,
  alpha: f32,        // leaky-relu slope
  lo: f32,
  hi: f32,
}

@group(0) @binding(0) var<storage, read> ux: array<ST>;
@group(0) @binding(1) var<storage, read_write> uout: array<ST>;
@group(0) @binding(2) var<uniform> u: Unary;

// is_nan_bits (activations.wgsl): clamp/max/min propagate NaN as torch.clamp, maximum, minimum do.
@compute @workgroup_size(WG)
fn unary(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * u.row;
  if (i >= u.n) { return; }
  let v = activate(ACT, f32(ux[i]) * u.scale + u.shift, u.alpha);
  uout[i] = ST(select(clamp(v, u.lo, u.hi), v, is_nan_bits(v)));
}

struct Binary {
  n: u32,
  row: u32,
  rank: u32,
  ca: f32,
  cb: f32,
  alpha: f32,
  dims: array<vec4u, 2>,   // output shape, innermost last, padded with leading 1s to 8 dims
  sa: array<vec4u, 2>,     // element strides of a (0 where broadcast)
  sb: array<vec4u, 2>,
}

@group(0) @binding(3) var<storage, read> a: array<AT>;
@group(0) @binding(4) var<storage, read> b: array<WT>;
@group(0) @binding(5) var<storage, read_write> o: array<ST>;
@group(0) @binding(6) var<uniform> p: Binary;

fn bin_op(va: f32, vb: f32) -> f32 {
  switch BOP {
    case 1u: { return va * vb; }
    case 2u: { return va / vb; }
    case 3u: { return select(max(va, vb), va + vb, is_nan_bits(va) || is_nan_bits(vb)); }
    case 4u: { return select(min(va, vb), va + vb, is_nan_bits(va) || is_nan_bits(vb)); }
    default: { return p.ca * va + p.cb * vb; }
  }
}

@compute @workgroup_size(WG)
fn binary(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.row;
  if (i >= p.n) { return; }
  var ia = i * p.sa[1].w;
  var ib = i * p.sb[1].w;
  // Rank 1 (same shapes, or a broadcast scalar, after the host merged dims) needs no integer
  // division, which CPU drivers emulate per lane.
  if (p.rank > 1u) {
    var rem = i;
    ia = 0u;
    ib = 0u;
    for (var d = 7i; d >= 8i - i32(p.rank); d--) {
      let dim = p.dims[d / 4][d % 4];
      let c = rem % dim;
      rem = rem / dim;
      ia += c * p.sa[d / 4][d % 4];
      ib += c * p.sb[d / 4][d % 4];
    }
  }
  o[i] = ST(activate(ACT, bin_op(f32(a[ia]), f32(b[ib])), p.alpha));
}

struct Geglu {
  n: u32,     // output elements = rows * D
  row: u32,
  d: u32,
}

@group(0) @binding(7) var<storage, read> gx: array<ST>;
@group(0) @binding(8) var<storage, read_write> gout: array<ST>;
@group(0) @binding(9) var<uniform> g: Geglu;

@compute @workgroup_size(WG)
fn geglu(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * g.row;
  if (i >= g.n) { return; }
  let r = i / g.d;
  let c = i % g.d;
  let hidden = f32(gx[r * 2u * g.d + c]);
  let gate = f32(gx[r * 2u * g.d + g.d + c]);
  gout[i] = ST(hidden * gelu_erf(gate));
}

// ---- Backward (vector-Jacobian products), f32 storage. ----

// d activate(code, v, slope) / dv. Sigmoid complements come from sigmoid(-v), not 1 - sigmoid(v), so
// neither tail cancels; e / (1 + e)^2 with e = exp(-|.|) is the overflow-free s (1 - s) / sech^2 form.
fn activate_grad(code: u32, v: f32, slope: f32) -> f32 {
  switch code {
    case 1u: { return select(0.0, 1.0, v > 0.0); }
    case 2u: { return sigmoid_f32(v) * (1.0 + v * sigmoid_f32(-v)); }
    case 3u: {
      // Phi(v) + v phi(v)
      let ec = erfc_abs(abs(v) * 0.70710678118654752);
      let cdf = select(0.5 * ec, 1.0 - 0.5 * ec, v >= 0.0);
      return cdf + v * 0.3989422804014327 * exp(-0.5 * v * v);
    }
    case 4u: {
      if (abs(v) > 20.0) { return select(0.0, 1.0, v > 0.0); }
      let kc = 0.7978845608028654;
      let z = kc * (v + 0.044715 * v * v * v);
      let ez = exp(-2.0 * abs(z));
      let sech2 = 4.0 * ez / ((1.0 + ez) * (1.0 + ez));
      return 0.5 * (1.0 + tanh_safe(z)) + 0.5 * v * sech2 * kc * (1.0 + 0.134145 * v * v);
    }
    case 5u: { return sigmoid_f32(1.702 * v) * (1.0 + 1.702 * v * sigmoid_f32(-1.702 * v)); }
    case 6u: { return select(slope, 1.0, v > 0.0); }
    case 7u: {
      let es = exp(-abs(v));
      return es / ((1.0 + es) * (1.0 + es));
    }
    default: { return 1.0; }
  }
}

// unary_backward: grad_x = grad_out * act'(scale x + shift) * scale where the clamp passed the value
// (lo <= y <= hi, inclusive as torch.clamp), else 0.
struct UnaryGrad {
  n: u32,
  row: u32,
  scale: f32,
  shift: f32,
  alpha: f32,
  lo: f32,
  hi: f32,
}

@group(0) @binding(10) var<storage, read> ubx: array<ST>;
@group(0) @binding(11) var<storage, read> ubg: array<ST>;
@group(0) @binding(12) var<storage, read_write> ubout: array<ST>;
@group(0) @binding(13) var<uniform> ub: UnaryGrad;

@compute @workgroup_size(WG)
fn unary_backward(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * ub.row;
  if (i >= ub.n) { return; }
  let z = f32(ubx[i]) * ub.scale + ub.shift;
  let y = activate(ACT, z, ub.alpha);
  let inside = y >= ub.lo && y <= ub.hi;
  ubout[i] = ST(select(0.0, f32(ubg[i]) * activate_grad(ACT, z, ub.alpha) * ub.scale, inside));
}

// reduce_to: one thread per element of a broadcast operand (the target); sums grad_out over the output
// elements that element was broadcast to, times coef, and (BOP 1, mul) times the other operand there.
// Dims are split into kept (target extent = output extent) and reduced (target extent 1); the op
// merges neighbouring dims of the same kind, so the rank here is small.
struct ReduceTo {
  n: u32,                  // target elements
  row: u32,
  rank: u32,
  count: u32,              // output elements per target element (product of reduced extents)
  coef: f32,
  kd: array<vec4u, 2>,     // kept extents (1 on reduced dims), innermost last, leading 1s
  rd: array<vec4u, 2>,     // reduced extents (1 on kept dims)
  os: array<vec4u, 2>,     // grad_out element strides
  bs: array<vec4u, 2>,     // other operand's element strides (0 where broadcast)
}

@group(0) @binding(14) var<storage, read> rt_g: array<ST>;
@group(0) @binding(15) var<storage, read> rt_other: array<ST>;
@group(0) @binding(16) var<storage, read_write> rt_out: array<ST>;
@group(0) @binding(17) var<uniform> rt: ReduceTo;

@compute @workgroup_size(WG)
fn reduce_to(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * rt.row;
  if (i >= rt.n) { return; }
  let first = 8i - i32(rt.rank);
  var rem = i;
  var go = 0u;
  var bo = 0u;
  for (var d = 7i; d >= first; d--) {
    let c = rem % rt.kd[d / 4][d % 4];
    rem = rem / rt.kd[d / 4][d % 4];
    go += c * rt.os[d / 4][d % 4];
    bo += c * rt.bs[d / 4][d % 4];
  }
  // Blocks of 64 terms, then the block sums: rounding grows like 64 + count / 64, not like count.
  var total = 0.0;
  var part = 0.0;
  for (var r = 0u; r < rt.count; r++) {
    var rr = r;
    var gi = go;
    var bi = bo;
    for (var d = 7i; d >= first; d--) {
      let c = rr % rt.rd[d / 4][d % 4];
      rr = rr / rt.rd[d / 4][d % 4];
      gi += c * rt.os[d / 4][d % 4];
      bi += c * rt.bs[d / 4][d % 4];
    }
    var term = f32(rt_g[gi]);
    if (BOP == 1u) { term *= f32(rt_other[bi]); }
    part += term;
    if ((r & 63u) == 63u) {
      total += part;
      part = 0.0;
    }
  }
  rt_out[i] = ST((total + part) * rt.coef);
}

// geglu_backward: grad_out [rows, D] -> grad_x [rows, 2D]: hidden gets g * gelu(gate), gate gets
// g * hidden * gelu'(gate).
struct GegluGrad {
  n: u32,     // rows * D
  row: u32,
  d: u32,
}

@group(0) @binding(18) var<storage, read> gbx: array<ST>;
@group(0) @binding(19) var<storage, read> gbg: array<ST>;
@group(0) @binding(20) var<storage, read_write> gbout: array<ST>;
@group(0) @binding(21) var<uniform> gbu: GegluGrad;

@compute @workgroup_size(WG)
fn geglu_backward(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * gbu.row;
  if (i >= gbu.n) { return; }
  let r = i / gbu.d;
  let c = i % gbu.d;
  let hi = r * 2u * gbu.d + c;
  let hidden = f32(gbx[hi]);
  let gate = f32(gbx[hi + gbu.d]);
  let gv = f32(gbg[i]);
  gbout[hi] = ST(gv * gelu_erf(gate));
  gbout[hi + gbu.d] = ST(gv * hidden * activate_grad(3u, gate, 0.0));
}
