// Channel concat and slice for tensors [B, C, ...] of any rank >= 2 (channels at index 1), e.g.
// [B, C] and NCHW [B, C, H, W]: the UNet's skip-connection concat and chunking along channels.

import source from '../../../kernels/layout.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString, shapeSize } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

function copyChannels(rec: Recorder, op: string, src: Tensor, srcOff: number, dst: Tensor, dstOff: number, count: number): void {
  const engine = rec.engine;
  const inner = shapeSize(src.shape.slice(2));
  const n = src.shape[0]! * count * inner;
  if (n === 0) return;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'layout', source, entry: 'copy_channels', dtype: src.dtype, consts: { WG: wg } });
  const g = grid1d(engine, n, wg);
  rec.dispatch(k, {
    op,
    bindings: { csrc: src, cdst: dst },
    uniforms: {
      n,
      row: g.row,
      inner,
      count,
      src_c: src.shape[1]!,
      src_off: srcOff,
      dst_c: dst.shape[1]!,
      dst_off: dstOff,
    },
    workgroups: g.workgroups,
  });
}

/** torch.cat(tensors, dim=1): all inputs share dtype and every dim except 1. */
export function concatChannels(rec: Recorder, tensors: Tensor[]): Tensor {
  assertArg(tensors.length > 0, 'concatChannels: no inputs');
  const first = tensors[0]!;
  const shapes = tensors.map((t) => shapeString(t.shape)).join(', ');
  assertArg(first.rank >= 2, `concatChannels: inputs need rank >= 2 with channels at dim 1 (got ${shapes})`);
  for (const t of tensors) {
    assertArg(
      t.rank === first.rank && t.shape.every((d, i) => i === 1 || d === first.shape[i]),
      `concatChannels: shapes must agree except in dim 1 (got ${shapes})`,
    );
    assertArg(t.dtype === first.dtype, `concatChannels: dtypes differ (${tensors.map((u) => u.dtype).join(', ')})`);
  }
  const total = tensors.reduce((s, t) => s + t.shape[1]!, 0);
  const shape = first.shape.slice();
  shape[1] = total;
  const out = rec.engine.empty(shape, first.dtype, 'concat');
  let off = 0;
  for (const t of tensors) {
    copyChannels(rec, 'concat', t, 0, out, off, t.shape[1]!);
    off += t.shape[1]!;
  }
  return out;
}

/** x[:, start:start+count] (a copy) for x [B, C, ...]. */
export function sliceChannels(rec: Recorder, x: Tensor, start: number, count: number): Tensor {
  assertArg(x.rank >= 2, `sliceChannels: input needs rank >= 2 with channels at dim 1 (got ${shapeString(x.shape)})`);
  const c = x.shape[1]!;
  assertArg(
    Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count >= 0 && start + count <= c,
    `sliceChannels: channels [${start}, ${start + count}) are outside the ${c} channels of ${shapeString(x.shape)}`,
  );
  const shape = x.shape.slice();
  shape[1] = count;
  const out = rec.engine.empty(shape, x.dtype, 'slice');
  copyChannels(rec, 'slice', x, start, out, 0, count);
  return out;
}
