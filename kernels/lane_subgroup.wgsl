// Workgroup reductions with subgroup operations (the `subgroups` feature and the `subgroup_id` WGSL
// language feature): each subgroup reduces in registers, its first invocation stores the result in
// its subgroup's slot, and after one barrier every thread combines the slots in subgroup order. Two
// barriers per reduction, against lane_tree.wgsl's log2(WG) + 2; same interface as that file.
// The combination order differs from the tree's, so sums agree with it to rounding, not bit for bit.

struct Lane {
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) sid: u32,
  @builtin(subgroup_id) sg: u32,
  @builtin(num_subgroups) nsg: u32,
}

// One slot per subgroup; a subgroup has at least one invocation, so WG slots always suffice.
var<workgroup> lane_buf: array<f32, WG>;

fn wg_reduce(lane: Lane, mine: f32, is_max: bool) -> f32 {
  // Both operations run so that neither sits under a branch on a parameter (subgroup uniformity).
  let part = select(subgroupAdd(mine), subgroupMax(mine), is_max);
  if (lane.sid == 0u) { lane_buf[lane.sg] = part; }
  workgroupBarrier();
  var res = lane_buf[0];
  for (var k = 1u; k < lane.nsg; k++) {
    res = select(res + lane_buf[k], max(res, lane_buf[k]), is_max);
  }
  workgroupBarrier(); // lane_buf is reused by the next reduction
  return res;
}

fn wg_sum(lane: Lane, mine: f32) -> f32 {
  return wg_reduce(lane, mine, false);
}
