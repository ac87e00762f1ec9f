// The diffusion half of every guided sampler: eps = UNet(z_t, t, text) (with optional classifier-free
// guidance), one DDPM step, and the reverse path from a gradient on the predicted x0 back to z_t.
//   x0 = a z_t + b eps   (a = 1/sqrt(abar_t), b = -sqrt(1 - abar_t)/sqrt(abar_t) for epsilon prediction)
// so d/dz_t <g, x0> = a g + J_eps^T (b g), the second term a UNet VJP. With CFG the UNet runs once on a
// batch of two (unconditional, text) and eps = eps_u + s (eps_c - eps_u); SILO's cfg_fix makes the CNN
// operator read x0 from the text branch alone (eps_c), while the step itself uses the guided eps.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { scale, scaleAdd } from '../../engine/ops/elementwise.js';
import type { DDPMScheduler } from '../schedulers/ddpm.js';
import { mapScalar, scalarValue, type Scalar } from '../../engine/step-value.js';
import { concatBatch, sliceBatch, sumBatch } from './batch.js';
import type { EpsModel, EpsPass } from './eps-model.js';

export interface DiffusionPrior {
  /** The noise predictor (unetEpsModel(unet) for Stable Diffusion). */
  model: EpsModel;
  scheduler: DDPMScheduler;
  /** Text conditioning [1, L, D] (CLIP last_hidden_state). */
  text: Tensor;
  /** Unconditional (negative prompt) embedding [1, L, D]; needed when guidanceScale != 1. */
  uncond?: Tensor;
  /** Classifier-free guidance scale (SILO's --cfg, default 1: no guidance, one UNet branch). */
  guidanceScale?: number;
  /** SILO's --cfg_fix: the operator reads x0 predicted from the text branch alone. */
  cfgFix?: boolean;
}

/** One denoising step's tensors (the caller owns them all). */
export interface Denoised {
  zt: Tensor;
  t: number;
  /** The eps the DDPM step used (guided when CFG is on). */
  eps: Tensor;
  /** x0 predicted from eps. */
  x0: Tensor;
  /** x0 predicted from the text branch alone (CFG with cfgFix), else undefined. */
  x0Text?: Tensor;
  /** The unguided DDPM step's prev_sample. */
  prev: Tensor;
  /** x0 = a z_t + b eps (StepValues when t was one: they follow a replay's t). */
  a: Scalar;
  b: Scalar;
  /** The UNet's readout features (batch of the text branch only), when requested. */
  readout?: Tensor[];
  /** The model call, for its VJP (a batch of two under CFG). */
  pass: EpsPass;
  /** Inputs the pass's VJP reads (the CFG batch), freed with the rest. */
  inputs: Tensor[];
}

export function usesCfg(prior: DiffusionPrior): boolean {
  return (prior.guidanceScale ?? 1) !== 1;
}

function checkPrior(prior: DiffusionPrior, zt: Tensor): void {
  assertArg(zt.rank === 4 && zt.shape[0] === 1, `sampler: z_t must be [1, C, h, w], got ${shapeString(zt.shape)}`);
  assertArg(prior.text.rank === 3 && prior.text.shape[0] === 1, `sampler: the text embedding must be [1, L, D], got ${shapeString(prior.text.shape)}`);
  if (usesCfg(prior)) {
    assertArg(
      prior.uncond !== undefined && prior.uncond.shape.every((d, i) => d === prior.text.shape[i]),
      `sampler: guidanceScale ${prior.guidanceScale} needs an unconditional embedding shaped like the text one ${shapeString(prior.text.shape)}`,
    );
  }
}

/** The UNet input batch and context: [z_t] / text, or [z_t, z_t] / [uncond, text] under CFG. */
function unetBatch(rec: Recorder, prior: DiffusionPrior, zt: Tensor): { sample: Tensor; context: Tensor } {
  if (!usesCfg(prior)) return { sample: zt, context: prior.text };
  return { sample: concatBatch(rec, [zt, zt]), context: concatBatch(rec, [prior.uncond!, prior.text]) };
}

/**
 * eps, x0 and the unguided prev_sample at timestep t. `noise` is the DDPM variance noise (needed when
 * t > 0). `readout` also returns the UNet's readout features (text branch). A StepValue t makes every
 * t-dependent value follow a captured program's replays (replay.ts).
 */
export function denoise(rec: Recorder, prior: DiffusionPrior, zt: Tensor, t: Scalar, noise: Tensor | undefined, opts: { readout?: boolean; grad?: boolean } = {}): Denoised {
  checkPrior(prior, zt);
  const engine = rec.engine;
  const s = prior.guidanceScale ?? 1;
  const a = mapScalar(t, (tt) => prior.scheduler.stepCoefficients(tt).x0FromSample);
  const b = mapScalar(t, (tt) => prior.scheduler.stepCoefficients(tt).x0FromModel);
  assertArg(prior.scheduler.config.predictionType === 'epsilon' && !prior.scheduler.config.clipSample, 'sampler: guided sampling needs an epsilon-prediction scheduler without clip_sample (SD-1.5)');
  return engine.tidy(() => {
    const batch = unetBatch(rec, prior, zt);
    const out = prior.model.forward(rec, batch.sample, t, batch.context, { readout: opts.readout, grad: opts.grad ?? true });
    let eps = out.eps;
    let epsText: Tensor | undefined;
    let readout = out.readout;
    if (usesCfg(prior)) {
      const epsU = sliceBatch(rec, out.eps, 0);
      epsText = sliceBatch(rec, out.eps, 1);
      eps = scaleAdd(rec, epsU, 1 - s, epsText, s, { op: 'cfg' });
      readout = readout?.map((f) => sliceBatch(rec, f, 1));
    }
    const step = prior.scheduler.step(rec, eps, t, zt, { noise });
    const x0Text = usesCfg(prior) && prior.cfgFix ? scaleAdd(rec, zt, a, epsText!, b, { op: 'x0_text' }) : undefined;
    const inputs = usesCfg(prior) ? [batch.sample, batch.context] : [];
    return { zt, t: scalarValue(t), eps, x0: step.predOriginalSample, x0Text, prev: step.prevSample, a, b, readout, pass: out, inputs };
  });
}

/**
 * d/dz_t <g, x0> for the x0 the operator read (`branch` 'text' = cfgFix's text-only x0), through the
 * scheduler's x0 formula and the UNet. Records; the caller owns the result.
 */
export function x0Vjp(rec: Recorder, prior: DiffusionPrior, d: Denoised, g: Tensor, branch: 'guided' | 'text' = 'guided'): Tensor {
  const s = prior.guidanceScale ?? 1;
  return rec.engine.tidy(() => {
    const gEps = scale(rec, g, d.b);
    let viaUnet: Tensor;
    if (!usesCfg(prior)) {
      viaUnet = d.pass.vjp(rec, gEps);
    } else {
      // eps = (1 - s) eps_u + s eps_c (guided) or eps_c (text branch): weight each half of the batch.
      const [wu, wc] = branch === 'text' ? [0, 1] : [1 - s, s];
      const gBatch = concatBatch(rec, [scale(rec, gEps, wu), scale(rec, gEps, wc)]);
      viaUnet = sumBatch(rec, d.pass.vjp(rec, gBatch));
    }
    return scaleAdd(rec, g, d.a, viaUnet, 1, { op: 'x0_vjp' });
  });
}

/**
 * d/dz_t of sum_k <g[k], readout[k]> for the text branch's readout features (SILO-RG: w_hat depends on
 * z_t only through the features of the same UNet call).
 */
export function readoutVjp(rec: Recorder, prior: DiffusionPrior, d: Denoised, g: readonly Tensor[]): Tensor {
  if (!usesCfg(prior)) return d.pass.vjp(rec, undefined, g);
  return rec.engine.tidy(() => {
    // The unconditional half gets a zero cotangent.
    const gBatch = g.map((x) => concatBatch(rec, [scale(rec, x, 0), x]));
    return sumBatch(rec, d.pass.vjp(rec, undefined, gBatch));
  });
}

/** Frees every tensor of a Denoised except z_t and those listed in `keep`. */
export function disposeDenoised(d: Denoised, keep: Tensor[] = []): void {
  d.pass.discard();
  const ts = [d.eps, d.x0, d.x0Text, d.prev, ...(d.readout ?? []), ...d.inputs, d.pass.eps, ...(d.pass.readout ?? [])];
  for (const t of ts) if (t && !keep.includes(t)) t.dispose();
}
