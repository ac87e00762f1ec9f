// What a guided sampler needs from the noise predictor: eps at (z_t, t, context), optionally the
// readout features of the same call, and the reverse pass of that call. UNet2DConditionModel is the
// real one (unetEpsModel); tests plug in models whose posterior is known in closed form.

import type { Scalar } from '../../engine/step-value.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import type { UNet2DConditionModel } from '../../models/unet/unet.js';
import { sampleVjp } from '../../models/unet/vjp.js';
import { readoutForward, readoutSampleVjp } from '../../models/unet/readout-vjp.js';
import { unetTapeBytes } from '../../models/unet/tape-bytes.js';
import { assertArg } from '../../engine/errors.js';

/**
 * One forward call; `vjp` differentiates it with respect to the sample (at most once). A pass is a
 * plain object whose `saved` holds what the reverse pass reads: return it from a tidy() to keep it.
 */
export interface EpsPass {
  eps: Tensor;
  /** The readout features (when requested). */
  readout?: Tensor[];
  /** d/d sample of <gEps, eps> + sum_k <gReadout[k], readout[k]> (absent cotangents are zero). */
  vjp(rec: Recorder, gEps?: Tensor, gReadout?: readonly (Tensor | undefined)[]): Tensor;
  /** Frees the saved state when no reverse pass follows. */
  discard(): void;
  saved?: unknown;
  /** How a differentiable pass was recorded: its activations kept ('reuse') or rebuilt by the VJP. */
  forwardMode?: ForwardMode;
}

export type ForwardMode = 'reuse' | 'recompute';

export interface EpsModel {
  readonly name: string;
  /** Channels of the latent it denoises. */
  readonly inChannels: number;
  /**
   * Whether every value it derives from t follows a StepValue t (step-value.ts), so a step through it
   * can be captured once and replayed at other timesteps. Models that read t as a plain number leave it unset.
   */
  readonly replayable?: boolean;
  forward(rec: Recorder, sample: Tensor, t: Scalar, context: Tensor, opts?: { readout?: boolean; grad?: boolean }): EpsPass;
}

/** Default ceiling on the activations a 'reuse' pass may keep: 1 GiB (SD-1.5 64x64 keeps ~0.18 GiB per sample). */
export const DEFAULT_ACTIVATION_BUDGET = 2 ** 30;

export interface UNetEpsOptions {
  /**
   * 'reuse': a pass that will be differentiated keeps its stage inputs, and the VJP walks back from them
   * (one UNet forward per guided step). 'recompute': the VJP re-runs the forward (two forwards per step;
   * the stage inputs are not held across the operator's work). 'auto' (default): reuse when the kept
   * stage inputs fit in `activationBudget` bytes (unetTapeBytes of the pass's sample), else recompute.
   */
  forward?: ForwardMode | 'auto';
  /** Bytes 'auto' lets a pass keep (default DEFAULT_ACTIVATION_BUDGET). */
  activationBudget?: number;
}

/** The forward mode `opts` selects for a differentiable pass over a sample of `shape`. */
export function unetForwardMode(unet: UNet2DConditionModel, shape: readonly number[], opts: UNetEpsOptions = {}): ForwardMode {
  const mode = opts.forward ?? 'auto';
  if (mode !== 'auto') return mode;
  return unetTapeBytes(unet, shape) <= (opts.activationBudget ?? DEFAULT_ACTIVATION_BUDGET) ? 'reuse' : 'recompute';
}

/** The UNet as an EpsModel. Either way its VJP recomputes each stage's internals (stage checkpointing). */
export function unetEpsModel(unet: UNet2DConditionModel, opts: UNetEpsOptions = {}): EpsModel {
  const mode = opts.forward ?? 'auto';
  assertArg(mode === 'auto' || mode === 'reuse' || mode === 'recompute', `unetEpsModel: forward must be 'auto', 'reuse' or 'recompute', got ${String(mode)}`);
  const budget = opts.activationBudget ?? DEFAULT_ACTIVATION_BUDGET;
  assertArg(Number.isFinite(budget) && budget >= 0, `unetEpsModel: activationBudget must be a non-negative number of bytes, got ${budget}`);
  return {
    name: 'unet',
    inChannels: unet.config.inChannels,
    // t reaches the UNet only through its time projection, which follows a StepValue (embeddings.ts).
    replayable: true,
    forward(rec, sample, t, context, o = {}) {
      // An f16 UNet has no tape (its VJP is f32-only and recomputes anyway).
      const reuse = !!o.grad && unet.dtype === 'f32' && unetForwardMode(unet, sample.shape, opts) === 'reuse';
      if (reuse) {
        const p = rec.scope('unet', () => readoutForward(rec, unet, sample, t, context));
        if (!o.readout) for (const f of p.features) f.dispose();
        return {
          eps: p.eps,
          readout: o.readout ? p.features : undefined,
          saved: p.saved,
          vjp: (r, gEps, gReadout) => p.vjp(r, gReadout ?? p.features.map(() => undefined), gEps),
          discard: () => p.discard(),
          forwardMode: 'reuse',
        };
      }
      const out = rec.scope('unet', () => unet.forward(rec, sample, t, context, { readout: o.readout }));
      return {
        eps: out.eps,
        readout: out.readout,
        vjp(r, gEps, gReadout) {
          if (gReadout && gReadout.some((g) => g)) return readoutSampleVjp(r, unet, sample, t, context, gReadout, gEps);
          if (!gEps) throw new Error('unet vjp: no cotangent');
          return sampleVjp(r, unet, sample, t, context, gEps);
        },
        discard: () => {},
        forwardMode: o.grad ? 'recompute' : undefined,
      };
    },
  };
}
