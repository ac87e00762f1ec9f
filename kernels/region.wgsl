// Spatial regions of NCHW tensors, for tiled processing (diffusers' tiled VAE). N*C planes are
// independent, so every kernel sees [planes, H, W].
// copy_rect:  dst[p, dy + y, dx + x] = src[p, sy + y, sx + x] for a h x w rectangle: crops a tile out
//             of an image (into a fresh tensor) and pastes a tile's kept part into the result.
// blend_edge: diffusers' blend_v / blend_h, in place on tile b with its finished neighbour a:
//             vertical:   b[p, y, x] = a[p, ah - e + y, x] * (1 - y / e) + b[p, y, x] * (y / e), y < e
//             horizontal: b[p, y, x] = a[p, y, aw - e + x] * (1 - x / e) + b[p, y, x] * (x / e), x < e
// One thread per element on a 2-D grid (gid.x + gid.y * row).

struct Rect {
  n: u32,       // planes * h * w
  row: u32,
  h: u32,       // rectangle
  w: u32,
  src_h: u32,   // source plane
  src_w: u32,
  src_y: u32,   // rectangle origin in the source
  src_x: u32,
  dst_h: u32,   // destination plane
  dst_w: u32,
  dst_y: u32,
  dst_x: u32,
}

@group(0) @binding(0) var<storage, read> rsrc: array<ST>;
@group(0) @binding(1) var<storage, read_write> rdst: array<ST>;
@group(0) @binding(2) var<uniform> rr: Rect;

@compute @workgroup_size(WG)
fn copy_rect(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * rr.row;
  if (i >= rr.n) { return; }
  let x = i % rr.w;
  let y = (i / rr.w) % rr.h;
  let p = i / (rr.w * rr.h);
  let s = (p * rr.src_h + rr.src_y + y) * rr.src_w + rr.src_x + x;
  rdst[(p * rr.dst_h + rr.dst_y + y) * rr.dst_w + rr.dst_x + x] = rsrc[s];
}

struct Blend {
  n: u32,        // planes * (e * bw) (vertical) or planes * (bh * e) (horizontal)
  row: u32,
  e: u32,        // blend extent
  vertical: u32,
  ah: u32,       // neighbour a's plane
  aw: u32,
  bh: u32,       // tile b's plane
  bw: u32,
}

@group(0) @binding(3) var<storage, read> ba: array<ST>;
@group(0) @binding(4) var<storage, read_write> bb: array<ST>;
@group(0) @binding(5) var<uniform> bu: Blend;

@compute @workgroup_size(WG)
fn blend_edge(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * bu.row;
  if (i >= bu.n) { return; }
  // The blended strip: e rows of width bw, or bh rows of width e.
  var sw = bu.e;
  var sh = bu.bh;
  if (bu.vertical == 1u) {
    sw = bu.bw;
    sh = bu.e;
  }
  let x = i % sw;
  let y = (i / sw) % sh;
  let p = i / (sw * sh);
  var ai = 0u;
  var t = 0.0;
  if (bu.vertical == 1u) {
    ai = (p * bu.ah + bu.ah - bu.e + y) * bu.aw + x;
    t = f32(y) / f32(bu.e);
  } else {
    ai = (p * bu.ah + y) * bu.aw + bu.aw - bu.e + x;
    t = f32(x) / f32(bu.e);
  }
  let bi = (p * bu.bh + y) * bu.bw + x;
  bb[bi] = ST(f32(ba[ai]) * (1.0 - t) + f32(bb[bi]) * t);
}
