// Measurement noise: y_n = y + sigma * N(0, 1) (SILO: sigma 0.02 in [-1, 1] units), with the engine's
// seeded Philox normals so a (seed, offset) pair reproduces the same noise on every adapter.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { add } from '../../engine/ops/elementwise.js';
import { randomNormal } from '../../engine/ops/random.js';
import type { U64 } from '../../engine/random.js';

/** SILO's measurement noise level in [-1, 1] units. */
export const SILO_NOISE_SIGMA = 0.02;

/** y + sigma * n with n = normalCPU(y.size, seed, offset) element for element; a new tensor. */
export function addMeasurementNoise(rec: Recorder, y: Tensor, sigma: number, seed: U64, offset: U64 = 0): Tensor {
  assertArg(Number.isFinite(sigma) && sigma >= 0, `addMeasurementNoise: sigma must be finite and >= 0, got ${sigma}`);
  const noise = randomNormal(rec, y.shape, seed, { offset, std: sigma, dtype: y.dtype, name: 'measurement_noise' });
  const out = add(rec, y, noise, { op: 'add_noise' });
  noise.dispose();
  return out;
}
