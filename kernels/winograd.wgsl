// Winograd F(2x2, 3x3) for 3x3 / stride 1 / padding 1 convolutions (and their input gradients, which are
// the same convolution with flipped taps and swapped weight strides). The output is cut into 2x2 tiles;
// each tile needs a 4x4 input patch. With the transforms
//   BT = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   AT = [1 1 1 0; 0 1 -1 -1],
// the tile is AT [ sum_ci (G g G^T) .* (BT d B) ] A: 16 products per tile and channel pair instead of 36,
// and the channel sums are 16 independent matmuls U[xi] (Cout x Cin) @ V[xi] (Cin x tiles), which the
// matmul kernel runs (2.25x fewer multiply-adds than the direct convolution).
//   wino_weights: U[xi][co][ci] = (G g G^T)[xi], g = the 3x3 taps of (co, ci).
//   wino_input:   V[xi][ci][tile] = (BT d B)[xi], d the zero-padded 4x4 patch at (2 ty - 1, 2 tx - 1).
//   wino_output:  y[n][co][2 ty + i][2 tx + j] = act((AT M[.][co][tile] A)[i][j] + bias), cut to H x W.
// Transforms run in f32; U, V and M are f32 whatever the storage type of x and y.

struct WinoW {
  cout: u32,
  cin: u32,
  wco: u32,      // weight element stride between output channels
  wci: u32,      // ... and between input channels
  flip: u32,     // 1: tap (kh, kw) reads weight tap (2 - kh, 2 - kw)
  row: u32,      // threads per grid row
}

@group(0) @binding(0) var<storage, read> ww_in: array<WT>;
@group(0) @binding(1) var<storage, read_write> ww_out: array<f32>;
@group(0) @binding(2) var<uniform> uw: WinoW;

fn wtap(base: u32, kh: u32, kw: u32) -> f32 {
  return f32(ww_in[base + select(kh * 3u + kw, 8u - kh * 3u - kw, uw.flip == 1u)]);
}

// One thread per (co, ci): G g G^T, written to the 16 matrices.
@compute @workgroup_size(WG)
fn wino_weights(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * uw.row;
  if (i >= uw.cout * uw.cin) { return; }
  let co = i / uw.cin;
  let ci = i % uw.cin;
  let base = co * uw.wco + ci * uw.wci;
  // Rows of G g (4 x 3), then (G g) G^T (4 x 4).
  var gg: array<vec3f, 4>;
  for (var c = 0u; c < 3u; c++) {
    let g0 = wtap(base, 0u, c);
    let g1 = wtap(base, 1u, c);
    let g2 = wtap(base, 2u, c);
    gg[0][c] = g0;
    gg[1][c] = 0.5 * (g0 + g1 + g2);
    gg[2][c] = 0.5 * (g0 - g1 + g2);
    gg[3][c] = g2;
  }
  let plane = uw.cout * uw.cin;
  for (var r = 0u; r < 4u; r++) {
    let v = gg[r];
    let t = vec4f(v.x, 0.5 * (v.x + v.y + v.z), 0.5 * (v.x - v.y + v.z), v.z);
    for (var c = 0u; c < 4u; c++) { ww_out[(r * 4u + c) * plane + i] = t[c]; }
  }
}

struct WinoIn {
  cin: u32,
  h: u32,
  w: u32,
  th: u32,       // tile rows = ceil(H / 2)
  tw: u32,       // tile columns = ceil(W / 2)
  tiles: u32,    // N * th * tw (the matmul's N)
  row: u32,      // threads per grid row
}

@group(0) @binding(3) var<storage, read> wi_x: array<ST>;
@group(0) @binding(4) var<storage, read_write> wi_v: array<f32>;
@group(0) @binding(5) var<uniform> ui: WinoIn;

// A tile index -> (image, tile row, tile column) for th x tw tiles per image.
fn tile_pos(tile: u32, th: u32, tw: u32) -> vec3u {
  let per = th * tw;
  let t = tile % per;
  return vec3u(tile / per, t / tw, t % tw);
}

// One thread per (ci, tile): BT d B of its 4x4 patch.
@compute @workgroup_size(WG)
fn wino_input(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * ui.row;
  if (i >= ui.cin * ui.tiles) { return; }
  let ci = i / ui.tiles;
  let pos = tile_pos(i % ui.tiles, ui.th, ui.tw);
  let n = pos.x;
  let y0 = i32(pos.y) * 2 - 1;
  let x0 = i32(pos.z) * 2 - 1;
  let plane = ui.h * ui.w;
  let base = (n * ui.cin + ci) * plane;
  var d: array<vec4f, 4>;
  for (var r = 0u; r < 4u; r++) {
    let y = y0 + i32(r);
    let yok = y >= 0 && y < i32(ui.h);
    let rb = base + u32(clamp(y, 0, i32(ui.h) - 1)) * ui.w;
    var v = vec4f(0.0);
    for (var c = 0u; c < 4u; c++) {
      let x = x0 + i32(c);
      v[c] = select(0.0, f32(wi_x[rb + u32(clamp(x, 0, i32(ui.w) - 1))]), yok && x >= 0 && x < i32(ui.w));
    }
    d[r] = v;
  }
  // BT d (rows), then (BT d) B (columns).
  let e0 = d[0] - d[2];
  let e1 = d[1] + d[2];
  let e2 = d[2] - d[1];
  let e3 = d[1] - d[3];
  var rows = array<vec4f, 4>(e0, e1, e2, e3);
  let plane_v = ui.cin * ui.tiles;
  for (var r = 0u; r < 4u; r++) {
    let v = rows[r];
    let o = vec4f(v.x - v.z, v.y + v.z, v.z - v.y, v.y - v.w);
    for (var c = 0u; c < 4u; c++) { wi_v[(r * 4u + c) * plane_v + i] = o[c]; }
  }
}

struct WinoOut {
  cout: u32,
  h: u32,
  w: u32,
  th: u32,
  tw: u32,
  tiles: u32,
  row: u32,
  alpha: f32,    // leaky-relu slope
}

@group(0) @binding(6) var<storage, read> wo_m: array<f32>;
@group(0) @binding(7) var<storage, read> wo_bias: array<WT>;
@group(0) @binding(8) var<storage, read_write> wo_y: array<ST>;
@group(0) @binding(9) var<uniform> uo: WinoOut;

// One thread per (co, tile): AT M A, plus bias and the activation, cut to the image.
@compute @workgroup_size(WG)
fn wino_output(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * uo.row;
  if (i >= uo.cout * uo.tiles) { return; }
  let co = i / uo.tiles;
  let pos = tile_pos(i % uo.tiles, uo.th, uo.tw);
  let n = pos.x;
  let ty = pos.y;
  let tx = pos.z;
  let plane_m = uo.cout * uo.tiles;
  var m: array<vec4f, 4>;
  for (var r = 0u; r < 4u; r++) {
    m[r] = vec4f(wo_m[(r * 4u) * plane_m + i], wo_m[(r * 4u + 1u) * plane_m + i],
                 wo_m[(r * 4u + 2u) * plane_m + i], wo_m[(r * 4u + 3u) * plane_m + i]);
  }
  // AT m (2 x 4), then (AT m) A (2 x 2).
  let a0 = m[0] + m[1] + m[2];
  let a1 = m[1] - m[2] - m[3];
  var bv = 0.0;
  if (HAS_BIAS) { bv = f32(wo_bias[co]); }
  var out = array<vec2f, 2>(vec2f(a0.x + a0.y + a0.z, a0.y - a0.z - a0.w), vec2f(a1.x + a1.y + a1.z, a1.y - a1.z - a1.w));
  let base = (n * uo.cout + co) * uo.h * uo.w;
  for (var r = 0u; r < 2u; r++) {
    let y = ty * 2u + r;
    for (var c = 0u; c < 2u; c++) {
      let x = tx * 2u + c;
      if (y < uo.h && x < uo.w) { wo_y[base + y * uo.w + x] = ST(activate(ACT, out[r][c] + bv, uo.alpha)); }
    }
  }
}
