// Test-only plug-ins for the guided samplers whose exact posterior is known (see test/ref/gaussian-posterior.ts):
//   gaussianEpsModel   the exact noise predictor of a diagonal Gaussian latent prior, an element-wise
//                      affine map eps = c_t (z_t - sqrt(a_t) mu) built from engine element-wise ops; its
//                      VJP is the same diagonal scale c_t.
//   matrixMeasurement  a linear latent operator w_hat = H vec(x0) (H [m, n], one matmul) with its exact
//                      adjoint H^T as the VJP.

import { scalarValue } from '../../src/engine/step-value.js';
import type { Engine } from '../../src/engine/device.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { ArgumentError, assertArg } from '../../src/engine/errors.js';
import { shapeSize, shapeString } from '../../src/engine/dtype.js';
import { mul, scaleAdd } from '../../src/engine/ops/elementwise.js';
import { matmul } from '../../src/engine/ops/matmul.js';
import type { EpsModel } from '../../src/solvers/samplers/eps-model.js';
import type { LatentMeasurement } from '../../src/solvers/samplers/guided.js';
import { gaussianEpsSlope } from '../ref/gaussian-posterior.js';

export interface GaussianPriorSpec {
  /** The latent's shape [1, C, h, w]; mu and std hold one value per element. */
  shape: readonly number[];
  mu: ArrayLike<number>;
  std: ArrayLike<number>;
  /** The scheduler's alphas_cumprod (the training table, indexed by timestep). */
  alphasCumprod: ArrayLike<number>;
}

export interface GaussianEpsModel extends EpsModel {
  /** c_t uploaded for timestep t (cached; freed by dispose). */
  slope(t: number): Tensor;
  dispose(): void;
}

/** The exact eps predictor of z0 ~ N(mu, diag(std^2)); batches [N, C, h, w] broadcast against the prior. */
export function gaussianEpsModel(engine: Engine, spec: GaussianPriorSpec): GaussianEpsModel {
  const n = shapeSize(spec.shape);
  assertArg(spec.shape.length === 4 && spec.shape[0] === 1, `gaussianEpsModel: shape must be [1, C, h, w], got ${shapeString(spec.shape)}`);
  assertArg(spec.mu.length === n && spec.std.length === n, `gaussianEpsModel: mu (${spec.mu.length}) and std (${spec.std.length}) need ${n} values for ${shapeString(spec.shape)}`);
  const mu = engine.tensor(spec.mu, spec.shape, 'f32', 'gaussian_mu');
  const slopes = new Map<number, Tensor>();
  const alphaBar = (t: number) => {
    assertArg(Number.isInteger(t) && t >= 0 && t < spec.alphasCumprod.length, `gaussianEpsModel: timestep ${t} outside alphas_cumprod (0..${spec.alphasCumprod.length - 1})`);
    return spec.alphasCumprod[t]!;
  };
  const slope = (t: number): Tensor => {
    let c = slopes.get(t);
    if (!c) {
      // Created lazily, possibly inside the caller's tidy(): keep it out of that frame (freed by dispose).
      c = engine.keep(engine.tensor(gaussianEpsSlope(alphaBar(t), spec.std), spec.shape, 'f32', `gaussian_eps_slope_t${t}`));
      slopes.set(t, c);
    }
    return c;
  };
  const checkSample = (x: Tensor, what: string) =>
    assertArg(
      x.rank === 4 && x.shape.slice(1).every((d, i) => d === spec.shape[i + 1]),
      `gaussianEpsModel: ${what} ${shapeString(x.shape)} does not match the prior's latent [N, ${spec.shape.slice(1).join(', ')}]`,
    );
  return {
    name: 'gaussian_prior',
    inChannels: spec.shape[1]!,
    slope,
    forward(rec, sample, step, _context, opts = {}) {
      // Not replayable: t's values below are plain numbers.
      const t = scalarValue(step);
      checkSample(sample, 'sample');
      if (opts.readout) throw new ArgumentError('gaussianEpsModel: the closed-form prior has no readout features');
      const c = slope(t);
      const eps = rec.engine.tidy(() => mul(rec, scaleAdd(rec, sample, 1, mu, -Math.sqrt(alphaBar(t)), { op: 'gaussian_centre' }), c, { op: 'gaussian_eps' }));
      return {
        eps,
        vjp(r, gEps, gReadout) {
          if (gReadout?.some((g) => g)) throw new ArgumentError('gaussianEpsModel: no readout features to take a cotangent');
          if (!gEps) throw new ArgumentError('gaussianEpsModel vjp: no cotangent for eps');
          checkSample(gEps, 'eps cotangent');
          // eps is diagonal in z_t: J^T g = c_t * g.
          return mul(r, gEps, c, { op: 'gaussian_eps_vjp' });
        },
        discard: () => {},
      };
    },
    dispose() {
      mu.dispose();
      for (const c of slopes.values()) c.dispose();
      slopes.clear();
    },
  };
}

export interface MatrixMeasurement extends LatentMeasurement {
  /** Rows of H (the measurement's size); the estimate is [1, m]. */
  readonly m: number;
  dispose(): void;
}

/** w_hat = H vec(x0) for H [m, n] row-major (n = the latent's size); VJP g -> H^T g reshaped to the latent. */
export function matrixMeasurement(engine: Engine, H: ArrayLike<number>, m: number, latentShape: readonly number[], name = 'linear_latent'): MatrixMeasurement {
  const n = shapeSize(latentShape);
  assertArg(H.length === m * n, `matrixMeasurement: H has ${H.length} values, [${m}, ${n}] needs ${m * n}`);
  const Ht = new Float32Array(n * m);
  for (let r = 0; r < m; r++) for (let c = 0; c < n; c++) Ht[c * m + r] = H[r * n + c]!;
  const h = engine.tensor(H, [m, n], 'f32', `${name}_H`);
  const ht = engine.tensor(Ht, [n, m], 'f32', `${name}_Ht`);
  const checkX0 = (x0: Tensor) =>
    assertArg(x0.size === n && x0.shape.every((d, i) => d === latentShape[i]), `${name}: x0 ${shapeString(x0.shape)} must be ${shapeString(latentShape)}`);
  return {
    name,
    m,
    forward(rec, x0) {
      checkX0(x0);
      return {
        estimate: rec.engine.tidy(() => {
          const flat = x0.reshape([1, n]);
          // [1, n] x [n, m]: H x0 as a row vector.
          return matmul(rec, flat, ht, { op: `${name}/forward` });
        }),
      };
    },
    vjp(rec, x0, g) {
      checkX0(x0);
      assertArg(g.size === m, `${name} vjp: cotangent ${shapeString(g.shape)} must hold ${m} values`);
      return rec.engine.tidy(() => {
        const row = g.reshape([1, m]);
        const back = matmul(rec, row, h, { op: `${name}/adjoint` });
        return back.reshape(latentShape);
      });
    },
    dispose() {
      h.dispose();
      ht.dispose();
    },
  };
}
