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

@compute @workgroup_size(WG)
fn unary(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * u.row;
  if (i >= u.n) { return; }
  let v = activate(ACT, f32(ux[i]) * u.scale + u.shift, u.alpha);
  uout[i] = ST(clamp(v, u.lo, u.hi));
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

@group(0) @binding(3) var<storage, read> a: array<ST>;
@group(0) @binding(4) var<storage, read> b: array<ST>;
@group(0) @binding(5) var<storage, read_write> o: array<ST>;
@group(0) @binding(6) var<uniform> p: Binary;

fn bin_op(va: f32, vb: f32) -> f32 {
  switch BOP {
    case 1u: { return va * vb; }
    case 2u: { return va / vb; }
    case 3u: { return max(va, vb); }
    case 4u: { return min(va, vb); }
    default: { return p.ca * va + p.cb * vb; }
  }
}

@compute @workgroup_size(WG)
fn binary(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.row;
  if (i >= p.n) { return; }
  var rem = i;
  var ia = 0u;
  var ib = 0u;
  for (var d = 7i; d >= 8i - i32(p.rank); d--) {
    let dim = p.dims[d / 4][d % 4];
    let c = rem % dim;
    rem = rem / dim;
    ia += c * p.sa[d / 4][d % 4];
    ib += c * p.sb[d / 4][d % 4];
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
