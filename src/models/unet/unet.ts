// diffusers' UNet2DConditionModel for SD-1.x configs:
//   emb = time_embedding(time_proj(t)); h = conv_in(sample); down blocks (skips kept); mid block;
//   up blocks (skips concatenated, last first); eps = conv_out(silu(conv_norm_out(h))).
// The forward runs the stage chain of ./stages.ts, the same description the VJPs use.
// Optionally returns SILO's readout features: every up-block ResNet's conv2 output before its skip add
// (up_blocks[0].resnets[0..], up_blocks[1].resnets[0..], ...: 12 tensors for SD-1.5).

import { isStepValue } from '../../engine/step-value.js';
import type { DType } from '../../engine/dtype.js';
import { shapeString } from '../../engine/dtype.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { scale, silu } from '../../engine/ops/elementwise.js';
import { Conv2d, GroupNorm } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import { chainRun, moduleOutputs } from '../vjp-stages.js';
import { DownBlock, MidBlock2DCrossAttn, UpBlock, type BlockSettings } from './blocks.js';
import { readoutStageNames, unetStages } from './stages.js';
import type { UNetConfig } from './config.js';
import { TimestepEmbedding, Timesteps, type Timestep } from './embeddings.js';

export interface UNetForwardOptions {
  /** Also return the up-block ResNet hidden tensors (SILO's readout features). */
  readout?: boolean;
  /** Also return module outputs named as in the golden case (conv_in, temb, down_block_i, ...). */
  debug?: boolean;
}

export interface UNetOutput {
  eps: Tensor;
  readout?: Tensor[];
  debug?: Record<string, Tensor>;
}

export class UNet2DConditionModel {
  readonly dtype: DType;
  readonly weightDtype: DType;
  readonly timeProj: Timesteps;
  /** diffusers' `time_embedding` module (the name `timeEmbedding` is the method that applies it). */
  readonly timeMlp: TimestepEmbedding;
  readonly convIn: Conv2d;
  readonly downBlocks: DownBlock[] = [];
  readonly midBlock: MidBlock2DCrossAttn;
  readonly upBlocks: UpBlock[] = [];
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(w: WeightLoader, readonly config: UNetConfig) {
    const c = config;
    // The activations' dtype (inputs must be in it); the weights may be f16 under f32 activations.
    this.dtype = w.activationDtype;
    this.weightDtype = w.dtype;
    const nb = c.blockOutChannels.length;
    const settings = (i: number): BlockSettings => ({
      tembChannels: c.timeEmbedDim,
      groups: c.normGroups,
      eps: c.normEps,
      heads: c.heads[i]!,
      crossAttentionDim: c.crossAttentionDim[i]!,
      transformerLayers: c.transformerLayers[i]!,
      useLinearProjection: c.useLinearProjection,
    });

    this.timeProj = new Timesteps(c.timeProjDim, c.flipSinToCos, c.freqShift);
    this.timeMlp = new TimestepEmbedding(w.scope('time_embedding.'), c.timeProjDim, c.timeEmbedDim);
    this.convIn = new Conv2d(w, 'conv_in', c.inChannels, c.blockOutChannels[0]!, c.convInKernel, { padding: (c.convInKernel - 1) / 2 });

    let channels = c.blockOutChannels[0]!;
    for (let i = 0; i < nb; i++) {
      const out = c.blockOutChannels[i]!;
      const cross = c.downBlockTypes[i] === 'CrossAttnDownBlock2D';
      this.downBlocks.push(
        new DownBlock(w.scope(`down_blocks.${i}.`), channels, out, c.layersPerBlock[i]!, cross, i < nb - 1, c.downsamplePadding, settings(i)),
      );
      channels = out;
    }

    this.midBlock = new MidBlock2DCrossAttn(w.scope('mid_block.'), channels, settings(nb - 1), c.midBlockScaleFactor);

    // Up block i mirrors down block nb-1-i (diffusers' reversed lists).
    const rev = (i: number) => nb - 1 - i;
    let prev = channels;
    for (let i = 0; i < nb; i++) {
      const out = c.blockOutChannels[rev(i)]!;
      const input = c.blockOutChannels[rev(Math.min(i + 1, nb - 1))]!;
      const cross = c.upBlockTypes[i] === 'CrossAttnUpBlock2D';
      this.upBlocks.push(
        new UpBlock(w.scope(`up_blocks.${i}.`), input, prev, out, c.layersPerBlock[rev(i)]! + 1, cross, i < nb - 1, settings(rev(i))),
      );
      prev = out;
    }

    this.convNormOut = new GroupNorm(w, 'conv_norm_out', c.normGroups, c.blockOutChannels[0]!, c.normEps);
    this.convOut = new Conv2d(w, 'conv_out', c.blockOutChannels[0]!, c.outChannels, c.convOutKernel, { padding: (c.convOutKernel - 1) / 2 });
  }

  /** Spatial sizes must halve exactly at every down-sampler (diffusers' upsample_size path is not implemented). */
  get sizeMultiple(): number {
    return 2 ** (this.config.blockOutChannels.length - 1);
  }

  /**
   * time_embedding(time_proj(t)) for any (fractional) timesteps: [T, timeEmbedDim] (T = 1 for a number).
   * SILO's embed_timestep, e.g. its sigma pseudo-timestep (sigma / 0.1) * 999.
   */
  timeEmbedding(rec: Recorder, t: Timestep): Tensor {
    return rec.scope('unet', () => this.embedTime(rec, t));
  }

  private embedTime(rec: Recorder, t: Timestep): Tensor {
    return rec.scope('time_embedding', () => rec.engine.tidy(() => this.timeMlp.forward(rec, this.timeProj.forward(rec, t, this.dtype))));
  }

  private checkInputs(sample: Tensor, timestep: Timestep, context: Tensor): void {
    const c = this.config;
    assertArg(
      sample.rank === 4 && sample.shape[1] === c.inChannels,
      `UNet2DConditionModel: sample ${shapeString(sample.shape)} must be [N, ${c.inChannels}, H, W]`,
    );
    const [n, , h, w] = sample.shape as [number, number, number, number];
    const m = this.sizeMultiple;
    assertArg(h % m === 0 && w % m === 0, `UNet2DConditionModel: sample ${shapeString(sample.shape)}: H and W must be multiples of ${m}`);
    assertArg(sample.dtype === this.dtype, `UNet2DConditionModel: sample is ${sample.dtype} but the model is ${this.dtype}`);
    assertArg(context.dtype === this.dtype, `UNet2DConditionModel: encoder_hidden_states is ${context.dtype} but the model is ${this.dtype}`);
    const dims = new Set(c.crossAttentionDim.filter((_, i) => c.downBlockTypes[i] === 'CrossAttnDownBlock2D' || i === c.crossAttentionDim.length - 1));
    assertArg(
      context.rank === 3 && context.shape[0] === n && dims.size === 1 && dims.has(context.shape[2]!),
      `UNet2DConditionModel: encoder_hidden_states ${shapeString(context.shape)} must be [${n}, L, ${[...dims].join(' | ')}]`,
    );
    const count = typeof timestep === 'number' || isStepValue(timestep) ? 1 : Array.isArray(timestep) ? timestep.length : (timestep as Tensor).size;
    assertArg(count === 1 || count === n, `UNet2DConditionModel: ${count} timesteps for a batch of ${n} (give 1 or ${n})`);
  }

  /**
   * sample [N, in, H, W], timestep (one for all, or one per sample), encoderHiddenStates [N, L, D] ->
   * eps [N, out, H, W] (+ readout / debug tensors on request). Records; does not submit.
   */
  forward(rec: Recorder, sample: Tensor, timestep: Timestep, encoderHiddenStates: Tensor, opts: UNetForwardOptions = {}): UNetOutput {
    this.checkInputs(sample, timestep, encoderHiddenStates);
    return rec.scope('unet', () =>
      rec.engine.tidy(() => {
        const temb = this.embedTime(rec, timestep);
        const stages = unetStages(this, { tembSilu: silu(rec, temb), context: encoderHiddenStates });
        const x = this.config.centerInputSample ? scale(rec, sample, 2, -1) : sample;
        const readout = opts.readout ? readoutStageNames(this) : [];
        const modules = opts.debug ? moduleOutputs(stages) : new Map<string, string>();
        // The debug taps include conv_out's: its norm output before the SiLU (conv_norm_out).
        const r = chainRun(rec, stages, x, { taps: opts.debug ? [...readout, 'conv_out'] : readout, outputs: [...modules.values()] });
        const out: UNetOutput = { eps: r.out };
        if (opts.readout) out.readout = r.taps.slice(0, readout.length);
        if (opts.debug) {
          const debug: Record<string, Tensor> = { temb };
          [...modules.keys()].forEach((name, i) => (debug[name] = r.outputs[i]!));
          debug['conv_norm_out'] = r.taps[readout.length]!;
          out.debug = debug;
        }
        return out;
      }),
    );
  }
}
