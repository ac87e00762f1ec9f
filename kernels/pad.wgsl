// Spatial padding of NCHW tensors (N*C planes are independent, so the kernel sees [planes, H, W]):
// out[p, y, x] = in[p, src(y - top, H), src(x - left, W)], where src() maps an index outside [0, L)
//   mode 0 (reflect, torch ReflectionPad2d; the edge is not repeated): -i, or 2(L - 1) - i
//   mode 1 (replicate, torch ReplicationPad2d): clamp to [0, L - 1]
//   mode 2 (zeros): the output is 0
// One thread per output element on a 2-D grid (gid.x + gid.y * row).

struct Pad {
  n: u32,       // planes * out_h * out_w
  row: u32,
  h: u32,       // input plane
  w: u32,
  out_h: u32,
  out_w: u32,
  top: i32,
  left: i32,
  mode: u32,
}

@group(0) @binding(0) var<storage, read> pad_in: array<ST>;
@group(0) @binding(1) var<storage, read_write> pad_out: array<ST>;
@group(0) @binding(2) var<uniform> pu: Pad;

/** Source index for i along an axis of length len; -1 when the element is padding zero. */
fn pad_source(i: i32, len: i32) -> i32 {
  if (i >= 0 && i < len) { return i; }
  if (pu.mode == 2u) { return -1; }
  if (pu.mode == 1u) { return clamp(i, 0, len - 1); }
  if (i < 0) { return -i; }
  return 2 * (len - 1) - i;
}

@compute @workgroup_size(WG)
fn pad2d(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * pu.row;
  if (i >= pu.n) { return; }
  let ox = i % pu.out_w;
  let oy = (i / pu.out_w) % pu.out_h;
  let p = i / (pu.out_w * pu.out_h);
  let sy = pad_source(i32(oy) - pu.top, i32(pu.h));
  let sx = pad_source(i32(ox) - pu.left, i32(pu.w));
  if (sy < 0 || sx < 0) {
    pad_out[i] = ST(0.0);
    return;
  }
  pad_out[i] = pad_in[(p * pu.h + u32(sy)) * pu.w + u32(sx)];
}

// ---- pad2d_backward: the adjoint (VJP) of pad2d, in gather form (one thread per input element sums
// every output element that copied it: deterministic, no atomics). Along each axis the outputs that
// read input index i form at most three ranges [lo, hi]:
//   reflect:   i itself (+ before), its mirror in the leading pad (o = before - i, for 1 <= i <= before)
//              and in the trailing pad (o = before + len + j with j = len - 2 - i, for 0 <= j < after);
//   replicate: one range, widened to the whole leading / trailing pad for the edge elements;
//   zeros:     i + before only.

struct PadBackward {
  n: u32,       // planes * h * w (input elements)
  row: u32,
  h: u32,       // input plane
  w: u32,
  out_h: u32,
  out_w: u32,
  top: i32,
  bottom: i32,
  left: i32,
  right: i32,
  mode: u32,
}

@group(0) @binding(3) var<storage, read> pad_grad_out: array<ST>;
@group(0) @binding(4) var<storage, read_write> pad_grad_in: array<ST>;
@group(0) @binding(5) var<uniform> pbu: PadBackward;

/** The k-th (k < 3) range of output indices copying input index i along an axis; empty when hi < lo. */
fn pad_back_range(k: u32, i: i32, len: i32, before: i32, after: i32) -> vec2<i32> {
  let no_range = vec2<i32>(0, -1);
  if (k == 0u) {
    var lo = i + before;
    var hi = i + before;
    if (pbu.mode == 1u) {
      if (i == 0) { lo = 0; }
      if (i == len - 1) { hi = before + len - 1 + after; }
    }
    return vec2<i32>(lo, hi);
  }
  if (pbu.mode != 0u) { return no_range; }
  if (k == 1u) {
    if (i >= 1 && i <= before) { return vec2<i32>(before - i, before - i); }
    return no_range;
  }
  let j = len - 2 - i;
  if (j >= 0 && j < after) { return vec2<i32>(before + len + j, before + len + j); }
  return no_range;
}

@compute @workgroup_size(WG)
fn pad2d_backward(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * pbu.row;
  if (i >= pbu.n) { return; }
  let ix = i32(i % pbu.w);
  let iy = i32((i / pbu.w) % pbu.h);
  let p = i / (pbu.w * pbu.h);
  var acc: f32 = 0.0;
  for (var a = 0u; a < 3u; a++) {
    let ry = pad_back_range(a, iy, i32(pbu.h), pbu.top, pbu.bottom);
    for (var oy = ry.x; oy <= ry.y; oy++) {
      let base = (p * pbu.out_h + u32(oy)) * pbu.out_w;
      for (var b = 0u; b < 3u; b++) {
        let rx = pad_back_range(b, ix, i32(pbu.w), pbu.left, pbu.right);
        for (var ox = rx.x; ox <= rx.y; ox++) {
          acc += f32(pad_grad_out[base + u32(ox)]);
        }
      }
    }
  }
  pad_grad_in[i] = ST(acc);
}
