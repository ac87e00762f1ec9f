// The UNet's reverse pass for SILO's Readout-Guidance operator (SILO-RG): w_hat = R(features, sigma_emb)
// reads the 12 up-block ResNet hidden branches of the same UNet call that predicts eps, so its guidance
// gradient needs
//   readoutSampleVjp: d/d sample of [ sum_k <gradFeatures[k], feature_k(sample)> + <gradEps, eps(sample)> ]
// (gradEps optional). Built on the stage chain of ./vjp.ts: each up-block ResNet stage's tap is its hidden
// branch h2 = conv2(...), and the feature cotangent is injected there (../vjp-stages.ts resnetStage).
// readoutForward runs the forward once for eps, the features AND a tape, so a sampler differentiates the
// same recorded pass instead of running the UNet forward a second time.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { scale, silu } from '../../engine/ops/elementwise.js';
import { chainBackward, chainForward, type ChainTape } from '../vjp-stages.js';
import type { Timestep } from './embeddings.js';
import type { UNet2DConditionModel } from './unet.js';
import { readoutStageNames, unetStages, type Consts } from './stages.js';


/** Each readout feature's shape for a sample [N, C, H, W]: up block i runs at H / 2^(down-samplers not yet undone). */
function featureShapes(unet: UNet2DConditionModel, sample: Tensor): number[][] {
  const [n, , h, w] = sample.shape as [number, number, number, number];
  let f = unet.upBlocks.filter((b) => b.upsampler).length;
  return unet.upBlocks.flatMap((b) => {
    const shapes = b.resnets.map((r) => [n, r.outChannels, h >> f, w >> f]);
    if (b.upsampler) f--;
    return shapes;
  });
}

const sameShape = (t: Tensor, want: readonly number[]) => t.rank === want.length && t.shape.every((d, i) => d === want[i]);

function checkInputs(what: string, unet: UNet2DConditionModel, sample: Tensor, context: Tensor, grads: readonly (Tensor | undefined)[]): void {
  const c = unet.config;
  assertArg(unet.dtype === 'f32', `${what}: the model must be f32, it is ${unet.dtype}`);
  for (const t of [sample, context, ...grads]) {
    if (t) assertArg(t.dtype === 'f32', `${what}: f32 only (gradients), got ${t.name} ${t.dtype} ${shapeString(t.shape)}`);
  }
  const m = unet.sizeMultiple;
  assertArg(
    sample.rank === 4 && sample.shape[1] === c.inChannels && sample.shape[2]! % m === 0 && sample.shape[3]! % m === 0,
    `${what}: sample ${shapeString(sample.shape)} must be [N, ${c.inChannels}, H, W] with H and W multiples of ${m}`,
  );
  assertArg(
    context.rank === 3 && context.shape[0] === sample.shape[0],
    `${what}: encoder_hidden_states ${shapeString(context.shape)} must be [${sample.shape[0]}, L, D]`,
  );
}

/** The eps of a forward pass, its readout features, and what its reverse pass needs. */
export interface UNetReadoutPass {
  /** [N, out, H, W]; the caller owns it. */
  eps: Tensor;
  /** The 12 (SD-1.5) readout features, as UNet2DConditionModel.forward's `readout`; the caller owns them. */
  features: Tensor[];
  /**
   * d/d sample of sum_k <gradFeatures[k], features[k]> + <gradEps, eps> for this pass (an undefined entry:
   * a zero cotangent). Consumes the saved state: call at most once (or discard()).
   */
  vjp(rec: Recorder, gradFeatures: readonly (Tensor | undefined)[], gradEps?: Tensor): Tensor;
  /** Frees the saved state without a reverse pass (eps and features stay the caller's). */
  discard(): void;
  /** The saved stage inputs and constants (a plain object: return the pass from a tidy() to keep them). */
  saved: { tape: ChainTape; tembSilu: Tensor; centred?: Tensor } | null;
}

/** The feature cotangents by stage name, checked against the features' shapes. */
function injections(what: string, unet: UNet2DConditionModel, sample: Tensor, grads: readonly (Tensor | undefined)[]): Map<string, Tensor> {
  const names = readoutStageNames(unet);
  assertArg(grads.length === names.length, `${what}: ${grads.length} feature gradients for ${names.length} readout features`);
  const shapes = featureShapes(unet, sample);
  const inject = new Map<string, Tensor>();
  grads.forEach((g, k) => {
    if (!g) return;
    assertArg(sameShape(g, shapes[k]!), `${what}: gradFeatures[${k}] ${shapeString(g.shape)} must be shaped like feature ${k} (${names[k]}): ${shapeString(shapes[k]!)}`);
    inject.set(names[k]!, g);
  });
  return inject;
}

function checkGradEps(what: string, unet: UNet2DConditionModel, sample: Tensor, gradEps: Tensor): void {
  const want = [sample.shape[0]!, unet.config.outChannels, sample.shape[2]!, sample.shape[3]!];
  assertArg(sameShape(gradEps, want), `${what}: gradEps ${shapeString(gradEps.shape)} must be ${shapeString(want)}`);
}

/**
 * d/d sample of [ sum_k <gradFeatures[k], feature_k(sample)> + <gradEps, eps(sample)> ], feature_k being
 * the readout features of UNet2DConditionModel.forward (`readout: true`) and gradFeatures[k] shaped like
 * them (12 for SD-1.5; an undefined entry is a zero cotangent). gradEps omitted: no eps term (the chain
 * then stops at the last readout ResNet). The timestep and the context are constants. f32 only. Records;
 * does not submit.
 */
export function readoutSampleVjp(
  rec: Recorder,
  unet: UNet2DConditionModel,
  sample: Tensor,
  timestep: Timestep,
  encoderHiddenStates: Tensor,
  gradFeatures: readonly (Tensor | undefined)[],
  gradEps?: Tensor,
): Tensor {
  const what = 'UNet readoutSampleVjp';
  checkInputs(what, unet, sample, encoderHiddenStates, [...gradFeatures, gradEps]);
  if (gradEps) checkGradEps(what, unet, sample, gradEps);
  const inject = injections(what, unet, sample, gradFeatures);
  assertArg(gradEps || inject.size > 0, `${what}: every cotangent is absent (give gradEps or a feature gradient)`);
  const centre = unet.config.centerInputSample;
  return rec.scope('unet_readout_vjp', () =>
    rec.engine.tidy(() => {
      const k: Consts = { tembSilu: silu(rec, unet.timeEmbedding(rec, timestep)), context: encoderHiddenStates };
      const stages = unetStages(unet, k);
      // Without gradEps nothing flows back from after the last injected stage: the forward stops at the
      // next stage's input (the shape of the zero cotangent chainBackward starts from).
      const stopAt = gradEps ? undefined : Math.max(...stages.flatMap((s, i) => (inject.has(s.name) ? [i] : []))) + 1;
      const x = centre ? scale(rec, sample, 2, -1) : sample;
      const dx = chainBackward(rec, chainForward(rec, stages, x, { stopAt }).tape, gradEps, inject);
      return centre ? scale(rec, dx, 2) : dx;
    }),
  );
}

/**
 * One UNet forward pass that returns eps and the readout features and keeps its stage inputs (and each
 * resnet's norm2 input) for `vjp` (a second, cheaper call than re-running readoutSampleVjp's forward).
 * Memory: unetTapeBytes, live until vjp() or discard(). f32 only. Records; does not submit.
 */
export function readoutForward(rec: Recorder, unet: UNet2DConditionModel, sample: Tensor, timestep: Timestep, encoderHiddenStates: Tensor): UNetReadoutPass {
  const what = 'UNet readoutForward';
  checkInputs(what, unet, sample, encoderHiddenStates, []);
  const centre = unet.config.centerInputSample;
  const names = readoutStageNames(unet);
  const made = rec.scope('unet', () =>
    rec.engine.tidy(() => {
      const tembSilu = silu(rec, unet.timeEmbedding(rec, timestep));
      const x = centre ? scale(rec, sample, 2, -1) : sample;
      const f = chainForward(rec, unetStages(unet, { tembSilu, context: encoderHiddenStates }), x, { output: true, taps: names, keep: true });
      return { eps: f.out!, features: f.taps, saved: { tape: f.tape, tembSilu, centred: centre ? x : undefined } };
    }),
  );
  const free = (s: NonNullable<UNetReadoutPass['saved']>) => {
    s.tembSilu.dispose();
    s.centred?.dispose();
  };
  const pass: UNetReadoutPass = {
    eps: made.eps,
    features: made.features,
    saved: made.saved,
    vjp(r, gradFeatures, gradEps) {
      const s = pass.saved;
      assertArg(s !== null, `${what}: this pass's vjp() was already called or it was discarded`);
      const vw = 'UNet readoutForward vjp';
      checkInputs(vw, unet, sample, encoderHiddenStates, [...gradFeatures, gradEps]);
      if (gradEps) checkGradEps(vw, unet, sample, gradEps);
      const inject = injections(vw, unet, sample, gradFeatures);
      assertArg(gradEps || inject.size > 0, `${vw}: every cotangent is absent (give gradEps or a feature gradient)`);
      pass.saved = null;
      return r.scope('unet_readout_vjp', () =>
        r.engine.tidy(() => {
          const dx = chainBackward(r, s.tape, gradEps, inject);
          free(s);
          return centre ? scale(r, dx, 2) : dx;
        }),
      );
    },
    discard() {
      const s = pass.saved;
      if (!s) return;
      pass.saved = null;
      for (const t of s.tape.inputs) if (t !== s.tape.x) t.dispose();
      for (const t of s.tape.kept) t?.dispose();
      free(s);
    },
  };
  return pass;
}
