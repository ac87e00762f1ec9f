// Reverse pass of SILO's DegradationModel with respect to its latent input z:
//   vjp_z = d/dz sum(cotangent * model(z, sigma_emb))
// There is no autograd tape: the forward is re-run keeping, per conv -> LayerNorm -> ReLU unit, the conv
// output (LayerNorm backward recomputes its statistics from it) and the LayerNorm output (ReLU's mask),
// then the backward ops are applied in reverse. The sigma map depends on sigma_emb only, so it is a
// constant here and the sigma branch is never differentiated. f32 only (the backward ops are f32).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, relu } from '../../engine/ops/elementwise.js';
import { reluBackward } from '../../engine/ops/elementwise-backward.js';
import { concatChannels, sliceChannels } from '../../engine/ops/layout.js';
import { conv2dBackward, convTranspose2dBackward } from '../../engine/ops/conv2d-backward.js';
import { layerNormBackward } from '../../engine/ops/norm-backward.js';
import { Conv2d } from '../layers.js';
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

/** Gradient with respect to the unit's input; frees the unit's saved conv and norm outputs. */
function unitBackward(rec: Recorder, unit: Unit, s: UnitSaved, gradOut: Tensor): Tensor {
  return rec.engine.tidy(() => {
    const gNorm = reluBackward(rec, s.preRelu, gradOut);
    s.preRelu.dispose();
    const gConv = layerNormBackward(rec, s.preNorm, gNorm, unit.norm.shape, unit.norm.weight, undefined, { eps: unit.norm.eps, paramGrads: false }).dx;
    s.preNorm.dispose();
    return convBackwardX(rec, unit.conv, s.input, gConv);
  });
}

function convBackwardX(rec: Recorder, conv: Unit['conv'], input: Tensor, gradOut: Tensor): Tensor {
  const needs = { x: true, weight: false, bias: false };
  const g =
    conv instanceof Conv2d
      ? conv2dBackward(rec, input, conv.weight, gradOut, { stride: conv.opts.stride, padding: conv.opts.padding, groups: conv.opts.groups, needs })
      : convTranspose2dBackward(rec, input, conv.weight, gradOut, { stride: conv.opts.stride, padding: conv.opts.padding, outputPadding: conv.opts.outputPadding, needs });
  return g.gradX!;
}

/**
 * vjp_z of DegradationModel: z [B, latent_dim, 64, 64], sigmaEmb [B, 1280] (omit without sigma_condition),
 * cotangent shaped like the output [B, output_dim, 64, 64]. Returns d/dz sum(cotangent * model(z, sigmaEmb)).
 */
export function degradationModelVjp(rec: Recorder, model: DegradationModel, z: Tensor, sigmaEmb: Tensor | undefined, cotangent: Tensor): Tensor {
  const { latentDim, outputDim, latentSize } = model.config;
  const outShape = [z.shape[0], outputDim, latentSize, latentSize];
  assertArg(
    cotangent.rank === 4 && cotangent.shape.every((d, i) => d === outShape[i]),
    `DegradationModel vjp: cotangent must have the output's shape ${shapeString(outShape as number[])}, got ${shapeString(cotangent.shape)}`,
  );
  assertArg(
    z.dtype === 'f32' && cotangent.dtype === 'f32',
    `DegradationModel vjp: backward ops take f32 tensors, got z ${z.dtype}, cotangent ${cotangent.dtype}`,
  );
  // The forward's own checks (z shape, sigma_emb presence and batch) run in sigmaMap / forward; repeat
  // the z check here since the forward below is re-implemented with saves.
  assertArg(
    z.rank === 4 && z.shape[1] === latentDim && z.shape[2] === latentSize && z.shape[3] === latentSize,
    `DegradationModel vjp: z must be [B, ${latentDim}, ${latentSize}, ${latentSize}], got ${shapeString(z.shape)}`,
  );
  assertArg(!!sigmaEmb === model.config.sigmaCondition, `DegradationModel vjp: sigma_emb must be given exactly when the model is sigma-conditioned`);
  if (sigmaEmb) assertArg(sigmaEmb.shape[0] === z.shape[0], `DegradationModel vjp: batch of sigma_emb ${shapeString(sigmaEmb.shape)} differs from z ${shapeString(z.shape)}`);

  return rec.scope('silo_cnn_vjp', () =>
    rec.engine.tidy(() => {
      // Forward with saves.
      const sigmaMap = sigmaEmb ? model.sigmaMap(rec, sigmaEmb) : undefined;
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
      const procOut = proc.out;

      // Backward. processing.3 (plain conv) -> processing.0 unit -> the sum feeds both branches.
      const gProc = convBackwardX(rec, model.processing3, procOut, cotangent);
      procOut.dispose();
      const gSum = unitBackward(rec, model.processing0, proc.saved, gProc);
      const gSkipIn = unitBackward(rec, model.adjustEncoding, adj.saved, gSum);
      let g = gSum;
      for (let i = model.decoder.length - 1; i >= 0; i--) g = unitBackward(rec, model.decoder[i]!, decSaved[i]!, g);
      // encoded reaches the output through the decoder and through the skip branch's first 128 channels.
      g = add(rec, g, sigmaMap ? sliceChannels(rec, gSkipIn, 0, encoded.shape[1]!) : gSkipIn);
      for (let i = model.encoder.length - 1; i >= 0; i--) g = unitBackward(rec, model.encoder[i]!, encSaved[i]!, g);
      return sigmaMap ? sliceChannels(rec, g, 0, latentDim) : g;
    }),
  );
}
