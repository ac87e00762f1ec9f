// Vector-Jacobian products of AutoencoderKL (untiled passes only, f32):
//   decodeVjp: d/dz of sum(gradOut * decode(z))   (Latent-DPS / PSLD data terms)
//   encodeMeanVjp: d/d image of sum(gradMean * posterior mean)
// Each runs the stage chains of ./stages.ts (with the quant convs) through ../vjp-stages.ts (per-stage
// recomputation).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { sliceChannelsBackward } from '../../engine/ops/layout-backward.js';
import type { AutoencoderKL } from './autoencoder.js';
import { decoderStages, encoderStages } from './stages.js';
import { chainVjp, convStage, type Stage } from '../vjp-stages.js';

function prefixed(prefix: string, stages: Stage[]): Stage[] {
  return stages.map((st) => ({ ...st, name: `${prefix}.${st.name}` }));
}

/** post_quant_conv (when the VAE has one), then the Decoder. */
export function vaeDecodeStages(vae: AutoencoderKL): Stage[] {
  const s: Stage[] = vae.postQuantConv ? [convStage('post_quant_conv', vae.postQuantConv)] : [];
  return [...s, ...prefixed('decoder', decoderStages(vae.decoder))];
}

/** The Encoder, then quant_conv (when the VAE has one). */
export function vaeEncodeStages(vae: AutoencoderKL): Stage[] {
  const s = prefixed('encoder', encoderStages(vae.encoder));
  if (vae.quantConv) s.push(convStage('quant_conv', vae.quantConv));
  return s;
}

function checkF32(what: string, ...ts: Tensor[]): void {
  for (const t of ts) assertArg(t.dtype === 'f32', `${what}: f32 only (gradients), got ${t.dtype} ${shapeString(t.shape)}`);
}

/**
 * d/dz of sum(gradOut * vae.decode(z)) for z [N, latent, h, w] (already divided by scalingFactor) and
 * gradOut shaped like the decoded image. Untiled: the whole decode must fit one pass.
 */
export function decodeVjp(rec: Recorder, vae: AutoencoderKL, z: Tensor, gradOut: Tensor): Tensor {
  checkF32('AutoencoderKL decodeVjp', z, gradOut);
  const f = vae.downFactor;
  const [n, c, h, w] = z.shape as [number, number, number, number];
  const want = [n, vae.config.outChannels, h * f, w * f];
  assertArg(
    z.rank === 4 && c === vae.config.latentChannels && gradOut.shape.length === 4 && gradOut.shape.every((d, i) => d === want[i]),
    `AutoencoderKL decodeVjp: z ${shapeString(z.shape)} and gradOut ${shapeString(gradOut.shape)} (want ${shapeString(want)}) do not match`,
  );
  return rec.scope('vae_decode_vjp', () => chainVjp(rec, vaeDecodeStages(vae), z, gradOut));
}

/**
 * d/d image of sum(gradMean * posterior mean) for image [N, in_channels, H, W] and gradMean
 * [N, latent, H / f, W / f]. Untiled.
 */
export function encodeMeanVjp(rec: Recorder, vae: AutoencoderKL, image: Tensor, gradMean: Tensor): Tensor {
  checkF32('AutoencoderKL encodeMeanVjp', image, gradMean);
  const f = vae.downFactor;
  const l = vae.config.latentChannels;
  const [n, c, hh, ww] = image.shape as [number, number, number, number];
  const want = [n, l, Math.floor(hh / f), Math.floor(ww / f)];
  assertArg(
    image.rank === 4 && c === vae.config.inChannels && gradMean.shape.length === 4 && gradMean.shape.every((d, i) => d === want[i]),
    `AutoencoderKL encodeMeanVjp: image ${shapeString(image.shape)} and gradMean ${shapeString(gradMean.shape)} (want ${shapeString(want)}) do not match`,
  );
  return rec.scope('vae_encode_mean_vjp', () =>
    rec.engine.tidy(() => {
      // mean = moments[:, :L]: its gradient is gradMean in the first L channels, zero in the logvar half.
      const gMoments = sliceChannelsBackward(rec, gradMean, [n, 2 * l, want[2]!, want[3]!], 0);
      return chainVjp(rec, vaeEncodeStages(vae), image, gMoments);
    }),
  );
}
