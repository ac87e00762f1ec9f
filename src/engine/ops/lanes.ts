// Which workgroup-reduction include a kernel family gets: subgroup operations where the engine uses
// them (engine.subgroupReductions), else the tree in workgroup memory. Both define `struct Lane`,
// `wg_reduce` and `wg_sum` with the same signatures, so the families' WGSL is written once.

import treeSource from '../../../kernels/lane_tree.wgsl';
import subgroupSource from '../../../kernels/lane_subgroup.wgsl';
import type { Engine } from '../device.js';

/** KernelSpec fields for a family that reduces across workgroups: its other includes, then the lane include. */
export function laneIncludes(engine: Engine, includes: string[] = []): { includes: string[]; subgroups: boolean } {
  const on = engine.subgroupReductions;
  return { includes: [...includes, on ? subgroupSource : treeSource], subgroups: on };
}
