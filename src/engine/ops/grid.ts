// Launch geometry helpers shared by ops.

import type { Engine } from '../device.js';

/**
 * A 2-D grid covering `n` threads with workgroups of `wg` threads: returns the workgroup counts and
 * `row`, the threads per grid row, so the kernel's linear index is gid.x + gid.y * row.
 */
export function grid1d(engine: Engine, n: number, wg: number): { workgroups: [number, number]; row: number } {
  const maxDim = engine.limits.maxComputeWorkgroupsPerDimension;
  const groups = Math.max(1, Math.ceil(n / wg));
  if (groups <= maxDim) return { workgroups: [groups, 1], row: groups * wg };
  const x = maxDim;
  const y = Math.ceil(groups / x);
  return { workgroups: [x, y], row: x * wg };
}

/**
 * Whether the adapter runs the 16 x 16-thread kernels that stage tiles in workgroup memory (matmul_tiled,
 * conv3x3_igemm): 256 threads and 8 KiB of workgroup memory, both within WebGPU's default limits.
 */
export function workgroupTilesFit(engine: Engine): boolean {
  return engine.limits.maxComputeInvocationsPerWorkgroup >= 256 && engine.limits.maxComputeWorkgroupStorageSize >= 8192;
}

/** Largest power-of-two workgroup size <= preferred that the adapter allows. */
export function workgroupSize(engine: Engine, preferred = 256): number {
  let wg = preferred;
  while (wg > engine.limits.maxComputeInvocationsPerWorkgroup) wg >>= 1;
  return wg;
}
