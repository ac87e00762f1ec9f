// The one description of the VAE's structure: its Encoder and Decoder as chains of stages (conv_in,
// resnets, the mid-block attention, samplers, the GroupNorm + SiLU + conv_out head; ../vjp-stages.ts).
// The forwards (encoder.ts, decoder.ts) and the VJPs (vjp.ts) run these lists.

import { chainRun, convStage, headStage, moduleOutputs, resnetStage, type Stage } from '../vjp-stages.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import type { VaeAttention } from './attention.js';
import { vaeAttentionVjp } from './attention-vjp.js';
import type { VaeMidBlock } from './blocks.js';
import type { VaeDecoder } from './decoder.js';
import type { VaeEncoder } from './encoder.js';

/** Intermediate outputs by diffusers' module names (conv_in, down_block_i, mid_block, up_block_i, conv_norm_out). */
export type Taps = Record<string, Tensor>;

/** The mid-block attention (flash or explicit-scores backward, see ./attention-vjp.ts). */
function attentionStage(name: string, a: VaeAttention): Stage {
  return { name, forward: (rec, x) => a.forward(rec, x), vjp: (rec, x, g) => vaeAttentionVjp(rec, a, x, g), outShape: (s) => s.slice() };
}

function midStages(prefix: string, m: VaeMidBlock): Stage[] {
  const s = [resnetStage(`${prefix}.resnets.0`, m.resnets[0]!)];
  if (m.attention) s.push(attentionStage(`${prefix}.attentions.0`, m.attention));
  s.push(resnetStage(`${prefix}.resnets.1`, m.resnets[1]!));
  return s;
}

/** The Encoder (image -> moments, before quant_conv), stage names relative to it. */
export function encoderStages(e: VaeEncoder): Stage[] {
  const s: Stage[] = [convStage('conv_in', e.convIn)];
  e.downBlocks.forEach((b, i) => {
    b.resnets.forEach((r, j) => s.push(resnetStage(`down_blocks.${i}.resnets.${j}`, r)));
    if (b.downsampler) s.push(b.downsampler.stage(`down_blocks.${i}.downsamplers.0`));
  });
  s.push(...midStages('mid_block', e.midBlock), headStage('conv_out', e.convNormOut, e.convOut));
  return s;
}

/** The Decoder (latent after post_quant_conv -> image), stage names relative to it. */
export function decoderStages(d: VaeDecoder): Stage[] {
  const s: Stage[] = [convStage('conv_in', d.convIn), ...midStages('mid_block', d.midBlock)];
  d.upBlocks.forEach((b, i) => {
    b.resnets.forEach((r, j) => s.push(resnetStage(`up_blocks.${i}.resnets.${j}`, r)));
    if (b.upsampler) s.push(b.upsampler.stage(`up_blocks.${i}.upsamplers.0`));
  });
  s.push(headStage('conv_out', d.convNormOut, d.convOut));
  return s;
}

/** Runs an encoder or decoder chain; with `taps`, its module outputs and conv_norm_out land there (the caller owns them). */
export function runVaeChain(rec: Recorder, stages: Stage[], x: Tensor, taps?: Taps): Tensor {
  if (!taps) return chainRun(rec, stages, x).out;
  const modules = moduleOutputs(stages);
  const r = chainRun(rec, stages, x, { taps: ['conv_out'], outputs: [...modules.values()] });
  [...modules.keys()].forEach((name, i) => (taps[name] = r.outputs[i]!));
  taps['conv_norm_out'] = r.taps[0]!;
  return r.out;
}
