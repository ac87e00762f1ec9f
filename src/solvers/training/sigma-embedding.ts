// e_sigma, the noise level an operator is conditioned on: SILO feeds the prior UNet's time embedding at
// the pseudo-timestep (sigma / 0.1) * 999. An autoencoder trained without a UNet (TAEF2) has none, so
// there the operator takes the parameter-free sinusoid of that timestep (diffusers' Timesteps with
// flip_sin_to_cos, as SD's time_proj) at the operator's embedding width.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { timestepEmbeddingCPU } from '../../engine/ops/embedding.js';
import type { Engine } from '../../engine/device.js';
import type { TensorSource } from '../../formats/safetensors.js';
import type { UNet2DConditionModel } from '../../models/unet/unet.js';
import type { UNetConfig } from '../../models/unet/config.js';
import { Timesteps, TimestepEmbedding } from '../../models/unet/embeddings.js';
import { WeightLoader } from '../../models/weights.js';
import { sigmaTimestep } from '../../models/silo/config.js';

export interface SigmaEmbedder {
  /** "unet time embedding" or "sinusoid" (checkpoint metadata). */
  readonly kind: string;
  readonly dim: number;
  /** [B, dim] f32, one row per sigma. */
  embed(rec: Recorder, sigmas: readonly number[]): Tensor;
}

function checkSigmas(sigmas: readonly number[]): void {
  assertArg(sigmas.length > 0 && sigmas.every((s) => Number.isFinite(s) && s >= 0), `sigma embedding: sigmas must be finite and >= 0, got ${JSON.stringify(sigmas)}`);
}

export function unetSigmaEmbedder(unet: UNet2DConditionModel): SigmaEmbedder {
  // Training keeps the operator in f32; an f16 UNet's embedding would need a cast the engine does not have.
  assertArg(unet.dtype === 'f32', `sigma embedding: the UNet is ${unet.dtype}; load it in f32 to condition an operator being trained`);
  return {
    kind: 'unet time embedding',
    dim: unet.timeMlp.dim,
    embed: (rec, sigmas) => {
      checkSigmas(sigmas);
      return unet.timeEmbedding(rec, sigmas.map(sigmaTimestep));
    },
  };
}

export function sinusoidSigmaEmbedder(dim: number): SigmaEmbedder {
  assertArg(Number.isInteger(dim) && dim >= 2 && dim % 2 === 0, `sigma embedding: width ${dim} must be an even integer >= 2`);
  return {
    kind: 'sinusoid',
    dim,
    embed: (rec, sigmas) => {
      checkSigmas(sigmas);
      const t = sigmas.map(sigmaTimestep);
      return rec.engine.tensor(timestepEmbeddingCPU(t, dim, { flipSinToCos: true, downscaleFreqShift: 0 }), [t.length, dim], 'f32', 'sigma_emb');
    },
  };
}

/**
 * The prior UNet's time embedding from its weight file alone (time_proj + the `time_embedding.*` MLP,
 * f32): what SILO conditions on, without holding the whole UNet. The caller frees it with dispose().
 */
export function unetFileSigmaEmbedder(engine: Engine, unetWeights: TensorSource, config: UNetConfig): SigmaEmbedder & { dispose(): void } {
  const loaded = WeightLoader.load(engine, unetWeights, { dtype: 'f32' }, (w) => new TimestepEmbedding(w.scope('time_embedding.'), config.timeProjDim, config.timeEmbedDim), false);
  const proj = new Timesteps(config.timeProjDim, config.flipSinToCos, config.freqShift);
  return {
    kind: 'unet time embedding',
    dim: config.timeEmbedDim,
    embed: (rec, sigmas) => {
      checkSigmas(sigmas);
      return rec.engine.tidy(() => loaded.model.forward(rec, proj.forward(rec, sigmas.map(sigmaTimestep), 'f32')));
    },
    dispose: () => loaded.dispose(),
  };
}
