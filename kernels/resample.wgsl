// Resampling of NCHW tensors; N*C planes are independent, so both kernels see [planes, H, W].
// upsample_nearest2x: out[p, y, x] = in[p, y / 2, x / 2] (torch nearest with scale_factor 2).
// resize_bilinear: torch's F.interpolate(mode='bilinear', align_corners=False, antialias=False):
//   source coordinate s = max(scale * (dst + 0.5) - 0.5, 0) with scale = in/out (given by the host
//   as an f32, as PyTorch computes it), taps floor(s) and floor(s) + 1 clamped to the last row or
//   column, weights 1 - frac and frac. Downsampling uses the same two taps (no antialiasing).
// One thread per output element on a 2-D grid (gid.x + gid.y * row).

struct Nearest {
  n: u32,     // output elements
  row: u32,
  ih: u32,
  iw: u32,
}

@group(0) @binding(0) var<storage, read> nx: array<ST>;
@group(0) @binding(1) var<storage, read_write> nout: array<ST>;
@group(0) @binding(2) var<uniform> nu: Nearest;

@compute @workgroup_size(WG)
fn upsample_nearest2x(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * nu.row;
  if (i >= nu.n) { return; }
  let ow = nu.iw * 2u;
  let ox = i % ow;
  let oy = (i / ow) % (nu.ih * 2u);
  let p = i / (ow * nu.ih * 2u);
  nout[i] = nx[(p * nu.ih + oy / 2u) * nu.iw + ox / 2u];
}

struct Bilinear {
  n: u32,
  row: u32,
  ih: u32,
  iw: u32,
  oh: u32,
  ow: u32,
  sh: f32,    // in_h / out_h
  sw: f32,    // in_w / out_w
}

@group(0) @binding(3) var<storage, read> bx: array<ST>;
@group(0) @binding(4) var<storage, read_write> bout: array<ST>;
@group(0) @binding(5) var<uniform> bu: Bilinear;

@compute @workgroup_size(WG)
fn resize_bilinear(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * bu.row;
  if (i >= bu.n) { return; }
  let ox = i % bu.ow;
  let oy = (i / bu.ow) % bu.oh;
  let p = i / (bu.ow * bu.oh);
  let sy = max(bu.sh * (f32(oy) + 0.5) - 0.5, 0.0);
  let sx = max(bu.sw * (f32(ox) + 0.5) - 0.5, 0.0);
  let y0 = min(u32(sy), bu.ih - 1u);
  let x0 = min(u32(sx), bu.iw - 1u);
  let y1 = min(y0 + 1u, bu.ih - 1u);
  let x1 = min(x0 + 1u, bu.iw - 1u);
  let ly = sy - f32(y0);
  let lx = sx - f32(x0);
  let base = p * bu.ih * bu.iw;
  let top = f32(bx[base + y0 * bu.iw + x0]) * (1.0 - lx) + f32(bx[base + y0 * bu.iw + x1]) * lx;
  let bot = f32(bx[base + y1 * bu.iw + x0]) * (1.0 - lx) + f32(bx[base + y1 * bu.iw + x1]) * lx;
  bout[i] = ST(top * (1.0 - ly) + bot * ly);
}

// ---- Backward (f32 storage only), gather form: one thread per input element, no atomics ----
// upsample_nearest2x_backward: dx[p, y, x] = sum of the 2x2 children g[p, 2y + a, 2x + b].
// resize_bilinear_backward: dx[p, iy, ix] = sum over outputs of wy(oy, iy) wx(ox, ix) g[p, oy, ox],
// where w(o, i) is the weight the forward gave tap i for output o (both taps' weights when the
// clamp makes them the same index). The outputs touching i form a short run of o; it is bounded
// from the inverse of the source-coordinate map with one index of slack either side, and the
// weights inside it are recomputed exactly as the forward does (zero off the taps).

@group(0) @binding(6) var<storage, read> nbg: array<ST>;
@group(0) @binding(7) var<storage, read_write> nbout: array<ST>;
@group(0) @binding(8) var<uniform> nbu: Nearest;

@compute @workgroup_size(WG)
fn upsample_nearest2x_backward(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * nbu.row;
  if (i >= nbu.n) { return; }  // n: input elements here
  let ix = i % nbu.iw;
  let iy = (i / nbu.iw) % nbu.ih;
  let p = i / (nbu.iw * nbu.ih);
  let ow = 2u * nbu.iw;
  let top = (p * 2u * nbu.ih + 2u * iy) * ow + 2u * ix;
  nbout[i] = ST(f32(nbg[top]) + f32(nbg[top + 1u]) + f32(nbg[top + ow]) + f32(nbg[top + ow + 1u]));
}

@group(0) @binding(9) var<storage, read> bbg: array<ST>;
@group(0) @binding(10) var<storage, read_write> bbout: array<ST>;
@group(0) @binding(11) var<uniform> bbu: Bilinear;

// Weight of input index `at` in output `o` along one axis (forward's taps and weights).
fn bilinear_tap_weight(o: u32, at: u32, scale: f32, in_size: u32) -> f32 {
  let s = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
  let i0 = min(u32(s), in_size - 1u);
  let i1 = min(i0 + 1u, in_size - 1u);
  let l = s - f32(i0);
  return select(0.0, 1.0 - l, i0 == at) + select(0.0, l, i1 == at);
}

// Outputs [lo, hi] along one axis whose taps may include input index `at`: s(o) in [at - 1, at + 1).
fn bilinear_out_range(at: u32, scale: f32, in_size: u32, out_size: u32) -> vec2u {
  let lo_f = (f32(at) - 0.5) / scale - 0.5;
  let hi_f = (f32(at) + 1.5) / scale - 0.5;
  var lo = 0u;
  if (lo_f > 1.0) { lo = u32(lo_f) - 1u; }
  var hi = out_size - 1u;
  if (at + 1u < in_size && hi_f >= 0.0) { hi = min(out_size - 1u, u32(hi_f) + 1u); }
  return vec2u(min(lo, out_size - 1u), hi);
}

@compute @workgroup_size(WG)
fn resize_bilinear_backward(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * bbu.row;
  if (i >= bbu.n) { return; }  // n: input elements here
  let ix = i % bbu.iw;
  let iy = (i / bbu.iw) % bbu.ih;
  let p = i / (bbu.iw * bbu.ih);
  let ry = bilinear_out_range(iy, bbu.sh, bbu.ih, bbu.oh);
  let rx = bilinear_out_range(ix, bbu.sw, bbu.iw, bbu.ow);
  var acc = 0.0;
  for (var oy = ry.x; oy <= ry.y; oy++) {
    let wy = bilinear_tap_weight(oy, iy, bbu.sh, bbu.ih);
    if (wy == 0.0) { continue; }
    var rowsum = 0.0;
    for (var ox = rx.x; ox <= rx.y; ox++) {
      rowsum += bilinear_tap_weight(ox, ix, bbu.sw, bbu.iw) * f32(bbg[(p * bbu.oh + oy) * bbu.ow + ox]);
    }
    acc += wy * rowsum;
  }
  bbout[i] = ST(acc);
}
