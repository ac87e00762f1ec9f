// Vector-Jacobian products of the TAESD-family tiny autoencoders (f32 only):
//   taesdDecodeVjp: d/d latent of sum(gradImage * decode(latent))   (raw decoder output, no final clamp)
//   taesdEncodeVjp: d/d image of sum(gradLatent * encode(image))
// Each nn.Sequential is flattened into a chain of stages run by ../vjp-stages.ts (per-stage
// recomputation). Stages recompute their internals with the forward's own fused ops (conv + ReLU,
// add + ReLU), so every ReLU mask comes from the activated output: relu(h) > 0 exactly where h > 0.
// The latents are the raw ones on both sides (TinyAutoencoder applies no scaling or shift).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, relu, scale } from '../../engine/ops/elementwise.js';
import { reluBackward, unaryBackward } from '../../engine/ops/elementwise-backward.js';
import { upsampleNearest2x } from '../../engine/ops/resample.js';
import { upsampleNearest2xBackward } from '../../engine/ops/resample-backward.js';
import type { Conv2d } from '../layers.js';
import { chainVjp, convGradX, groupNormGradX, type Stage } from '../vjp-stages.js';
import type { TinyAutoencoder } from './autoencoder.js';
import { TaesdBlock, TaesdConv, softClamp3, type TaesdPool } from './blocks.js';

/** A conv, optionally with the ReLU entry after it fused (the decoder's layers 1-2). */
function convStage(name: string, conv: Conv2d, withRelu: boolean): Stage {
  return {
    name,
    forward: (rec, x) => conv.forward(rec, x, withRelu ? 'relu' : undefined),
    vjp: (rec, x, g) => {
      if (!withRelu) return convGradX(rec, conv, x, g);
      const y = conv.forward(rec, x, 'relu');
      const dPre = reluBackward(rec, y, g);
      y.dispose();
      return convGradX(rec, conv, x, dPre);
    },
  };
}

function reluStage(name: string): Stage {
  return {
    name,
    forward: (rec, x) => relu(rec, x),
    vjp: (rec, x, g) => reluBackward(rec, x, g),
  };
}

/** Clamp: tanh(x / 3) * 3 = 6 sigmoid(2x / 3) - 3 (softClamp3); d/dx = 6 * (2/3) sigmoid'(2x / 3). */
function clampStage(name: string): Stage {
  return {
    name,
    forward: (rec, x) => softClamp3(rec, x),
    vjp: (rec, x, g) => rec.engine.tidy(() => scale(rec, unaryBackward(rec, x, g, { act: 'sigmoid', scale: 2 / 3, op: 'tanh_clamp' }), 6)),
  };
}

/** Nearest x2 up-sampling, then the level's conv (one stage: the tape keeps the small input only). */
function upsampleConvStage(name: string, conv: Conv2d): Stage {
  return {
    name,
    forward: (rec, x) => rec.engine.tidy(() => conv.forward(rec, upsampleNearest2x(rec, x))),
    vjp: (rec, x, g) => {
      const up = upsampleNearest2x(rec, x);
      const dUp = convGradX(rec, conv, up, g);
      up.dispose();
      const dx = upsampleNearest2xBackward(rec, dUp, x.shape);
      dUp.dispose();
      return dx;
    },
  };
}

function upsampleStage(name: string): Stage {
  return { name, forward: (rec, x) => upsampleNearest2x(rec, x), vjp: (rec, x, g) => upsampleNearest2xBackward(rec, g, x.shape) };
}

/** x + pool(x), pool = project(relu(norm(expand(x)))): gradient of x for the cotangent g of the sum. */
function poolResidualGradX(rec: Recorder, p: TaesdPool, x: Tensor, g: Tensor): Tensor {
  return rec.engine.tidy(() => {
    const e = p.expand.forward(rec, x);
    const r = relu(rec, p.norm.forward(rec, e));
    const dr = convGradX(rec, p.project, r, g);
    const dn = reluBackward(rec, r, dr);
    const de = groupNormGradX(rec, p.norm, e, dn, 'none');
    return add(rec, g, convGradX(rec, p.expand, x, de));
  });
}

/**
 * A Block: out = relu(conv4(relu(conv2(relu(conv0(x'))))) + skip(x')), x' = x + pool(x) when pooled.
 * The backward recomputes x' and the two hidden activations, then walks back through them.
 */
function blockStage(name: string, b: TaesdBlock): Stage {
  return {
    name,
    forward: (rec, x) => b.forward(rec, x),
    vjp: (rec, x, g) =>
      rec.engine.tidy(() => {
        const input = b.pool ? add(rec, x, b.pool.forward(rec, x)) : x;
        const a0 = b.conv0.forward(rec, input, 'relu');
        const a1 = b.conv2.forward(rec, a0, 'relu');
        const h2 = b.conv4.forward(rec, a1);
        const out = add(rec, h2, b.skip ? b.skip.forward(rec, input) : input, { act: 'relu' });
        h2.dispose();
        const ds = reluBackward(rec, out, g);
        out.dispose();
        // Main branch: conv4 <- relu <- conv2 <- relu <- conv0.
        const da1 = convGradX(rec, b.conv4.conv, a1, ds);
        const dh1 = reluBackward(rec, a1, da1);
        const da0 = convGradX(rec, b.conv2.conv, a0, dh1);
        const dh0 = reluBackward(rec, a0, da0);
        const dMain = convGradX(rec, b.conv0.conv, input, dh0);
        const dInput = add(rec, dMain, b.skip ? convGradX(rec, b.skip, input, ds) : ds);
        return b.pool ? poolResidualGradX(rec, b.pool, x, dInput) : dInput;
      }),
  };
}

/** The encoder's nn.Sequential as stages, named by their state-dict index ("encoder.4"). */
export function taesdEncoderStages(model: TinyAutoencoder): Stage[] {
  assertArg(model.encoder !== undefined, 'taesdEncoderStages: no encoder weights were loaded');
  return model.encoder.layers.map((layer, i) =>
    layer instanceof TaesdConv ? convStage(`encoder.${i}`, layer.conv, false) : blockStage(`encoder.${i}`, layer),
  );
}

/**
 * The decoder's nn.Sequential as stages (named by the first index they cover): a conv with the ReLU entry
 * after it, and an upsample with the conv after it, are one stage each, as the forward fuses them.
 */
export function taesdDecoderStages(model: TinyAutoencoder): Stage[] {
  assertArg(model.decoder !== undefined, 'taesdDecoderStages: no decoder weights were loaded');
  const steps = model.decoder.steps;
  const stages: Stage[] = [];
  for (let i = 0; i < steps.length; i++) {
    const { layer, module } = steps[i]!;
    const name = `decoder.${layer.index}`;
    const next = steps[i + 1];
    if (layer.kind === 'clamp') stages.push(clampStage(name));
    else if (layer.kind === 'relu') stages.push(reluStage(name));
    else if (layer.kind === 'upsample') {
      if (next?.module instanceof TaesdConv) {
        stages.push(upsampleConvStage(name, next.module.conv));
        i++;
      } else stages.push(upsampleStage(name));
    } else if (module instanceof TaesdConv) {
      const withRelu = next?.layer.kind === 'relu';
      stages.push(convStage(name, module.conv, withRelu));
      if (withRelu) i++;
    } else if (module instanceof TaesdBlock) stages.push(blockStage(name, module));
    else throw new Error(`TAESD decoder: no VJP stage for layer ${layer.index} (${layer.kind})`);
  }
  return stages;
}

function checkF32(what: string, model: TinyAutoencoder, ...ts: Tensor[]): void {
  assertArg(model.dtype === 'f32', `${what}: f32 only (gradients), the model was loaded as ${model.dtype}`);
  for (const t of ts) assertArg(t.dtype === 'f32', `${what}: f32 only (gradients), got ${t.dtype} ${shapeString(t.shape)}`);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * d/d latent of sum(gradImage * model.decode(latent)) for latent [N, latentChannels, h, w] (raw) and
 * gradImage shaped like the raw decoder output [N, imageChannels, h * f, w * f]. The final image's
 * clamp to [0, 1] (decodeImage) is not included: apply clampBackward to gradImage first if it is wanted.
 */
export function taesdDecodeVjp(rec: Recorder, model: TinyAutoencoder, latent: Tensor, gradImage: Tensor): Tensor {
  const what = 'taesdDecodeVjp';
  checkF32(what, model, latent, gradImage);
  const c = model.config;
  assertArg(
    latent.rank === 4 && latent.shape[1] === c.latentChannels,
    `${what}: latent must be [N, ${c.latentChannels}, h, w], got ${shapeString(latent.shape)}`,
  );
  const f = 2 ** (c.decoderBlocks.length - 1);
  const [n, , h, w] = latent.shape as [number, number, number, number];
  const want = [n, c.imageChannels, h * f, w * f];
  assertArg(sameShape(gradImage.shape, want), `${what}: gradImage ${shapeString(gradImage.shape)} must be ${shapeString(want)} for latent ${shapeString(latent.shape)}`);
  return rec.scope('taesd_decode_vjp', () => chainVjp(rec, taesdDecoderStages(model), latent, gradImage));
}

/** The encoder's output size for an input size: each stride-2 3x3 conv (padding 1) maps s to floor((s - 1) / 2) + 1. */
function encodedSize(s: number, levels: number): number {
  for (let i = 1; i < levels; i++) s = Math.floor((s - 1) / 2) + 1;
  return s;
}

/**
 * d/d image of sum(gradLatent * model.encode(image)) for image [N, imageChannels, H, W] and gradLatent
 * shaped like the raw latent [N, latentChannels, H / f, W / f] (rounded up, as the stride-2 convs do).
 */
export function taesdEncodeVjp(rec: Recorder, model: TinyAutoencoder, image: Tensor, gradLatent: Tensor): Tensor {
  const what = 'taesdEncodeVjp';
  checkF32(what, model, image, gradLatent);
  const c = model.config;
  assertArg(
    image.rank === 4 && image.shape[1] === c.imageChannels,
    `${what}: image must be [N, ${c.imageChannels}, H, W], got ${shapeString(image.shape)}`,
  );
  const [n, , hh, ww] = image.shape as [number, number, number, number];
  const levels = c.encoderBlocks.length;
  const want = [n, c.latentChannels, encodedSize(hh, levels), encodedSize(ww, levels)];
  assertArg(sameShape(gradLatent.shape, want), `${what}: gradLatent ${shapeString(gradLatent.shape)} must be ${shapeString(want)} for image ${shapeString(image.shape)}`);
  return rec.scope('taesd_encode_vjp', () => chainVjp(rec, taesdEncoderStages(model), image, gradLatent));
}
