// Convolution family (NCHW activations, PyTorch weight layouts). Storage type ST, f32 accumulation.
//
// conv2d: implicit GEMM, M = output channels, N = output pixels, K = Cin/groups * KH * KW, register
// blocked: a thread owns CO output channels x 4 output pixels (a vec4 of accumulators per channel).
// The channel tile comes from the workgroup id, so every weight index is workgroup-uniform: CPU
// adapters load it once and broadcast it, GPUs hit the same cache line. Each input value loaded is
// reused for CO channels and each weight for 4 pixels. No workgroup memory, no barriers (fastest on
// lavapipe / SwiftShader, TOOLCHAIN.md section 4).
//
// The same entry computes a transposed convolution (TRANSPOSED) as a gather: output pixels are split
// into stride phase classes (workgroup_id.z = ry * sx + rx, output oy = ry + sy * qy); inside a class
// the taps that reach an output are the same for every pixel (kh = ry + py mod sy, stepping by sy),
// so no tap is wasted and the loop stays uniform. iy = qy + (ry + py - kh) / sy, exact division.
//
// conv2d_naive: one thread per output with a scalar loop over Cin*KH*KW (groups 1): the benchmark
// baseline, not used by models.

struct Conv {
  cin: u32,
  hw: u32,          // H * W of the input
  h: i32,
  w: i32,
  cout: u32,
  oh: u32,
  ow: u32,
  cig: u32,         // input channels per group
  cog: u32,         // output channels per group
  co_tiles: u32,    // channel tiles of CO per group (workgroup_id.y = group * co_tiles + tile)
  kh: u32,
  kw: u32,
  sy: i32,
  sx: i32,
  py: i32,
  px: i32,
  ph: u32,          // pixel grid per image: OH x OW, or one phase class (ceil(OH/sy) x ceil(OW/sx))
  pw: u32,
  pixels: u32,      // N * ph * pw
  wco: u32,         // weight element stride between output channels
  wci: u32,         // ... and between input channels of a group
  alpha: f32,       // leaky-relu slope
}

@group(0) @binding(0) var<storage, read> cx: array<ST>;
@group(0) @binding(1) var<storage, read> cwt: array<WT>;
@group(0) @binding(2) var<storage, read> cbias: array<WT>;
@group(0) @binding(3) var<storage, read_write> cy: array<ST>;
@group(0) @binding(4) var<uniform> cu: Conv;

@compute @workgroup_size(WG)
fn conv2d(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let grp = wid.y / cu.co_tiles;
  let col0 = (wid.y % cu.co_tiles) * CO;          // first channel of the tile, within the group
  let last = min(CO, cu.cog - col0) - 1u;         // last valid channel index in the tile
  var ry = 0u;
  var rx = 0u;
  if (TRANSPOSED) {
    ry = wid.z / u32(cu.sx);
    rx = wid.z % u32(cu.sx);
  }

  // Four pixels per thread, WG apart so neighbouring invocations read neighbouring inputs.
  let p = vec4u(wid.x * WG * 4u + lid.x) + vec4u(0u, WG, 2u * WG, 3u * WG);
  let pc = min(p, vec4u(cu.pixels - 1u));
  let plane = cu.ph * cu.pw;
  let img = pc / plane;
  let rem = pc % plane;
  let qa = vec4i(rem / cu.pw);
  let qb = vec4i(rem % cu.pw);
  let xbase = img * (cu.cin * cu.hw) + grp * cu.cig * cu.hw;
  let wbase = grp * cu.cog * cu.cig * cu.kh * cu.kw + col0 * cu.wco;

  var kh0 = 0u;
  var kw0 = 0u;
  var ksy = 1u;
  var ksx = 1u;
  if (TRANSPOSED) {
    ksy = u32(cu.sy);
    ksx = u32(cu.sx);
    kh0 = (ry + u32(cu.py)) % ksy;
    kw0 = (rx + u32(cu.px)) % ksx;
  }

  // Accumulators as named vectors, not an array: SwiftShader keeps a dynamically indexed array in
  // memory (measured ~15x slower). CO is 1, 2, 4 or 8; the constant branches fold away.
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  var acc4 = vec4f(0.0);
  var acc5 = vec4f(0.0);
  var acc6 = vec4f(0.0);
  var acc7 = vec4f(0.0);
  // Weight offsets of the tile's channels; channels past the group's end repeat the last one (their
  // results are never stored).
  let c1 = min(1u, last) * cu.wco;
  let c2 = min(2u, last) * cu.wco;
  let c3 = min(3u, last) * cu.wco;
  let c4 = min(4u, last) * cu.wco;
  let c5 = min(5u, last) * cu.wco;
  let c6 = min(6u, last) * cu.wco;
  let c7 = min(7u, last) * cu.wco;
  for (var kh = kh0; kh < cu.kh; kh += ksy) {
    var iy: vec4i;
    if (TRANSPOSED) {
      iy = qa + (i32(ry) + cu.py - i32(kh)) / cu.sy;
    } else {
      iy = qa * cu.sy + (i32(kh) - cu.py);
    }
    let vy = (iy >= vec4i(0)) & (iy < vec4i(cu.h));
    for (var kw = kw0; kw < cu.kw; kw += ksx) {
      var ix: vec4i;
      if (TRANSPOSED) {
        ix = qb + (i32(rx) + cu.px - i32(kw)) / cu.sx;
      } else {
        ix = qb * cu.sx + (i32(kw) - cu.px);
      }
      let valid = vy & (ix >= vec4i(0)) & (ix < vec4i(cu.w));
      // Out-of-image taps read a safe in-range element and are zeroed by the select below.
      let off = select(xbase, xbase + vec4u(iy * cu.w + ix), valid);
      let wk = wbase + kh * cu.kw + kw;
      for (var ci = 0u; ci < cu.cig; ci++) {
        let xo = off + vec4u(ci * cu.hw);
        let xv = select(vec4f(0.0), vec4f(f32(cx[xo.x]), f32(cx[xo.y]), f32(cx[xo.z]), f32(cx[xo.w])), valid);
        let wo = wk + ci * cu.wci;
        acc0 = fma(vec4f(f32(cwt[wo])), xv, acc0);
        if (CO > 1u) {
          acc1 = fma(vec4f(f32(cwt[wo + c1])), xv, acc1);
        }
        if (CO > 2u) {
          acc2 = fma(vec4f(f32(cwt[wo + c2])), xv, acc2);
          acc3 = fma(vec4f(f32(cwt[wo + c3])), xv, acc3);
        }
        if (CO > 4u) {
          acc4 = fma(vec4f(f32(cwt[wo + c4])), xv, acc4);
          acc5 = fma(vec4f(f32(cwt[wo + c5])), xv, acc5);
          acc6 = fma(vec4f(f32(cwt[wo + c6])), xv, acc6);
          acc7 = fma(vec4f(f32(cwt[wo + c7])), xv, acc7);
        }
      }
    }
  }

  var oy = qa;
  var ox = qb;
  if (TRANSPOSED) {
    oy = vec4i(i32(ry)) + qa * cu.sy;
    ox = vec4i(i32(rx)) + qb * cu.sx;
  }
  let ok = (p < vec4u(cu.pixels)) & (vec4u(oy) < vec4u(cu.oh)) & (vec4u(ox) < vec4u(cu.ow));
  let co0 = grp * cu.cog + col0;
  let obase = (img * cu.cout + co0) * (cu.oh * cu.ow) + vec4u(oy) * cu.ow + vec4u(ox);
  store_tile(0u, acc0, co0, obase, ok);
  if (CO > 1u && last >= 1u) { store_tile(1u, acc1, co0, obase, ok); }
  if (CO > 2u && last >= 2u) { store_tile(2u, acc2, co0, obase, ok); }
  if (CO > 2u && last >= 3u) { store_tile(3u, acc3, co0, obase, ok); }
  if (CO > 4u && last >= 4u) { store_tile(4u, acc4, co0, obase, ok); }
  if (CO > 4u && last >= 5u) { store_tile(5u, acc5, co0, obase, ok); }
  if (CO > 4u && last >= 6u) { store_tile(6u, acc6, co0, obase, ok); }
  if (CO > 4u && last >= 7u) { store_tile(7u, acc7, co0, obase, ok); }
}

// Bias, activation and the store of channel co0 + i for the thread's 4 pixels.
fn store_tile(i: u32, sums: vec4f, co0: u32, obase: vec4u, ok: vec4<bool>) {
  var bv = 0.0;
  if (HAS_BIAS) {
    bv = f32(cbias[co0 + i]);
  }
  let o = obase + vec4u(i * cu.oh * cu.ow);
  if (ok.x) { cy[o.x] = ST(activate(ACT, sums.x + bv, cu.alpha)); }
  if (ok.y) { cy[o.y] = ST(activate(ACT, sums.y + bv, cu.alpha)); }
  if (ok.z) { cy[o.z] = ST(activate(ACT, sums.z + bv, cu.alpha)); }
  if (ok.w) { cy[o.w] = ST(activate(ACT, sums.w + bv, cu.alpha)); }
}

// conv3x3_px8: 3x3 taps, stride 1, padding 1, one group, W % 8 == 0 (SD's 3x3 convolutions and, with
// flipped taps and swapped weight strides, their input gradients). Like conv2d a thread owns CO channels
// (workgroup-uniform weights), but 8 pixels adjacent in a row: each kernel row needs two aligned vec4
// loads and two scalar neighbours per thread for its three taps (conv2d: 12 scalar loads for 4 pixels),
// and each weight loaded feeds 8 pixels. CPU adapters run a non-uniform load as a loop over the lanes
// and a uniform one with a bounds check each, so both counts matter there.
struct Conv3 {
  cin: u32,
  h: u32,
  w: u32,
  cout: u32,
  quads: u32,       // N * H * W / 8: 8 pixels per thread
  wco: u32,         // weight element stride between output channels
  wci: u32,         // ... and between input channels
  flip: u32,        // 1: tap (kh, kw) reads weight tap (2 - kh, 2 - kw)
  alpha: f32,
}

@group(0) @binding(14) var<storage, read> q3x: array<ST>;
@group(0) @binding(15) var<storage, read> q3x4: array<ST4>;
@group(0) @binding(16) var<storage, read> q3w: array<WT>;
@group(0) @binding(17) var<storage, read> q3b: array<WT>;
@group(0) @binding(18) var<storage, read_write> q3y: array<ST4>;
@group(0) @binding(19) var<uniform> k3u: Conv3;

// Weight of tap (kh, kw) at offset `base` of a (channel, input channel) pair.
fn w3(base: u32, kh: u32, kw: u32) -> f32 {
  return f32(q3w[base + select(kh * 3u + kw, 8u - kh * 3u - kw, k3u.flip == 1u)]);
}

// One channel's three taps of a kernel row over the thread's 8 pixels (x0/x1/x2: the inputs under
// taps 0/1/2, two vec4 columns each).
fn taps3(acc: mat2x4f, wo: u32, kh: u32, x0: mat2x4f, x1: mat2x4f, x2: mat2x4f) -> mat2x4f {
  return acc + w3(wo, kh, 0u) * x0 + w3(wo, kh, 1u) * x1 + w3(wo, kh, 2u) * x2;
}

@compute @workgroup_size(WG)
fn conv3x3_px8(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let col0 = wid.y * CO;
  let last = min(CO, k3u.cout - col0) - 1u;
  let q = wid.x * WG + lid.x;
  let qc = min(q, k3u.quads - 1u);
  let w8 = k3u.w / 8u;
  let plane = k3u.h * k3u.w;
  let img = qc / (k3u.h * w8);
  let rem = qc % (k3u.h * w8);
  let oy = rem / w8;
  let qx = rem % w8;
  let has_l = qx > 0u;
  let has_r = qx + 1u < w8;
  let xbase = img * k3u.cin * plane + 8u * qx;
  var acc0 = mat2x4f();
  var acc1 = mat2x4f();
  var acc2 = mat2x4f();
  var acc3 = mat2x4f();
  var acc4 = mat2x4f();
  var acc5 = mat2x4f();
  var acc6 = mat2x4f();
  var acc7 = mat2x4f();
  let c1 = min(1u, last) * k3u.wco;
  let c2 = min(2u, last) * k3u.wco;
  let c3 = min(3u, last) * k3u.wco;
  let c4 = min(4u, last) * k3u.wco;
  let c5 = min(5u, last) * k3u.wco;
  let c6 = min(6u, last) * k3u.wco;
  let c7 = min(7u, last) * k3u.wco;
  let wb = col0 * k3u.wco;
  for (var kh = 0u; kh < 3u; kh++) {
    let iy = i32(oy) + i32(kh) - 1;
    let row_ok = iy >= 0 && iy < i32(k3u.h);
    let rowe = xbase + u32(clamp(iy, 0, i32(k3u.h) - 1)) * k3u.w;
    for (var ci = 0u; ci < k3u.cin; ci++) {
      let e = rowe + ci * plane;
      let m0 = select(vec4f(0.0), vec4f(q3x4[e / 4u]), row_ok);
      let m1 = select(vec4f(0.0), vec4f(q3x4[e / 4u + 1u]), row_ok);
      let lv = select(0.0, f32(q3x[select(e, e - 1u, has_l)]), has_l && row_ok);
      let rv = select(0.0, f32(q3x[select(e, e + 8u, has_r)]), has_r && row_ok);
      let x0 = mat2x4f(vec4f(lv, m0.x, m0.y, m0.z), vec4f(m0.w, m1.x, m1.y, m1.z));
      let x1 = mat2x4f(m0, m1);
      let x2 = mat2x4f(vec4f(m0.y, m0.z, m0.w, m1.x), vec4f(m1.y, m1.z, m1.w, rv));
      let wo = wb + ci * k3u.wci;
      acc0 = taps3(acc0, wo, kh, x0, x1, x2);
      if (CO > 1u) { acc1 = taps3(acc1, wo + c1, kh, x0, x1, x2); }
      if (CO > 2u) {
        acc2 = taps3(acc2, wo + c2, kh, x0, x1, x2);
        acc3 = taps3(acc3, wo + c3, kh, x0, x1, x2);
      }
      if (CO > 4u) {
        acc4 = taps3(acc4, wo + c4, kh, x0, x1, x2);
        acc5 = taps3(acc5, wo + c5, kh, x0, x1, x2);
        acc6 = taps3(acc6, wo + c6, kh, x0, x1, x2);
        acc7 = taps3(acc7, wo + c7, kh, x0, x1, x2);
      }
    }
  }
  if (q >= k3u.quads) { return; }
  let ob = ((img * k3u.cout + col0) * plane + oy * k3u.w) / 4u + 2u * qx;
  let step = plane / 4u;
  store3(0u, acc0, col0, ob);
  if (CO > 1u && last >= 1u) { store3(1u, acc1, col0, ob + step); }
  if (CO > 2u && last >= 2u) { store3(2u, acc2, col0, ob + 2u * step); }
  if (CO > 2u && last >= 3u) { store3(3u, acc3, col0, ob + 3u * step); }
  if (CO > 4u && last >= 4u) { store3(4u, acc4, col0, ob + 4u * step); }
  if (CO > 4u && last >= 5u) { store3(5u, acc5, col0, ob + 5u * step); }
  if (CO > 4u && last >= 6u) { store3(6u, acc6, col0, ob + 6u * step); }
  if (CO > 4u && last >= 7u) { store3(7u, acc7, col0, ob + 7u * step); }
}

fn act4(v: vec4f) -> vec4f {
  return vec4f(activate(ACT, v.x, k3u.alpha), activate(ACT, v.y, k3u.alpha), activate(ACT, v.z, k3u.alpha), activate(ACT, v.w, k3u.alpha));
}

fn store3(i: u32, sums: mat2x4f, col0: u32, at: u32) {
  var bv = 0.0;
  if (HAS_BIAS) { bv = f32(q3b[col0 + i]); }
  q3y[at] = ST4(act4(sums[0] + bv));
  q3y[at + 1u] = ST4(act4(sums[1] + bv));
}

// conv3x3_igemm: the GPU variant of the 3x3 / stride 1 / padding 1 convolution (and, with flipped taps
// and swapped weight strides, its input gradient), as an implicit GEMM: C[cout, pixel] = W[cout, k] X[k,
// pixel] with k = ci * 9 + tap and X the input patch under each tap (never stored). A 16 x 16 workgroup
// computes 64 output channels x 64 pixels, each thread 4 x 4; K is walked in slabs of 16 taps staged
// in workgroup memory (weights as vec4s of 4 channels, patches as vec4s of 4 pixels), so each value read
// from storage feeds 64 FMAs. Pixels index N * H * W; each thread decodes its 4 load pixels once.
struct Igemm {
  cin: u32,
  h: u32,
  w: u32,
  cout: u32,
  pixels: u32,      // N * H * W
  k: u32,           // cin * 9
  wco: u32,         // weight element stride between output channels
  wci: u32,         // ... and between input channels
  flip: u32,        // 1: tap (kh, kw) reads weight tap (2 - kh, 2 - kw)
  alpha: f32,
}

@group(0) @binding(20) var<storage, read> igx: array<ST>;
@group(0) @binding(21) var<storage, read> igw: array<WT>;
@group(0) @binding(22) var<storage, read> igb: array<WT>;
@group(0) @binding(23) var<storage, read_write> igy: array<ST>;
@group(0) @binding(24) var<uniform> igu: Igemm;

var<workgroup> ig_tw: array<vec4f, 256>;   // [k][m / 4]: weights of 4 output channels
var<workgroup> ig_tx: array<vec4f, 256>;   // [k][p / 4]: patch values of 4 pixels

@compute @workgroup_size(16, 16)
fn conv3x3_igemm(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let li = lid.y * 16u + lid.x;
  let m0 = wid.y * 64u;
  let p0 = wid.x * 64u;
  let hw = igu.h * igu.w;
  // Loads: output channels / pixels 4 (li % 16) .. +3 of the block, at slab row li / 16.
  let lk = li / 16u;
  let lq = (li % 16u) * 4u;
  var wrow = vec4u();
  var pimg = vec4u();
  var py = vec4i();
  var px = vec4i();
  var pin = vec4<bool>();
  for (var j = 0u; j < 4u; j++) {
    wrow[j] = min(m0 + lq + j, igu.cout - 1u) * igu.wco;
    let p = p0 + lq + j;
    pin[j] = p < igu.pixels;
    let pc = min(p, igu.pixels - 1u);
    pimg[j] = pc / hw;
    let rem = pc - pimg[j] * hw;
    py[j] = i32(rem / igu.w);
    px[j] = i32(rem % igu.w);
  }
  var acc0 = vec4f(); var acc1 = vec4f(); var acc2 = vec4f(); var acc3 = vec4f();
  for (var k0 = 0u; k0 < igu.k; k0 += 16u) {
    let k = k0 + lk;
    let kin = k < igu.k;
    let kc = min(k, igu.k - 1u);
    let ci = kc / 9u;
    let tap = kc - ci * 9u;
    let wtap = select(tap, 8u - tap, igu.flip == 1u);
    let wo = ci * igu.wci + wtap;
    let wv = vec4f(f32(igw[wrow.x + wo]), f32(igw[wrow.y + wo]), f32(igw[wrow.z + wo]), f32(igw[wrow.w + wo]));
    ig_tw[lk * 16u + li % 16u] = select(vec4f(), wv, kin);
    let ky = i32(tap / 3u) - 1;
    let kx = i32(tap % 3u) - 1;
    var xv = vec4f();
    for (var j = 0u; j < 4u; j++) {
      let iy = py[j] + ky;
      let ix = px[j] + kx;
      let ok = kin && pin[j] && iy >= 0 && iy < i32(igu.h) && ix >= 0 && ix < i32(igu.w);
      let at = (pimg[j] * igu.cin + ci) * hw + u32(clamp(iy, 0, i32(igu.h) - 1)) * igu.w + u32(clamp(ix, 0, i32(igu.w) - 1));
      xv[j] = select(0.0, f32(igx[at]), ok);
    }
    ig_tx[lk * 16u + li % 16u] = xv;
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      let a = ig_tw[kk * 16u + lid.y];
      let b = ig_tx[kk * 16u + lid.x];
      acc0 += a.x * b;
      acc1 += a.y * b;
      acc2 += a.z * b;
      acc3 += a.w * b;
    }
    workgroupBarrier();
  }
  var res = array<vec4f, 4>(acc0, acc1, acc2, acc3);
  for (var j = 0u; j < 4u; j++) {
    let p = p0 + lid.x * 4u + j;
    if (p >= igu.pixels) { break; }
    let img = p / hw;
    let rem = p - img * hw;
    for (var i = 0u; i < 4u; i++) {
      let co = m0 + lid.y * 4u + i;
      if (co < igu.cout) {
        var v = res[i][j];
        if (HAS_BIAS) { v += f32(igb[co]); }
        igy[(img * igu.cout + co) * hw + rem] = ST(activate(ACT, v, igu.alpha));
      }
    }
  }
}

struct Naive {
  total: u32,       // N * Cout * OH * OW
  row: u32,         // threads per grid row
  cin: u32,
  h: i32,
  w: i32,
  cout: u32,
  oh: u32,
  ow: u32,
  kh: u32,
  kw: u32,
  sy: i32,
  sx: i32,
  py: i32,
  px: i32,
}

@group(0) @binding(5) var<storage, read> nx: array<ST>;
@group(0) @binding(6) var<storage, read> nwt: array<WT>;
@group(0) @binding(7) var<storage, read> nbias: array<WT>;
@group(0) @binding(8) var<storage, read_write> ny: array<ST>;
@group(0) @binding(9) var<uniform> nu: Naive;

@compute @workgroup_size(WG)
fn conv2d_naive(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x + gid.y * nu.row;
  if (idx >= nu.total) { return; }
  let ox = idx % nu.ow;
  let oy = (idx / nu.ow) % nu.oh;
  let co = (idx / (nu.ow * nu.oh)) % nu.cout;
  let img = idx / (nu.ow * nu.oh * nu.cout);
  var sum = 0.0;
  if (HAS_BIAS) {
    sum = f32(nbias[co]);
  }
  for (var ci = 0u; ci < nu.cin; ci++) {
    for (var kh = 0u; kh < nu.kh; kh++) {
      let iy = i32(oy) * nu.sy - nu.py + i32(kh);
      for (var kw = 0u; kw < nu.kw; kw++) {
        let ix = i32(ox) * nu.sx - nu.px + i32(kw);
        if (iy >= 0 && iy < nu.h && ix >= 0 && ix < nu.w) {
          let xi = ((img * nu.cin + ci) * u32(nu.h) + u32(iy)) * u32(nu.w) + u32(ix);
          let wi = ((co * nu.cin + ci) * nu.kh + kh) * nu.kw + kw;
          sum += f32(nx[xi]) * f32(nwt[wi]);
        }
      }
    }
  }
  ny[idx] = ST(sum);
}

// ---- Backward: weight gradient (f32). ----
//
// conv2d_grad_weight: dW[o, i, kh, kw] = sum over (img, ly, lx) of L[img, o, ly, lx] *
// G[img, i, ly * sy - py + kh, lx * sx - px + kw] (zero outside G), per group. An implicit GEMM with
// M = weight dim-0 channels, N = taps (i, kh, kw), K = N * LH * LW, blocked like the forward: a
// thread owns CO channels (from the workgroup id, so every L load is workgroup-uniform) x 4 taps (WG
// apart); each gathered G value feeds CO FMAs. The same entry serves both convolutions:
//   conv2d:           L = gradOut (o = output channel), G = input x   (i = input channel in group)
//   conv_transpose2d: L = input x (o = input channel),  G = gradOut   (i = output channel in group)
struct ConvGradW {
  nimg: u32,
  lc: u32,          // channels of L
  lh: u32,
  lw: u32,
  gc: u32,          // channels of G
  gh: i32,
  gw: i32,
  cig: u32,         // weight dim-1 channels (per group)
  cog: u32,         // weight dim-0 channels per group
  co_tiles: u32,    // CO tiles per group (workgroup_id.y = group * co_tiles + tile)
  kh: u32,
  kw: u32,
  taps: u32,        // cig * kh * kw
  sy: i32,
  sx: i32,
  py: i32,
  px: i32,
}

@group(0) @binding(10) var<storage, read> dw_l: array<ST>;
@group(0) @binding(11) var<storage, read> dw_g: array<ST>;
@group(0) @binding(12) var<storage, read_write> dw_out: array<ST>;
@group(0) @binding(13) var<uniform> dwu: ConvGradW;

@compute @workgroup_size(WG)
fn conv2d_grad_weight(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let grp = wid.y / dwu.co_tiles;
  let col0 = (wid.y % dwu.co_tiles) * CO;
  let last = min(CO, dwu.cog - col0) - 1u;
  let tap = vec4u(wid.x * WG * 4u + lid.x) + vec4u(0u, WG, 2u * WG, 3u * WG);
  let tc = min(tap, vec4u(dwu.taps - 1u));
  let kk = dwu.kh * dwu.kw;
  let khv = vec4i((tc % kk) / dwu.kw);
  let kwv = vec4i(tc % dwu.kw);
  let ghw = u32(dwu.gh * dwu.gw);
  let lhw = dwu.lh * dwu.lw;
  let gch = (grp * dwu.cig + tc / kk) * ghw;
  let lch = (grp * dwu.cog + col0) * lhw;
  // L offsets of the tile's channels; channels past the group's end repeat the last (never stored).
  let c1 = min(1u, last) * lhw;
  let c2 = min(2u, last) * lhw;
  let c3 = min(3u, last) * lhw;
  let c4 = min(4u, last) * lhw;
  let c5 = min(5u, last) * lhw;
  let c6 = min(6u, last) * lhw;
  let c7 = min(7u, last) * lhw;
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  var acc4 = vec4f(0.0);
  var acc5 = vec4f(0.0);
  var acc6 = vec4f(0.0);
  var acc7 = vec4f(0.0);
  for (var img = 0u; img < dwu.nimg; img++) {
    let gbase = img * dwu.gc * ghw;
    let lbase = img * dwu.lc * lhw + lch;
    for (var ly = 0u; ly < dwu.lh; ly++) {
      let iy = vec4i(i32(ly) * dwu.sy - dwu.py) + khv;
      let vy = (iy >= vec4i(0)) & (iy < vec4i(dwu.gh));
      let lrow = lbase + ly * dwu.lw;
      for (var lx = 0u; lx < dwu.lw; lx++) {
        let ix = vec4i(i32(lx) * dwu.sx - dwu.px) + kwv;
        let valid = vy & (ix >= vec4i(0)) & (ix < vec4i(dwu.gw));
        // Out-of-range taps read a safe in-range element and are zeroed by the select.
        let go = select(vec4u(gbase), vec4u(gbase) + gch + vec4u(iy * dwu.gw + ix), valid);
        let gv = select(vec4f(0.0), vec4f(f32(dw_g[go.x]), f32(dw_g[go.y]), f32(dw_g[go.z]), f32(dw_g[go.w])), valid);
        let lo = lrow + lx;
        acc0 = fma(vec4f(f32(dw_l[lo])), gv, acc0);
        if (CO > 1u) {
          acc1 = fma(vec4f(f32(dw_l[lo + c1])), gv, acc1);
        }
        if (CO > 2u) {
          acc2 = fma(vec4f(f32(dw_l[lo + c2])), gv, acc2);
          acc3 = fma(vec4f(f32(dw_l[lo + c3])), gv, acc3);
        }
        if (CO > 4u) {
          acc4 = fma(vec4f(f32(dw_l[lo + c4])), gv, acc4);
          acc5 = fma(vec4f(f32(dw_l[lo + c5])), gv, acc5);
          acc6 = fma(vec4f(f32(dw_l[lo + c6])), gv, acc6);
          acc7 = fma(vec4f(f32(dw_l[lo + c7])), gv, acc7);
        }
      }
    }
  }
  let row0 = grp * dwu.cog + col0;
  store_grad_w(0u, acc0, row0, tap);
  if (CO > 1u && last >= 1u) { store_grad_w(1u, acc1, row0, tap); }
  if (CO > 2u && last >= 2u) { store_grad_w(2u, acc2, row0, tap); }
  if (CO > 2u && last >= 3u) { store_grad_w(3u, acc3, row0, tap); }
  if (CO > 4u && last >= 4u) { store_grad_w(4u, acc4, row0, tap); }
  if (CO > 4u && last >= 5u) { store_grad_w(5u, acc5, row0, tap); }
  if (CO > 4u && last >= 6u) { store_grad_w(6u, acc6, row0, tap); }
  if (CO > 4u && last >= 7u) { store_grad_w(7u, acc7, row0, tap); }
}

// Weight-gradient row row0 + i (dim-0 channel), the thread's 4 taps.
fn store_grad_w(i: u32, sums: vec4f, row0: u32, tap: vec4u) {
  let o = (row0 + i) * dwu.taps + tap;
  if (tap.x < dwu.taps) { dw_out[o.x] = ST(sums.x); }
  if (tap.y < dwu.taps) { dw_out[o.y] = ST(sums.y); }
  if (tap.z < dwu.taps) { dw_out[o.z] = ST(sums.z); }
  if (tap.w < dwu.taps) { dw_out[o.w] = ST(sums.w); }
}
