// Channel-dimension layout ops on tensors [B, C, ...inner] (any rank >= 2, channels at index 1).
// copy_channels copies `count` channels of every batch item from channel src_off of the source to
// channel dst_off of the destination: concat is one dispatch per input, slice is one dispatch.
// One thread per copied element on a 2-D grid (gid.x + gid.y * row).

struct ChanCopy {
  n: u32,        // B * count * inner
  row: u32,
  inner: u32,    // product of the dims after the channel dim
  count: u32,
  src_c: u32,    // channels of the source
  src_off: u32,
  dst_c: u32,    // channels of the destination
  dst_off: u32,
}

@group(0) @binding(0) var<storage, read> csrc: array<ST>;
@group(0) @binding(1) var<storage, read_write> cdst: array<ST>;
@group(0) @binding(2) var<uniform> cc: ChanCopy;

@compute @workgroup_size(WG)
fn copy_channels(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * cc.row;
  if (i >= cc.n) { return; }
  let r = i % cc.inner;
  let c = (i / cc.inner) % cc.count;
  let b = i / (cc.inner * cc.count);
  cdst[(b * cc.dst_c + cc.dst_off + c) * cc.inner + r] = csrc[(b * cc.src_c + cc.src_off + c) * cc.inner + r];
}

// ---- Backward (f32 storage only) ----
// place_channels: the gradient of a channel slice: out [B, C, inner] holds g [B, count, inner] in
// channels [start, start + count) and zeros elsewhere. One thread per output element (gather form,
// so the zeros need no separate clear). Concat's backward is a set of slices (copy_channels).

struct ChanPlace {
  n: u32,        // B * C * inner
  row: u32,
  inner: u32,
  c: u32,        // channels of the output
  start: u32,
  count: u32,
}

@group(0) @binding(3) var<storage, read> pl_g: array<ST>;
@group(0) @binding(4) var<storage, read_write> pl_out: array<ST>;
@group(0) @binding(5) var<uniform> pl: ChanPlace;

@compute @workgroup_size(WG)
fn place_channels(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * pl.row;
  if (i >= pl.n) { return; }
  let r = i % pl.inner;
  let c = (i / pl.inner) % pl.c;
  let b = i / (pl.inner * pl.c);
  var v = 0.0;
  if (c >= pl.start && c < pl.start + pl.count) { v = f32(pl_g[(b * pl.count + c - pl.start) * pl.inner + r]); }
  pl_out[i] = ST(v);
}
