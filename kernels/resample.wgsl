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
