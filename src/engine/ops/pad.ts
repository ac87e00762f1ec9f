// Spatial padding of NCHW tensors: reflect (torch ReflectionPad2d, what SILO's blur operator applies
// before its 61x61 convolution), replicate, or zeros, with independent top/bottom/left/right amounts.

import source from '../../../kernels/pad.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

export type PadMode = 'reflect' | 'replicate' | 'zeros';

const MODES: Record<PadMode, number> = { reflect: 0, replicate: 1, zeros: 2 };

/** [top, bottom, left, right] in pixels, or one number for all four. */
export type Pad4 = number | [number, number, number, number];

/** Pads x [N, C, H, W] spatially; reflect needs every amount < the padded axis' length (as torch). */
export function pad2d(rec: Recorder, x: Tensor, pad: Pad4, mode: PadMode = 'reflect'): Tensor {
  const op = `pad2d_${mode}`;
  assertArg(x.rank === 4, `${op}: expected an NCHW tensor, got shape ${shapeString(x.shape)}`);
  assertArg(mode in MODES, `${op}: unknown mode ${String(mode)}`);
  const [top, bottom, left, right] = typeof pad === 'number' ? [pad, pad, pad, pad] : pad;
  assertArg([top, bottom, left, right].every((v) => Number.isInteger(v) && v >= 0), `${op}: pads must be integers >= 0, got ${JSON.stringify(pad)}`);
  const [n, c, h, w] = x.shape as [number, number, number, number];
  if (mode === 'reflect') {
    assertArg(
      Math.max(top, bottom) < h && Math.max(left, right) < w,
      `${op}: reflect padding (${top}, ${bottom}, ${left}, ${right}) must be smaller than the input ${shapeString(x.shape)}'s H and W`,
    );
  }
  if (mode === 'replicate') assertArg(h > 0 && w > 0, `${op}: cannot replicate an empty input ${shapeString(x.shape)}`);
  const outH = h + top + bottom;
  const outW = w + left + right;
  const engine = rec.engine;
  const out = engine.empty([n, c, outH, outW], x.dtype, op);
  const total = out.size;
  if (total === 0) return out;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'pad', source, entry: 'pad2d', dtype: x.dtype, consts: { WG: wg } });
  const g = grid1d(engine, total, wg);
  rec.dispatch(k, {
    op,
    bindings: { pad_in: x, pad_out: out },
    uniforms: { n: total, row: g.row, h, w, out_h: outH, out_w: outW, top, left, mode: MODES[mode] },
    workgroups: g.workgroups,
  });
  return out;
}
