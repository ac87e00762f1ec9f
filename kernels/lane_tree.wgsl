// Workgroup reductions as a tree in workgroup memory: log2(WG) + 2 barriers per reduction. Works on
// every adapter. lane_subgroup.wgsl has the same interface with subgroup operations; a kernel family
// that reduces across its workgroup includes one of the two (src/engine/ops/lanes.ts picks which) and
// takes `lane: Lane` as an entry-point parameter. WG (the workgroup size) must be a power of two.

struct Lane {
  @builtin(local_invocation_index) lid: u32,
}

var<workgroup> lane_buf: array<f32, WG>;

// Workgroup max (is_max) or sum of one value per thread; every thread gets the result. Must be called
// in workgroup-uniform control flow.
fn wg_reduce(lane: Lane, mine: f32, is_max: bool) -> f32 {
  lane_buf[lane.lid] = mine;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off >>= 1u) {
    if (lane.lid < off) {
      let other = lane_buf[lane.lid + off];
      lane_buf[lane.lid] = select(lane_buf[lane.lid] + other, max(lane_buf[lane.lid], other), is_max);
    }
    workgroupBarrier();
  }
  let res = lane_buf[0];
  workgroupBarrier(); // lane_buf is reused by the next reduction
  return res;
}

fn wg_sum(lane: Lane, mine: f32) -> f32 {
  return wg_reduce(lane, mine, false);
}
