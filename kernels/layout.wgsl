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
