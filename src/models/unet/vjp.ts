// Vector-Jacobian product of UNet2DConditionModel with respect to its input sample (f32):
//   sampleVjp: d/d sample of sum(gradEps * unet(sample, t, encoder_hidden_states).eps)
// (DPS-style guidance through the denoiser). The timestep and the text context are constants: no
// gradient flows into them, so a ResNet's time_emb_proj(silu(temb)) is a per-channel bias (identity
// backward) and cross-attention only needs dQ.
// It runs the UNet's stage chain (./stages.ts) through ../vjp-stages.ts.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { scale, silu } from '../../engine/ops/elementwise.js';
import type { Timestep } from './embeddings.js';
import type { UNet2DConditionModel } from './unet.js';
import { chainVjp } from '../vjp-stages.js';
import { unetStages, type Consts } from './stages.js';

/**
 * d/d sample of sum(gradEps * unet(sample, timestep, encoderHiddenStates).eps) for sample [N, in, H, W]
 * and gradEps [N, out, H, W]; the timestep and the context are held constant. f32 only. Records; does
 * not submit.
 */
export function sampleVjp(
  rec: Recorder,
  unet: UNet2DConditionModel,
  sample: Tensor,
  timestep: Timestep,
  encoderHiddenStates: Tensor,
  gradEps: Tensor,
): Tensor {
  const c = unet.config;
  for (const t of [sample, encoderHiddenStates, gradEps]) {
    assertArg(t.dtype === 'f32', `UNet sampleVjp: f32 only (gradients), got ${t.dtype} ${shapeString(t.shape)}`);
  }
  assertArg(unet.dtype === 'f32', `UNet sampleVjp: the model must be f32, it is ${unet.dtype}`);
  const [n, cin, h, w] = sample.shape as [number, number, number, number];
  const want = [n, c.outChannels, h, w];
  assertArg(
    sample.rank === 4 && cin === c.inChannels && gradEps.rank === 4 && gradEps.shape.every((d, i) => d === want[i]),
    `UNet sampleVjp: sample ${shapeString(sample.shape)} and gradEps ${shapeString(gradEps.shape)} (want ${shapeString(want)}) do not match`,
  );
  assertArg(
    encoderHiddenStates.rank === 3 && encoderHiddenStates.shape[0] === n,
    `UNet sampleVjp: encoder_hidden_states ${shapeString(encoderHiddenStates.shape)} must be [${n}, L, D]`,
  );
  return rec.scope('unet_sample_vjp', () =>
    rec.engine.tidy(() => {
      const k: Consts = { tembSilu: silu(rec, unet.timeEmbedding(rec, timestep)), context: encoderHiddenStates };
      const x = c.centerInputSample ? scale(rec, sample, 2, -1) : sample;
      const dx = chainVjp(rec, unetStages(unet, k), x, gradEps);
      return c.centerInputSample ? scale(rec, dx, 2) : dx;
    }),
  );
}
