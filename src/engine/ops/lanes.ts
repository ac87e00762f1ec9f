// Which workgroup-reduction include a kernel family gets: subgroup operations where the engine uses
// them (engine.subgroupReductions), else the tree in workgroup memory. Both define `struct Lane`,
// `wg_reduce` and `wg_sum` with the same signatures, so the families' WGSL is written once.

import treeSource from '../../../kernels/lane_tree.wgsl';
import subgroupSource from '../../../kernels/lane_subgroup.wgsl';
import type { Engine } from '../device.js';

export interface LaneSpec {
  /** The include defining Lane / wg_reduce / wg_sum (place it after includes it does not depend on). */
  include: string;
  /** Set on the KernelSpec: the subgroup form needs `enable subgroups;`. */
  subgroups: boolean;
}

export function laneSpec(engine: Engine): LaneSpec {
  return engine.subgroupReductions ? { include: subgroupSource, subgroups: true } : { include: treeSource, subgroups: false };
}

/** KernelSpec fields for a family that reduces across workgroups: its other includes, then the lane include. */
export function laneIncludes(engine: Engine, includes: string[] = []): { includes: string[]; subgroups: boolean } {
  const lane = laneSpec(engine);
  return { includes: [...includes, lane.include], subgroups: lane.subgroups };
}
