// Reverse pass of SILO's DegradationModel with respect to its latent input z and, for training, to its
// parameters:
//   vjp_z = d/dz sum(cotangent * model(z, sigma_emb));  grads = d/d params of the same sum
// There is no autograd tape: the forward is re-run keeping, per conv -> LayerNorm -> ReLU unit, the conv
// output (LayerNorm backward recomputes its statistics from it) and the LayerNorm output (ReLU's mask),
// then the backward ops are applied in reverse. The sigma map depends on sigma_emb only: for vjp_z it is
// a constant; with parameter gradients its gradient (from the two concatenations it enters) flows back
// through the sigma MLP. f32 only (the backward ops are f32).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, leakyRelu, relu } from '../../engine/ops/elementwise.js';
import { leakyReluBackward, reluBackward } from '../../engine/ops/elementwise-backward.js';
import { matmulBackward } from '../../engine/ops/matmul-backward.js';
import { concatChannels, sliceChannels } from '../../engine/ops/layout.js';
import { conv2dBackward, convTranspose2dBackward } from '../../engine/ops/conv2d-backward.js';
import { layerNormBackward } from '../../engine/ops/norm-backward.js';
import { Conv2d, type Linear } from '../layers.js';
import type { DegradationModel } from './cnn.js';

type Unit = DegradationModel['encoder'][number];

/** What one conv -> LayerNorm -> ReLU unit's backward needs. */
interface UnitSaved {
  input: Tensor;
  preNorm: Tensor;
  preRelu: Tensor;
}

function unitForward(rec: Recorder, unit: Unit, input: Tensor): { out: Tensor; saved: UnitSaved } {
  const preNorm = unit.conv.forward(rec, input);
  const preRelu = unit.norm.forward(rec, preNorm);
  return { out: relu(rec, preRelu), saved: { input, preNorm, preRelu } };
}

/** Parameter gradients by state-dict name (weights in the layout the model holds them). */
export type ParamGrads = Record<string, Tensor>;

/**
 * Gradient with respect to the unit's input (unless `needX` is false); frees the unit's saved conv and
 * norm outputs. With `params`, the conv's and the norm's parameter gradients land there.
 */
function unitBackward(rec: Recorder, unit: Unit, s: UnitSaved, gradOut: Tensor, params?: ParamGrads, needX = true): Tensor | undefined {
  const r = rec.engine.tidy(() => {
    const gNorm = reluBackward(rec, s.preRelu, gradOut);
    s.preRelu.dispose();
    const n = layerNormBackward(rec, s.preNorm, gNorm, unit.norm.shape, unit.norm.weight, params ? unit.norm.bias : undefined, { eps: unit.norm.eps, paramGrads: !!params });
    s.preNorm.dispose();
    const c = convBackward(rec, unit.conv, s.input, n.dx, needX, !!params);
    return { dx: c.gradX, norm: n, conv: c };
  });
  if (params) {
    params[`${unit.names[0]}.weight`] = r.conv.gradWeight!;
    params[`${unit.names[0]}.bias`] = r.conv.gradBias!;
    params[`${unit.names[1]}.weight`] = r.norm.dWeight!;
    params[`${unit.names[1]}.bias`] = r.norm.dBias!;
  }
  return r.dx;
}

function convBackward(rec: Recorder, conv: Unit['conv'], input: Tensor, gradOut: Tensor, needX: boolean, params: boolean) {
  const needs = { x: needX, weight: params, bias: params };
  return conv instanceof Conv2d
    ? conv2dBackward(rec, input, conv.weight, gradOut, { stride: conv.opts.stride, padding: conv.opts.padding, groups: conv.opts.groups, needs })
    : convTranspose2dBackward(rec, input, conv.weight, gradOut, { stride: conv.opts.stride, padding: conv.opts.padding, outputPadding: conv.opts.outputPadding, needs });
}

/** A Linear layer's weight and bias gradients (its weight as held) and, when asked, its input's. */
function linearGrads(rec: Recorder, lin: Linear, name: string, x: Tensor, gradOut: Tensor, params: ParamGrads, needX: boolean): Tensor | undefined {
  // y = x W^T + b with W [out, in], or y = x W + b with W held [in, out].
  const g = matmulBackward(rec, x, lin.weight, gradOut, { transB: !lin.transposed, needs: { a: needX, b: true, bias: true }, op: `${name}/backward` });
  params[`${name}.weight`] = g.gradB!;
  params[`${name}.bias`] = g.gradBias!;
  return g.gradA;
}

/** vjp_z and, when asked, the parameter gradients of sum(cotangent * model(z, sigma_emb)). */
export interface DegradationGrads {
  z?: Tensor;
  params?: ParamGrads;
}

function checkInputs(model: DegradationModel, z: Tensor, sigmaEmb: Tensor | undefined): void {
  const { latentDim, latentSize } = model.config;
  assertArg(z.dtype === 'f32', `DegradationModel vjp: backward ops take f32 tensors, got z ${z.dtype}`);
  // The forward's own checks (z shape, sigma_emb presence and batch) run in sigmaMap / forward; repeat
  // the z check here since the forward below is re-implemented with saves.
  assertArg(
    z.rank === 4 && z.shape[1] === latentDim && z.shape[2] === latentSize && z.shape[3] === latentSize,
    `DegradationModel vjp: z must be [B, ${latentDim}, ${latentSize}, ${latentSize}], got ${shapeString(z.shape)}`,
  );
  assertArg(!!sigmaEmb === model.config.sigmaCondition, `DegradationModel vjp: sigma_emb must be given exactly when the model is sigma-conditioned`);
  if (sigmaEmb) assertArg(sigmaEmb.shape[0] === z.shape[0], `DegradationModel vjp: batch of sigma_emb ${shapeString(sigmaEmb.shape)} differs from z ${shapeString(z.shape)}`);
}

function checkCotangent(model: DegradationModel, z: Tensor, cotangent: Tensor): void {
  const { outputDim, latentSize } = model.config;
  const outShape = [z.shape[0], outputDim, latentSize, latentSize];
  assertArg(
    cotangent.rank === 4 && cotangent.shape.every((d, i) => d === outShape[i]),
    `DegradationModel vjp: cotangent must have the output's shape ${shapeString(outShape as number[])}, got ${shapeString(cotangent.shape)}`,
  );
  assertArg(cotangent.dtype === 'f32', `DegradationModel vjp: backward ops take f32 tensors, got cotangent ${cotangent.dtype}`);
}

function checkArgs(model: DegradationModel, z: Tensor, sigmaEmb: Tensor | undefined, cotangent: Tensor): void {
  checkCotangent(model, z, cotangent);
  checkInputs(model, z, sigmaEmb);
}

/**
 * vjp_z of DegradationModel: z [B, latent_dim, 64, 64], sigmaEmb [B, 1280] (omit without sigma_condition),
 * cotangent shaped like the output [B, output_dim, 64, 64]. Returns d/dz sum(cotangent * model(z, sigmaEmb)).
 */
export function degradationModelVjp(rec: Recorder, model: DegradationModel, z: Tensor, sigmaEmb: Tensor | undefined, cotangent: Tensor): Tensor {
  checkArgs(model, z, sigmaEmb, cotangent);
  return rec.scope('silo_cnn_vjp', () => backward(rec, model, z, sigmaEmb, cotangent, { z: true, params: false }).z!);
}

/**
 * The gradients of sum(cotangent * model(z, sigmaEmb)) with respect to every parameter (by state-dict
 * name, as DegradationModel.parameters() lists them) and, with `needZ`, to z: what a training step needs.
 */
export function degradationModelGrads(rec: Recorder, model: DegradationModel, z: Tensor, sigmaEmb: Tensor | undefined, cotangent: Tensor, opts: { needZ?: boolean } = {}): DegradationGrads {
  checkArgs(model, z, sigmaEmb, cotangent);
  return rec.scope('silo_cnn_grads', () => backward(rec, model, z, sigmaEmb, cotangent, { z: !!opts.needZ, params: true }));
}

/** What the backward needs of the forward: per unit its input, conv output and norm output. */
interface Tape {
  sigmaEmb?: Tensor;
  sigmaMap?: Tensor;
  /** The sigma MLP's pre-activation and activation (kept only when its parameters get gradients). */
  sigmaHidden?: { pre: Tensor; act: Tensor };
  encoded: Tensor;
  encSaved: UnitSaved[];
  decSaved: UnitSaved[];
  adj: UnitSaved;
  proc: UnitSaved;
  /** processing.0's output, processing.3's input. */
  procOut: Tensor;
}

/** The forward up to processing.3's input, keeping the tape (in the caller's tidy frame). */
function forwardTape(rec: Recorder, model: DegradationModel, z: Tensor, sigmaEmb: Tensor | undefined, params: boolean): Tape {
  let sigmaMap: Tensor | undefined;
  let sigmaHidden: { pre: Tensor; act: Tensor } | undefined;
  if (sigmaEmb && params) {
    const pre = model.sigmaPre0!.forward(rec, sigmaEmb);
    const act = leakyRelu(rec, pre);
    sigmaHidden = { pre, act };
    const { latentSize } = model.config;
    sigmaMap = model.sigmaPre2!.forward(rec, act).reshape([sigmaEmb.shape[0]!, 1, latentSize, latentSize]);
  } else if (sigmaEmb) sigmaMap = model.sigmaMap(rec, sigmaEmb);
  let x = sigmaMap ? concatChannels(rec, [z, sigmaMap]) : z;
  const encSaved: UnitSaved[] = [];
  for (const unit of model.encoder) {
    const r = unitForward(rec, unit, x);
    encSaved.push(r.saved);
    x = r.out;
  }
  const encoded = x;
  const decSaved: UnitSaved[] = [];
  for (const unit of model.decoder) {
    const r = unitForward(rec, unit, x);
    decSaved.push(r.saved);
    x = r.out;
  }
  const skipIn = sigmaMap ? concatChannels(rec, [encoded, sigmaMap]) : encoded;
  const adj = unitForward(rec, model.adjustEncoding, skipIn);
  const proc = unitForward(rec, model.processing0, add(rec, x, adj.out));
  return {
    ...(sigmaEmb ? { sigmaEmb } : {}),
    ...(sigmaMap ? { sigmaMap } : {}),
    ...(sigmaHidden ? { sigmaHidden } : {}),
    encoded,
    encSaved,
    decSaved,
    adj: adj.saved,
    proc: proc.saved,
    procOut: proc.out,
  };
}

function backward(rec: Recorder, model: DegradationModel, z: Tensor, sigmaEmb: Tensor | undefined, cotangent: Tensor, needs: { z: boolean; params: boolean }): DegradationGrads {
  return rec.engine.tidy(() => backwardFromTape(rec, model, forwardTape(rec, model, z, sigmaEmb, needs.params), cotangent, needs));
}

/**
 * The forward pass of a training step, keeping what the parameter gradients need, so a step runs the
 * forward once (not again inside the VJP): `output` is model(z, sigma_emb), and `grads(cotangent)`, called
 * once, gives the parameter gradients of sum(cotangent * output) and frees the tape.
 */
export function degradationModelTrainingPass(
  rec: Recorder,
  model: DegradationModel,
  z: Tensor,
  sigmaEmb: Tensor | undefined,
): { output: Tensor; grads: (cotangent: Tensor) => ParamGrads } {
  checkInputs(model, z, sigmaEmb);
  const { tape, output } = rec.scope('silo_cnn', () =>
    rec.engine.tidy(() => {
      const t = forwardTape(rec, model, z, sigmaEmb, true);
      return { tape: t, output: model.processing3.forward(rec, t.procOut) };
    }),
  );
  let used = false;
  return {
    output,
    grads: (cotangent) => {
      assertArg(!used, 'DegradationModel training pass: grads() takes the tape and can be called once');
      used = true;
      checkCotangent(model, z, cotangent);
      return rec.scope('silo_cnn_grads', () => rec.engine.tidy(() => backwardFromTape(rec, model, tape, cotangent, { z: false, params: true }).params!));
    },
  };
}

function backwardFromTape(rec: Recorder, model: DegradationModel, tape: Tape, cotangent: Tensor, needs: { z: boolean; params: boolean }): DegradationGrads {
  const { latentDim } = model.config;
  const params: ParamGrads | undefined = needs.params ? {} : undefined;
  const { sigmaMap, sigmaHidden, sigmaEmb, encoded, encSaved, decSaved, adj, proc, procOut } = tape;
  // Backward. processing.3 (plain conv) -> processing.0 unit -> the sum feeds both branches.
  const p3 = convBackward(rec, model.processing3, procOut, cotangent, true, !!params);
  if (params) {
    params['processing.3.weight'] = p3.gradWeight!;
    params['processing.3.bias'] = p3.gradBias!;
  }
  procOut.dispose();
  const gSum = unitBackward(rec, model.processing0, proc, p3.gradX!, params)!;
  const gSkipIn = unitBackward(rec, model.adjustEncoding, adj, gSum, params)!;
  let g = gSum;
  for (let i = model.decoder.length - 1; i >= 0; i--) g = unitBackward(rec, model.decoder[i]!, decSaved[i]!, g, params)!;
  // encoded reaches the output through the decoder and through the skip branch's first 128 channels.
  const c = encoded.shape[1]!;
  g = add(rec, g, sigmaMap ? sliceChannels(rec, gSkipIn, 0, c) : gSkipIn);
  // The first conv's input gradient is needed for z, or for the sigma map's share of the input.
  const needInput = needs.z || (!!params && !!sigmaMap);
  for (let i = model.encoder.length - 1; i >= 0; i--) g = unitBackward(rec, model.encoder[i]!, encSaved[i]!, g, params, i > 0 || needInput)!;
  const out: DegradationGrads = {};
  if (needs.z) out.z = sigmaMap ? sliceChannels(rec, g, 0, latentDim) : g;
  if (params && sigmaMap && sigmaHidden) {
    // d sigma map = its channel of the encoder input's gradient + its channel of the skip input's.
    const dMap = add(rec, sliceChannels(rec, g, latentDim, 1), sliceChannels(rec, gSkipIn, c, 1));
    const dm = dMap.reshape([sigmaEmb!.shape[0]!, -1]);
    const dAct = linearGrads(rec, model.sigmaPre2!, 'sigma_condition_precondition.2', sigmaHidden.act, dm, params, true)!;
    const dPre = leakyReluBackward(rec, sigmaHidden.pre, dAct);
    linearGrads(rec, model.sigmaPre0!, 'sigma_condition_precondition.0', sigmaEmb!, dPre, params, false);
  }
  if (params) out.params = params;
  return out;
}
