// Runs a test file's kernel tests once per workgroup-reduction form (kernels/lane_tree.wgsl and
// kernels/lane_subgroup.wgsl), switching the shared engine between them. An adapter that cannot
// reduce with subgroups reports the subgroup form's tests as skipped, never as passed.

import { afterAll, beforeAll, beforeEach, describe } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { getEngine } from './engine.js';

export const REDUCTION_FORMS = ['tree', 'subgroups'] as const;

export function describeReductions(body: () => void): void {
  for (const form of REDUCTION_FORMS) {
    describe(`${form} reductions`, () => {
      let engine: Engine;
      let before = false;
      beforeAll(async () => {
        engine = await getEngine();
        before = engine.subgroupReductions;
      });
      beforeEach((ctx) => {
        if (form === 'subgroups' && !engine.canSubgroupReduce) {
          ctx.skip('this adapter cannot reduce with subgroups (no subgroups feature or subgroup_id language feature)');
        }
        engine.subgroupReductions = form === 'subgroups';
      });
      afterAll(() => {
        engine.subgroupReductions = before;
      });
      body();
    });
  }
}
