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
