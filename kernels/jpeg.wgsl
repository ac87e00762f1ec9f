// JPEG without entropy coding, on images x in [-1, 1] NCHW (3 channels), as libjpeg / PIL compress and
// decompress them (see src/solvers/degradations/jpeg.ts for the whole pipeline):
//   jpeg_to_ycc:     RGB = 127.5 (x + 1) -> JFIF YCbCr; the luma plane edge-replicated to whole 8x8
//                    blocks, the chroma planes box-averaged over sx x sy cells of the image edge-
//                    replicated to whole MCUs (libjpeg pads the same way).
//   jpeg_blocks:     per 8x8 block: - 128, orthonormal DCT, q * round(F / q) (half away from zero, as
//                    libjpeg), IDCT, + 128, clamp to [0, 255]; quantize == 0 gives the linear
//                    surrogate (no rounding, no clamp: the block transform is then the identity).
//   jpeg_to_rgb:     chroma upsampled with libjpeg's triangular "fancy" filter (3/4, 1/4 per axis
//                    subsampled by 2, neighbours clamped to the real chroma extent), YCbCr -> RGB,
//                    clamp to [0, 255] (when clamp_out), back to [-1, 1].
//   jpeg_adjoint:    the transpose of the linear surrogate, in gather form (one thread per pixel).
// Colour matrices, the DCT basis and the quantisation table arrive as uniforms (rows in vec4s). The
// images use the storage type ST; the intermediate planes are always f32 (an f16 plane would hold
// samples near 255 only to 1/8 of a level and move coefficients across quantisation boundaries).

struct ToYcc {
  n: u32,        // luma plane elements + chroma plane elements
  row: u32,
  h: u32,        // image
  w: u32,
  yh: u32,       // luma plane (multiples of 8)
  yw: u32,
  ch: u32,       // chroma plane (multiples of 8)
  cw: u32,
  sx: u32,       // chroma subsampling factors
  sy: u32,
  n_luma: u32,   // N * yh * yw
  rgb2ycc: array<vec4<f32>, 3>,
}

@group(0) @binding(0) var<storage, read> jy_x: array<ST>;
@group(0) @binding(1) var<storage, read_write> jy_luma: array<f32>;
@group(0) @binding(2) var<storage, read_write> jy_chroma: array<f32>;
@group(0) @binding(3) var<uniform> jyu: ToYcc;

/** Image pixel (clamped to the image) of batch b as RGB in [0, 255]. */
fn jy_rgb(b: u32, yy: u32, xx: u32) -> vec3<f32> {
  let y = min(yy, jyu.h - 1u);
  let x = min(xx, jyu.w - 1u);
  let plane = jyu.h * jyu.w;
  let at = b * 3u * plane + y * jyu.w + x;
  return 127.5 * (vec3<f32>(f32(jy_x[at]), f32(jy_x[at + plane]), f32(jy_x[at + 2u * plane])) + 1.0);
}

@compute @workgroup_size(WG)
fn jpeg_to_ycc(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * jyu.row;
  if (i >= jyu.n) { return; }
  if (i < jyu.n_luma) {
    let px = i % jyu.yw;
    let py = (i / jyu.yw) % jyu.yh;
    let b = i / (jyu.yw * jyu.yh);
    jy_luma[i] = dot(jyu.rgb2ycc[0].xyz, jy_rgb(b, py, px));
    return;
  }
  let j = i - jyu.n_luma;
  let px = j % jyu.cw;
  let py = (j / jyu.cw) % jyu.ch;
  let c = (j / (jyu.cw * jyu.ch)) % 2u;
  let b = j / (jyu.cw * jyu.ch * 2u);
  var acc: f32 = 0.0;
  for (var dy = 0u; dy < jyu.sy; dy++) {
    for (var dx = 0u; dx < jyu.sx; dx++) {
      acc += dot(jyu.rgb2ycc[c + 1u].xyz, jy_rgb(b, py * jyu.sy + dy, px * jyu.sx + dx));
    }
  }
  jy_chroma[j] = acc / f32(jyu.sx * jyu.sy) + 128.0;
}

struct Blocks {
  n: u32,        // planes * blocks per plane
  row: u32,
  pw: u32,       // plane width and height (multiples of 8)
  ph: u32,
  quantize: u32,
  eight: u32,    // 8, passed at run time so that lavapipe does not unroll the 8x8x8 loops (slow compiles)
  dct: array<vec4<f32>, 16>,    // C[u * 8 + x], orthonormal DCT-II
  quant: array<vec4<f32>, 16>,  // natural order
}

@group(0) @binding(4) var<storage, read> jb_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> jb_out: array<f32>;
@group(0) @binding(6) var<uniform> jbu: Blocks;

fn jb_c(k: u32) -> f32 {
  return jbu.dct[k >> 2u][k & 3u];
}

// One thread per block: the 64 samples live in private arrays, the DCT and IDCT run separably.
@compute @workgroup_size(WG)
fn jpeg_blocks(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * jbu.row;
  if (i >= jbu.n) { return; }
  let bw = jbu.pw / 8u;
  let bh = jbu.ph / 8u;
  let bx = i % bw;
  let by = (i / bw) % bh;
  let p = i / (bw * bh);
  let origin = (p * jbu.ph + by * 8u) * jbu.pw + bx * 8u;
  var a: array<f32, 64>;
  var t: array<f32, 64>;
  for (var y = 0u; y < jbu.eight; y++) {
    for (var x = 0u; x < jbu.eight; x++) {
      a[y * 8u + x] = jb_in[origin + y * jbu.pw + x] - 128.0;
    }
  }
  // t[u, x] = sum_y C[u, y] a[y, x]
  for (var u = 0u; u < jbu.eight; u++) {
    for (var x = 0u; x < jbu.eight; x++) {
      var s: f32 = 0.0;
      for (var y = 0u; y < jbu.eight; y++) { s += jb_c(u * 8u + y) * a[y * 8u + x]; }
      t[u * 8u + x] = s;
    }
  }
  // F[u, v] = sum_x t[u, x] C[v, x], quantised in place into a.
  for (var u = 0u; u < jbu.eight; u++) {
    for (var v = 0u; v < jbu.eight; v++) {
      var s: f32 = 0.0;
      for (var x = 0u; x < jbu.eight; x++) { s += t[u * 8u + x] * jb_c(v * 8u + x); }
      let k = u * 8u + v;
      if (jbu.quantize != 0u) {
        let q = jbu.quant[k >> 2u][k & 3u];
        s = q * sign(s) * floor(abs(s) / q + 0.5);
      }
      a[k] = s;
    }
  }
  // t[y, v] = sum_u C[u, y] F[u, v]; out[y, x] = sum_v t[y, v] C[v, x] + 128.
  for (var y = 0u; y < jbu.eight; y++) {
    for (var v = 0u; v < jbu.eight; v++) {
      var s: f32 = 0.0;
      for (var u = 0u; u < jbu.eight; u++) { s += jb_c(u * 8u + y) * a[u * 8u + v]; }
      t[y * 8u + v] = s;
    }
  }
  for (var y = 0u; y < jbu.eight; y++) {
    for (var x = 0u; x < jbu.eight; x++) {
      var s: f32 = 128.0;
      for (var v = 0u; v < jbu.eight; v++) { s += t[y * 8u + v] * jb_c(v * 8u + x); }
      if (jbu.quantize != 0u) { s = clamp(s, 0.0, 255.0); }
      jb_out[origin + y * jbu.pw + x] = s;
    }
  }
}

struct ToRgb {
  n: u32,        // N * h * w
  row: u32,
  h: u32,
  w: u32,
  yh: u32,
  yw: u32,
  ch: u32,
  cw: u32,
  sx: u32,
  sy: u32,
  crh: u32,      // real chroma extent: ceil(h / sy), ceil(w / sx)
  crw: u32,
  clamp_out: u32,
  ycc2rgb: array<vec4<f32>, 3>,  // rows R, G, B over (Y, Cb - 128, Cr - 128)
}

@group(0) @binding(7) var<storage, read> jr_luma: array<f32>;
@group(0) @binding(8) var<storage, read> jr_chroma: array<f32>;
@group(0) @binding(9) var<storage, read_write> jr_out: array<ST>;
@group(0) @binding(10) var<uniform> jru: ToRgb;

/**
 * The two taps (x, y) and the first tap's weight (z) of output coordinate o along an axis subsampled by
 * f (1 or 2) with n real chroma samples: f == 2 -> 3/4 c[o / 2] + 1/4 c[o / 2 -+ 1] (clamped).
 */
fn jpeg_up_taps(o: u32, f: u32, n: u32) -> vec3<f32> {
  if (f == 1u) { return vec3<f32>(f32(o), f32(o), 1.0); }
  let c = o / 2u;
  var nb = min(c + 1u, n - 1u);
  if ((o & 1u) == 0u) { nb = select(c - 1u, 0u, c == 0u); }
  return vec3<f32>(f32(c), f32(nb), 0.75);
}

@compute @workgroup_size(WG)
fn jpeg_to_rgb(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * jru.row;
  if (i >= jru.n) { return; }
  let x = i % jru.w;
  let y = (i / jru.w) % jru.h;
  let b = i / (jru.w * jru.h);
  let luma = f32(jr_luma[(b * jru.yh + y) * jru.yw + x]);
  let ty = jpeg_up_taps(y, jru.sy, jru.crh);
  let tx = jpeg_up_taps(x, jru.sx, jru.crw);
  let r0 = u32(ty.x);
  let r1 = u32(ty.y);
  let c0 = u32(tx.x);
  let c1 = u32(tx.y);
  var cbcr = vec2<f32>(0.0, 0.0);
  for (var c = 0u; c < 2u; c++) {
    let base = (b * 2u + c) * jru.ch;
    let top = tx.z * f32(jr_chroma[(base + r0) * jru.cw + c0]) + (1.0 - tx.z) * f32(jr_chroma[(base + r0) * jru.cw + c1]);
    let bot = tx.z * f32(jr_chroma[(base + r1) * jru.cw + c0]) + (1.0 - tx.z) * f32(jr_chroma[(base + r1) * jru.cw + c1]);
    cbcr[c] = ty.z * top + (1.0 - ty.z) * bot - 128.0;
  }
  let ycc = vec3<f32>(luma, cbcr.x, cbcr.y);
  let plane = jru.h * jru.w;
  let at = b * 3u * plane + y * jru.w + x;
  for (var c = 0u; c < 3u; c++) {
    var v = dot(jru.ycc2rgb[c].xyz, ycc);
    if (jru.clamp_out != 0u) { v = clamp(v, 0.0, 255.0); }
    jr_out[at + c * plane] = ST(v / 127.5 - 1.0);
  }
}

// ---- jpeg_adjoint: A_lin^T g for A_lin = M^-1 diag(1, U D, U D) M (the 127.5 scalings cancel; with
// rounding and clamping taken as the identity the block transform is C^T C = 1, and the padded samples
// no output reads get no gradient). Per pixel: t = M^-T g at each output pixel; the luma part is t_Y
// here; chroma sample (ci, cj) collects U^T over the outputs whose taps reach it (rows ci f - 1 ..
// ci f + f, weights recomputed as the forward's), and D^T hands pixel (y, x) 1 / (sx sy) of it, times
// the number of cell positions the edge clamp maps onto the last row / column.

struct Adjoint {
  n: u32,        // N * h * w
  row: u32,
  h: u32,
  w: u32,
  sx: u32,
  sy: u32,
  crh: u32,
  crw: u32,
  rgb2ycc: array<vec4<f32>, 3>,
  ycc2rgb: array<vec4<f32>, 3>,
}

@group(0) @binding(11) var<storage, read> ja_grad: array<ST>;
@group(0) @binding(12) var<storage, read_write> ja_out: array<ST>;
@group(0) @binding(13) var<uniform> jau: Adjoint;

/** M^-T g at output pixel (y, x) of batch b: the gradient w.r.t. (Y, Cb, Cr). */
fn ja_ycc_grad(b: u32, y: u32, x: u32) -> vec3<f32> {
  let plane = jau.h * jau.w;
  let at = b * 3u * plane + y * jau.w + x;
  let g = vec3<f32>(f32(ja_grad[at]), f32(ja_grad[at + plane]), f32(ja_grad[at + 2u * plane]));
  return g.x * jau.ycc2rgb[0].xyz + g.y * jau.ycc2rgb[1].xyz + g.z * jau.ycc2rgb[2].xyz;
}

/** Forward upsampling weight of chroma index ci in output coordinate o. */
fn ja_up_weight(o: u32, ci: u32, f: u32, n: u32) -> f32 {
  let t = jpeg_up_taps(o, f, n);
  return select(0.0, t.z, u32(t.x) == ci) + select(0.0, 1.0 - t.z, u32(t.y) == ci);
}

@compute @workgroup_size(WG)
fn jpeg_adjoint(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * jau.row;
  if (i >= jau.n) { return; }
  let x = i % jau.w;
  let y = (i / jau.w) % jau.h;
  let b = i / (jau.w * jau.h);
  let ci = y / jau.sy;
  let cj = x / jau.sx;
  var gc = vec2<f32>(0.0, 0.0);
  let r_lo = max(i32(ci * jau.sy) - 1, 0);
  let r_hi = min(i32(ci * jau.sy + jau.sy), i32(jau.h) - 1);
  let s_lo = max(i32(cj * jau.sx) - 1, 0);
  let s_hi = min(i32(cj * jau.sx + jau.sx), i32(jau.w) - 1);
  for (var r = r_lo; r <= r_hi; r++) {
    let wr = ja_up_weight(u32(r), ci, jau.sy, jau.crh);
    if (wr == 0.0) { continue; }
    for (var s = s_lo; s <= s_hi; s++) {
      let ws = ja_up_weight(u32(s), cj, jau.sx, jau.crw);
      gc += (wr * ws) * ja_ycc_grad(b, u32(r), u32(s)).yz;
    }
  }
  // D^T: the cell average's weight for this pixel (the clamp maps the cell's overhang onto the last row / column).
  var ny = 1u;
  if (y == jau.h - 1u) { ny = ci * jau.sy + jau.sy - y; }
  var nx = 1u;
  if (x == jau.w - 1u) { nx = cj * jau.sx + jau.sx - x; }
  gc *= f32(ny * nx) / f32(jau.sx * jau.sy);
  let a = vec3<f32>(ja_ycc_grad(b, y, x).x, gc.x, gc.y);
  let plane = jau.h * jau.w;
  let at = b * 3u * plane + y * jau.w + x;
  for (var c = 0u; c < 3u; c++) {
    let m = vec3<f32>(jau.rgb2ycc[0][c], jau.rgb2ycc[1][c], jau.rgb2ycc[2][c]);
    ja_out[at + c * plane] = ST(dot(m, a));
  }
}
