// Resampling of NCHW tensors: nearest x2 up-sampling (diffusers' Upsample2D) and bilinear resize
// with exactly PyTorch's align_corners=False, antialias=False semantics.

import source from '../../../kernels/resample.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

function checkNCHW(op: string, x: Tensor): [number, number, number, number] {
  assertArg(x.rank === 4, `${op}: expected an NCHW tensor, got shape ${shapeString(x.shape)}`);
  return x.shape as [number, number, number, number];
}

/** F.interpolate(x, scale_factor=2, mode='nearest') on [N, C, H, W] -> [N, C, 2H, 2W]. */
export function upsampleNearest2x(rec: Recorder, x: Tensor): Tensor {
  const [n, c, h, w] = checkNCHW('upsampleNearest2x', x);
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'resample', source, entry: 'upsample_nearest2x', dtype: x.dtype, consts: { WG: wg } });
  const out = engine.empty([n, c, 2 * h, 2 * w], x.dtype, 'upsample_nearest2x');
  if (out.size === 0) return out;
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op: 'upsample_nearest2x',
    bindings: { nx: x, nout: out },
    uniforms: { n: out.size, row: g.row, ih: h, iw: w },
    workgroups: g.workgroups,
  });
  return out;
}

/**
 * F.interpolate(x, size=(outH, outW), mode='bilinear', align_corners=False, antialias=False) on
 * [N, C, H, W]: the scale is in/out computed in f32 as PyTorch does when no scale_factor is given.
 */
export function resizeBilinear(rec: Recorder, x: Tensor, outH: number, outW: number): Tensor {
  const [n, c, h, w] = checkNCHW('resizeBilinear', x);
  assertArg(
    Number.isInteger(outH) && Number.isInteger(outW) && outH > 0 && outW > 0,
    `resizeBilinear: output size must be positive integers, got ${outH}x${outW}`,
  );
  assertArg(h > 0 && w > 0, `resizeBilinear: input ${shapeString(x.shape)} has an empty spatial dim`);
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'resample', source, entry: 'resize_bilinear', dtype: x.dtype, consts: { WG: wg } });
  const out = engine.empty([n, c, outH, outW], x.dtype, 'resize_bilinear');
  if (out.size === 0) return out;
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op: 'resize_bilinear',
    bindings: { bx: x, bout: out },
    uniforms: {
      n: out.size,
      row: g.row,
      ih: h,
      iw: w,
      oh: outH,
      ow: outW,
      sh: Math.fround(h / outH),
      sw: Math.fround(w / outW),
    },
    workgroups: g.workgroups,
  });
  return out;
}
