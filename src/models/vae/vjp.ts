// Vector-Jacobian products of AutoencoderKL (untiled passes only, f32):
//   decodeVjp: d/dz of sum(gradOut * decode(z))   (Latent-DPS / PSLD data terms)
//   encodeMeanVjp: d/d image of sum(gradMean * posterior mean)
// Each model is flattened into a chain of stages (convs, resnets, the attention, up/down samplers)
// run by ../vjp-stages.ts (per-stage recomputation).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { upsampleNearest2x } from '../../engine/ops/resample.js';
import { upsampleNearest2xBackward } from '../../engine/ops/resample-backward.js';
import { sliceChannelsBackward } from '../../engine/ops/layout-backward.js';
import type { Conv2d, GroupNorm } from '../layers.js';
import type { AutoencoderKL } from './autoencoder.js';
import type { VaeAttention } from './attention.js';
import { vaeAttentionVjp } from './attention-vjp.js';
import type { Downsample2D, Upsample2D, VaeMidBlock } from './blocks.js';
import { chainVjp, convGradX, groupNormGradX, resnetStage, type Stage } from '../vjp-stages.js';

function convStage(name: string, conv: Conv2d): Stage {
  return { name, forward: (rec, x) => conv.forward(rec, x), vjp: (rec, x, g) => convGradX(rec, conv, x, g) };
}


/** The mid-block attention (flash or explicit-scores backward, see ./attention-vjp.ts). */
function attentionStage(name: string, a: VaeAttention): Stage {
  return { name, forward: (rec, x) => a.forward(rec, x), vjp: (rec, x, g) => vaeAttentionVjp(rec, a, x, g) };
}

function upsampleStage(name: string, u: Upsample2D): Stage {
  return {
    name,
    forward: (rec, x) => u.forward(rec, x),
    vjp: (rec, x, g) => {
      const up = upsampleNearest2x(rec, x);
      const dUp = convGradX(rec, u.conv, up, g);
      return upsampleNearest2xBackward(rec, dUp, x.shape);
    },
  };
}

function downsampleStage(name: string, d: Downsample2D): Stage {
  // Downsample2D pads the right / bottom by one (padEnd) before its stride-2 conv.
  return { name, forward: (rec, x) => d.forward(rec, x), vjp: (rec, x, g) => convGradX(rec, d.conv, x, g, 1) };
}

function midStages(prefix: string, m: VaeMidBlock): Stage[] {
  const s = [resnetStage(`${prefix}.resnets.0`, m.resnets[0]!)];
  if (m.attention) s.push(attentionStage(`${prefix}.attentions.0`, m.attention));
  s.push(resnetStage(`${prefix}.resnets.1`, m.resnets[1]!));
  return s;
}

/** GroupNorm + SiLU then conv_out, as one stage. */
function headStage(name: string, norm: GroupNorm, conv: Conv2d): Stage {
  return {
    name,
    forward: (rec, x) => rec.engine.tidy(() => conv.forward(rec, norm.forward(rec, x, 'silu'))),
    vjp: (rec, x, g) => {
      const s = norm.forward(rec, x, 'silu');
      const ds = convGradX(rec, conv, s, g);
      s.dispose();
      return groupNormGradX(rec, norm, x, ds, 'silu');
    },
  };
}

export function decoderStages(vae: AutoencoderKL): Stage[] {
  const d = vae.decoder;
  const s: Stage[] = [];
  if (vae.postQuantConv) s.push(convStage('post_quant_conv', vae.postQuantConv));
  s.push(convStage('decoder.conv_in', d.convIn), ...midStages('decoder.mid_block', d.midBlock));
  d.upBlocks.forEach((b, i) => {
    b.resnets.forEach((r, j) => s.push(resnetStage(`decoder.up_blocks.${i}.resnets.${j}`, r)));
    if (b.upsampler) s.push(upsampleStage(`decoder.up_blocks.${i}.upsamplers.0`, b.upsampler));
  });
  s.push(headStage('decoder.conv_out', d.convNormOut, d.convOut));
  return s;
}

export function encoderStages(vae: AutoencoderKL): Stage[] {
  const e = vae.encoder;
  const s: Stage[] = [convStage('encoder.conv_in', e.convIn)];
  e.downBlocks.forEach((b, i) => {
    b.resnets.forEach((r, j) => s.push(resnetStage(`encoder.down_blocks.${i}.resnets.${j}`, r)));
    if (b.downsampler) s.push(downsampleStage(`encoder.down_blocks.${i}.downsamplers.0`, b.downsampler));
  });
  s.push(...midStages('encoder.mid_block', e.midBlock), headStage('encoder.conv_out', e.convNormOut, e.convOut));
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
  return rec.scope('vae_decode_vjp', () => chainVjp(rec, decoderStages(vae), z, gradOut));
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
      return chainVjp(rec, encoderStages(vae), image, gMoments);
    }),
  );
}
