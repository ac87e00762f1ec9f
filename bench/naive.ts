// Naive group norm + SiLU baseline (see kernels/naive.wgsl).
import naiveSource from '../kernels/naive.wgsl';
import type { Recorder } from '../src/engine/recorder.js';
import type { Tensor } from '../src/engine/tensor.js';
import { grid1d } from '../src/engine/ops/grid.js';

export function groupNormSiluNaive(rec: Recorder, x: Tensor, groups: number, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const e = rec.engine;
  const [n, c] = [x.shape[0]!, x.shape[1]!];
  const hw = x.size / (n * c);
  const rows = n * groups;
  const len = (c / groups) * hw;
  const stats = e.empty([rows * 2], 'f32', 'gn_stats');
  const k1 = e.kernel({ family: 'naive', source: naiveSource, entry: 'gn_stats_naive' });
  rec.dispatch(k1, { op: 'gn_stats_naive', bindings: { gn_x: x, gn_stats: stats }, uniforms: { rows, len, eps }, workgroups: Math.ceil(rows / 64) });
  const out = e.empty(x.shape, 'f32', 'gn_out');
  const k2 = e.kernel({ family: 'naive', source: naiveSource, entry: 'gn_apply_naive' });
  const g = grid1d(e, x.size, 64);
  rec.dispatch(k2, {
    op: 'gn_apply_naive',
    bindings: { ap_x: x, ap_stats: stats, ap_w: weight, ap_b: bias, ap_out: out },
    uniforms: { n: x.size, row: g.row, hw, channels: c, cpg: c / groups, groups },
    workgroups: g.workgroups,
  });
  stats.dispose();
  return out;
}
