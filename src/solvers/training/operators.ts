// The two operators training fits, behind one face the trainer uses: SILO's CNN H(z, e_sigma), whose
// input is the latent itself, and the readout operator R(features, e_sigma), whose input is the frozen
// prior UNet's readout features of z at t = 0 (as SILO's readout trainer feeds it; the UNet is
// conditioned on the empty prompt's embedding, the sampler's unconditional input). The UNet never gets
// gradients: it runs forward once per micro-batch and its features feed both the loss and the backward.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import type { DegradationModel } from '../../models/silo/cnn.js';
import { degradationModelTrainingPass, type ParamGrads } from '../../models/silo/cnn-vjp.js';
import type { AggregationNetwork } from '../../models/silo/readout.js';
import { aggregationGrads } from '../../models/silo/readout-vjp.js';
import type { UNet2DConditionModel } from '../../models/unet/unet.js';
import type { NamedParameter } from './adam.js';

export type OperatorKind = 'cnn' | 'readout';

export interface TrainingPass {
  output: Tensor;
  grads: (cotangent: Tensor) => ParamGrads;
}

export interface TrainableOperator {
  readonly kind: OperatorKind;
  /** Latent channels in (the encoder's) and out. */
  readonly inChannels: number;
  readonly outChannels: number;
  readonly latentSize: number;
  readonly sigmaCondition: boolean;
  readonly sigmaEmbDim: number;
  /** What Adam optimises, by state-dict name. */
  parameters(): NamedParameter[];
  /** The operator's input for latents z [B, C, n, n] (recorded; owned by the caller's tidy frame). */
  input(rec: Recorder, z: Tensor): Tensor[];
  forward(rec: Recorder, input: Tensor[], sigmaEmb?: Tensor): Tensor;
  /**
   * A training step's forward: `output` = forward(input), and `grads(cotangent)`, called once, gives
   * d sum(cotangent * output) / d every parameter, by name (reusing what the forward kept where it can).
   */
  trainingPass(rec: Recorder, input: Tensor[], sigmaEmb: Tensor | undefined): TrainingPass;
  /** After an optimizer step: brings host-side values that follow the parameters up to date. */
  sync(): Promise<void>;
  /** Frees what the operator made for itself (not the model or the prior). */
  dispose(): void;
}

export function cnnOperator(model: DegradationModel): TrainableOperator {
  const c = model.config;
  return {
    kind: 'cnn',
    inChannels: c.latentDim,
    outChannels: c.outputDim,
    latentSize: c.latentSize,
    sigmaCondition: c.sigmaCondition,
    sigmaEmbDim: c.sigmaEmbDim,
    parameters: () => model.parameters(),
    input: (_rec, z) => [z],
    forward: (rec, [z], emb) => model.forward(rec, z!, emb),
    // The forward keeps its tape for the gradients: a step runs it once.
    trainingPass: (rec, [z], emb) => degradationModelTrainingPass(rec, model, z!, emb),
    sync: async () => {},
    dispose: () => {},
  };
}

/** The frozen prior and its conditioning: the readout operator's input comes from it. */
export interface ReadoutPrior {
  unet: UNet2DConditionModel;
  /** The text encoder's output for the empty prompt, [1, L, D] on the host (repeated over each batch). */
  context: { data: Float32Array; shape: readonly [1, number, number] };
}

export function readoutOperator(model: AggregationNetwork, prior: ReadoutPrior): TrainableOperator {
  const c = model.config;
  const { unet, context } = prior;
  assertArg(model.mixingLogits, 'train: the readout operator must be built trainable ({ trainable: true })');
  assertArg(unet.dtype === 'f32', `train: the prior UNet is ${unet.dtype}; load it in f32 to feed an operator being trained`);
  const [, len, dim] = context.shape;
  assertArg(context.data.length === len * dim, `train: the prompt embedding holds ${context.data.length} values, its shape ${shapeString(context.shape)} needs ${len * dim}`);
  // The context repeated to each batch size seen (usually one), uploaded once.
  const contexts = new Map<number, Tensor>();
  const contextFor = (rec: Recorder, b: number): Tensor => {
    let t = contexts.get(b);
    if (!t) {
      const data = new Float32Array(b * len * dim);
      for (let i = 0; i < b; i++) data.set(context.data, i * len * dim);
      t = rec.engine.keep(rec.engine.tensor(data, [b, len, dim], 'f32', 'empty_prompt'));
      contexts.set(b, t);
    }
    return t;
  };
  return {
    kind: 'readout',
    inChannels: unet.config.inChannels,
    outChannels: c.outputHeadChannels,
    latentSize: c.latentSize,
    sigmaCondition: c.sigmaCondition,
    sigmaEmbDim: c.sigmaEmbDim,
    parameters: () => model.parameters(),
    input: (rec, z) =>
      rec.scope('readout_features', () =>
        rec.engine.tidy(() => {
          const out = unet.forward(rec, z, 0, contextFor(rec, z.shape[0]!), { readout: true });
          out.eps.dispose();
          return out.readout!;
        }),
      ),
    forward: (rec, features, emb) => model.forward(rec, features, emb),
    // The readout's VJP re-runs its (small) forward; the prior UNet's features are the input, computed once.
    trainingPass: (rec, features, emb) => ({
      output: model.forward(rec, features, emb),
      grads: (cot) => aggregationGrads(rec, model, features, emb, cot).params,
    }),
    sync: () => model.syncMixing(),
    dispose: () => {
      for (const t of contexts.values()) t.dispose();
      contexts.clear();
    },
  };
}
