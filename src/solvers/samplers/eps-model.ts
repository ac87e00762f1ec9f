// What a guided sampler needs from the noise predictor: eps at (z_t, t, context), optionally the
// readout features of the same call, and the reverse pass of that call. UNet2DConditionModel is the
// real one (unetEpsModel); tests plug in models whose posterior is known in closed form.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import type { UNet2DConditionModel } from '../../models/unet/unet.js';
import { sampleVjp } from '../../models/unet/vjp.js';
import { readoutForward, readoutSampleVjp } from '../../models/unet/readout-vjp.js';

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
}

export interface EpsModel {
  readonly name: string;
  /** Channels of the latent it denoises. */
  readonly inChannels: number;
  forward(rec: Recorder, sample: Tensor, t: number, context: Tensor, opts?: { readout?: boolean; grad?: boolean }): EpsPass;
}

export interface UNetEpsOptions {
  /**
   * 'reuse' (default): a pass that will be differentiated keeps its stage inputs, and the VJP walks back
   * from them (one UNet forward per guided step). 'recompute': the VJP re-runs the forward (two forwards
   * per step; the stage inputs are not held across the operator's work).
   */
  forward?: 'reuse' | 'recompute';
}

/** The UNet as an EpsModel. Either way its VJP recomputes each stage's internals (stage checkpointing). */
export function unetEpsModel(unet: UNet2DConditionModel, opts: UNetEpsOptions = {}): EpsModel {
  const reuse = (opts.forward ?? 'reuse') === 'reuse';
  return {
    name: 'unet',
    inChannels: unet.config.inChannels,
    forward(rec, sample, t, context, o = {}) {
      if (reuse && o.grad && unet.dtype === 'f32') {
        const p = rec.scope('unet', () => readoutForward(rec, unet, sample, t, context));
        if (!o.readout) for (const f of p.features) f.dispose();
        return {
          eps: p.eps,
          readout: o.readout ? p.features : undefined,
          saved: p.saved,
          vjp: (r, gEps, gReadout) => p.vjp(r, gReadout ?? p.features.map(() => undefined), gEps),
          discard: () => p.discard(),
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
      };
    },
  };
}
