// The diagonal Gaussian posterior of a VAE encoder (diffusers' DiagonalGaussianDistribution): split
// the moments into mean and clamped log-variance, std = exp(logvar / 2), and draw mean + std * noise.

import source from '../../../kernels/gaussian.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeSize, shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

export interface DiagonalGaussian {
  mean: Tensor;
  logvar: Tensor;
  std: Tensor;
}

/** moments [N, 2L, ...] -> mean, logvar = clamp(., -30, 20) (diffusers' bounds), std = exp(logvar / 2). */
export function diagonalGaussian(rec: Recorder, moments: Tensor, opts: { logvarMin?: number; logvarMax?: number } = {}): DiagonalGaussian {
  const op = 'diag_gaussian';
  assertArg(moments.rank >= 2 && moments.shape[1]! % 2 === 0, `${op}: moments ${shapeString(moments.shape)} must be [N, 2L, ...]`);
  const engine = rec.engine;
  const latent = moments.shape[1]! / 2;
  const shape = [moments.shape[0]!, latent, ...moments.shape.slice(2)];
  const mean = engine.empty(shape, moments.dtype, 'posterior_mean');
  const logvar = engine.empty(shape, moments.dtype, 'posterior_logvar');
  const std = engine.empty(shape, moments.dtype, 'posterior_std');
  const n = mean.size;
  if (n > 0) {
    const wg = workgroupSize(engine);
    const k = engine.kernel({ family: 'gaussian', source, entry: 'diag_gaussian', dtype: moments.dtype, consts: { WG: wg } });
    const g = grid1d(engine, n, wg);
    rec.dispatch(k, {
      op,
      bindings: { gm: moments, gmean: mean, glogvar: logvar, gstd: std },
      uniforms: { n, row: g.row, inner: shapeSize(moments.shape.slice(2)), latent, lo: opts.logvarMin ?? -30, hi: opts.logvarMax ?? 20 },
      workgroups: g.workgroups,
    });
  }
  return { mean, logvar, std };
}

/** mean + std * noise (all the same shape and dtype). */
export function gaussianSample(rec: Recorder, mean: Tensor, std: Tensor, noise: Tensor): Tensor {
  const op = 'gaussian_sample';
  const same = (t: Tensor) => t.shape.length === mean.shape.length && t.shape.every((d, i) => d === mean.shape[i]) && t.dtype === mean.dtype;
  assertArg(
    same(std) && same(noise),
    `${op}: mean ${shapeString(mean.shape)} ${mean.dtype}, std ${shapeString(std.shape)} ${std.dtype} and noise ${shapeString(noise.shape)} ${noise.dtype} must agree`,
  );
  const engine = rec.engine;
  const out = engine.empty(mean.shape, mean.dtype, 'posterior_sample');
  if (out.size === 0) return out;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'gaussian', source, entry: 'gaussian_sample', dtype: mean.dtype, consts: { WG: wg } });
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op,
    bindings: { smean: mean, sstd: std, snoise: noise, sout: out },
    uniforms: { n: out.size, row: g.row },
    workgroups: g.workgroups,
  });
  return out;
}
