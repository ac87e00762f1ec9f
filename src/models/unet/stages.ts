// The one description of the UNet's structure: UNet2DConditionModel as a chain of stages (conv_in, resnets,
// transformers, samplers, the conv_out head; ../vjp-stages.ts). The forward (unet.ts), the input VJP
// (vjp.ts), SILO's readout pass (readout-vjp.ts), the tape's size (tape-bytes.ts) and the non-finite
// probe all run or walk this list. Down stages push the skips that the up ResNets concatenate back.

import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { convStage, headStage, resnetStage, type Stage } from '../vjp-stages.js';
import { transformerStage } from './transformer-vjp.js';
import type { UNet2DConditionModel } from './unet.js';

/** The constants every stage closes over: silu(temb) [T, temb] and the text context [N, L, D]. */
export interface Consts {
  tembSilu: Tensor;
  context: Tensor;
}

/**
 * The UNet as a chain of stages (input: the possibly centred sample; output: eps). Without `k` the chain
 * can only be walked for shapes (chainTapeBytes): running a stage that needs a constant throws.
 */
export function unetStages(m: UNet2DConditionModel, k?: Consts): Stage[] {
  const context = () => {
    assertArg(k !== undefined, 'unetStages: this chain was built for shapes only (no text context)');
    return k.context;
  };
  const temb = k?.tembSilu;
  const s: Stage[] = [convStage('conv_in', m.convIn, { pushSkip: true })];
  m.downBlocks.forEach((b, i) => {
    const p = `down_blocks.${i}`;
    b.resnets.forEach((r, j) => {
      s.push(resnetStage(`${p}.resnets.${j}`, r, temb, { pushSkip: !b.crossAttention }));
      if (b.crossAttention) s.push({ ...transformerStage(`${p}.attentions.${j}`, b.attentions[j]!, context), pushSkip: true });
    });
    if (b.downsampler) s.push(b.downsampler.stage(`${p}.downsamplers.0`, { pushSkip: true }));
  });
  const mid = m.midBlock;
  s.push(resnetStage('mid_block.resnets.0', mid.resnets[0]!, temb));
  mid.attentions.forEach((a, i) => {
    s.push(transformerStage(`mid_block.attentions.${i}`, a, context), resnetStage(`mid_block.resnets.${i + 1}`, mid.resnets[i + 1]!, temb));
  });
  m.upBlocks.forEach((b, i) => {
    const p = `up_blocks.${i}`;
    b.resnets.forEach((r, j) => {
      s.push(resnetStage(`${p}.resnets.${j}`, r, temb, { popSkip: true }));
      if (b.crossAttention) s.push(transformerStage(`${p}.attentions.${j}`, b.attentions[j]!, context));
    });
    if (b.upsampler) s.push(b.upsampler.stage(`${p}.upsamplers.0`));
  });
  s.push(headStage('conv_out', m.convNormOut, m.convOut));
  return s;
}

/** The chain stages whose taps are the readout features, in the forward's `readout` order. */
export function readoutStageNames(unet: UNet2DConditionModel): string[] {
  return unet.upBlocks.flatMap((b, i) => b.resnets.map((_, j) => `up_blocks.${i}.resnets.${j}`));
}
