// SILO's "preserve" CNN operator: `LatentDegradationNetwork` of preserve_LatentDegradationNetwork.py
// (silo_sample.py `--model preserve_LatentDegradationNetwork`), a full-resolution residual CNN conditioned
// on sigma itself (not on the UNet time embedding) that can fall back to a colour-preserving identity:
//   e      = sinusoid(sigma / max_noise)                          (no parameters; computed on the CPU)
//   cp     = silu(conv1x1(z))                                     initial_proj
//   x      = initial_conv(cat(z, positional_embedding))           (the stored buffer, resized if not 64x64)
//   blocks: skips += x; x = block(x, e)     then x = bottleneck(x, e)
//   up:     x = up_block_i(i > 0 ? cat(x, skips[n - i - 1]) : x, e)
//   g      = sigmoid(identity_gate(e));  out = (1 - g) final_conv(x) + g cp + skip_scale z
// NoiseConditionedConvBlock: h = silu(GN(conv1(x))) + noise_proj(e); h = GN(conv2(h));
//   out = silu(h + skip_conv(x)), GroupNorm(min(8, C)) with eps 1e-5, all 3x3 convs padded.

import type { Engine } from '../../engine/device.js';
import type { DType } from '../../engine/dtype.js';
import { shapeString } from '../../engine/dtype.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { add, mul, scale } from '../../engine/ops/elementwise.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { resizeBilinear } from '../../engine/ops/resample.js';
import { Conv2d, GroupNorm, Linear } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import type { PreserveNetworkConfig } from './config.js';

const f32 = Math.fround;

/**
 * SinusoidalNoiseEmbedding: [B, dim] with sin(sigma/max_noise * f_k) at even and cos at odd columns,
 * f_k = exp(-k ln(10000) / (dim/2 - 1)); float32 steps as PyTorch takes them.
 */
export function sinusoidalNoiseEmbedding(sigmas: readonly number[], dim: number, maxNoise: number): Float32Array {
  const half = Math.floor(dim / 2);
  assertArg(dim % 2 === 0 && half >= 2, `sinusoidalNoiseEmbedding: dim must be even and >= 4, got ${dim}`);
  const c = f32(-Math.log(10000) / (half - 1));
  const out = new Float32Array(sigmas.length * dim);
  sigmas.forEach((s, b) => {
    const level = f32(f32(s) / f32(maxNoise));
    for (let k = 0; k < half; k++) {
      const a = f32(level * f32(Math.exp(f32(k * c))));
      out[b * dim + 2 * k] = Math.sin(a);
      out[b * dim + 2 * k + 1] = Math.cos(a);
    }
  });
  return out;
}

/**
 * SpatialPositionalEmbedding's buffer [channels, h, w] (part of the state dict, so a checkpoint carries
 * it; this recreates it, e.g. for tests): the first channels/2 hold sin/cos of the row position, the
 * rest sin/cos of the column position, at frequencies exp(linspace(0, ln T, n)).
 */
export function spatialPositionalEmbedding(channels: number, h: number, w: number, temperature = 10000): Float32Array {
  const out = new Float32Array(channels * h * w);
  const yc = Math.floor(channels / 2);
  const xc = channels - yc;
  const bands = (n: number) =>
    Array.from({ length: n }, (_, i) => f32(Math.exp(f32(n === 1 ? 0 : (i * Math.log(temperature)) / (n - 1)))));
  const yb = bands(Math.floor(yc / 2));
  yb.forEach((freq, i) => {
    for (let y = 0; y < h; y++) {
      const a = f32(f32(y / (h - 1)) * freq);
      for (let x = 0; x < w; x++) {
        out[((2 * i) * h + y) * w + x] = Math.sin(a);
        out[((2 * i + 1) * h + y) * w + x] = Math.cos(a);
      }
    }
  });
  const xb = bands(Math.floor(xc / 2));
  xb.forEach((freq, i) => {
    for (let x = 0; x < w; x++) {
      const a = f32(f32(x / (w - 1)) * freq);
      for (let y = 0; y < h; y++) {
        out[((yc + 2 * i) * h + y) * w + x] = Math.sin(a);
        out[((yc + 2 * i + 1) * h + y) * w + x] = Math.cos(a);
      }
    }
  });
  return out;
}

export class NoiseConditionedConvBlock {
  readonly conv1: Conv2d;
  readonly norm1: GroupNorm;
  readonly noiseProj: Linear;
  readonly conv2: Conv2d;
  readonly norm2: GroupNorm;
  readonly skipConv?: Conv2d;

  constructor(w: WeightLoader, readonly inChannels: number, readonly outChannels: number, noiseDim: number) {
    const groups = Math.min(8, outChannels);
    this.conv1 = new Conv2d(w, 'conv1', inChannels, outChannels, 3, { padding: 1 });
    this.norm1 = new GroupNorm(w, 'norm1', groups, outChannels);
    this.noiseProj = new Linear(w, 'noise_proj', noiseDim, outChannels);
    this.conv2 = new Conv2d(w, 'conv2', outChannels, outChannels, 3, { padding: 1 });
    this.norm2 = new GroupNorm(w, 'norm2', groups, outChannels);
    if (inChannels !== outChannels) this.skipConv = new Conv2d(w, 'skip_conv', inChannels, outChannels, 1);
  }

  forward(rec: Recorder, x: Tensor, noiseEmb: Tensor): Tensor {
    return rec.engine.tidy(() => {
      const residual = this.skipConv ? this.skipConv.forward(rec, x) : x;
      let h = this.norm1.forward(rec, this.conv1.forward(rec, x), 'silu');
      const p = this.noiseProj.forward(rec, noiseEmb);
      h = add(rec, h, p.reshape([p.shape[0]!, this.outChannels, 1, 1]));
      h = this.norm2.forward(rec, this.conv2.forward(rec, h));
      return add(rec, h, residual, { act: 'silu' });
    });
  }
}

export class PreserveDegradationNetwork {
  readonly initialProj: Conv2d;
  readonly initialConv: Conv2d;
  readonly finalConv: Conv2d;
  readonly blocks: NoiseConditionedConvBlock[] = [];
  readonly bottleneck: NoiseConditionedConvBlock;
  readonly upBlocks: NoiseConditionedConvBlock[] = [];
  readonly skipScale: Tensor;
  readonly identityGate: Linear;
  readonly positionalEmbedding: Tensor;
  readonly dtype: DType;
  /** The engine holding the weights (embedNoise's tensors go there too). */
  readonly engine: Engine;

  constructor(
    w: WeightLoader,
    readonly config: PreserveNetworkConfig,
  ) {
    const c = config;
    this.dtype = w.activationDtype;
    this.engine = w.engine;
    // An input the network resizes and concatenates like an activation: stored in the activations' dtype.
    this.positionalEmbedding = w.get('pos_embedding.positional_embedding', [c.posEmbedChannels, c.posSize, c.posSize], w.activationDtype);
    this.initialProj = new Conv2d(w, 'initial_proj.0', c.inChannels, c.inChannels, 1);
    this.initialConv = new Conv2d(w, 'initial_conv', c.inChannels + c.posEmbedChannels, c.baseChannels, 3, { padding: 1 });
    this.finalConv = new Conv2d(w, 'final_conv', c.baseChannels, c.outChannels, 3, { padding: 1 });
    // Widths: base, then base * 2^i capped at 128 (SILO's "keep the model small").
    const ch = [c.baseChannels];
    for (let i = 0; i < c.numBlocks; i++) ch.push(Math.min(c.baseChannels * 2 ** i, 128));
    const n = c.numBlocks;
    for (let i = 0; i < n; i++) this.blocks.push(new NoiseConditionedConvBlock(w.scope(`blocks.${i}.`), ch[i]!, ch[i + 1]!, c.noiseEmbedDim));
    this.bottleneck = new NoiseConditionedConvBlock(w.scope('bottleneck.'), ch[n]!, ch[n]!, c.noiseEmbedDim);
    for (let i = 0; i < n; i++) {
      const cin = i > 0 ? ch[n - i]! + ch[n - i - 1]! : ch[n - i]!;
      this.upBlocks.push(new NoiseConditionedConvBlock(w.scope(`up_blocks.${i}.`), cin, ch[n - i - 1]!, c.noiseEmbedDim));
    }
    this.skipScale = w.get('skip_scale', [1]);
    this.identityGate = new Linear(w, 'identity_gate.0', c.noiseEmbedDim, 1);
  }

  /** The noise embedding of `sigmas` (one per batch item) as a tensor for forward(). */
  embedNoise(engine: Engine, sigmas: readonly number[]): Tensor {
    const { noiseEmbedDim, maxNoise } = this.config;
    return engine.tensor(sinusoidalNoiseEmbedding(sigmas, noiseEmbedDim, maxNoise), [sigmas.length, noiseEmbedDim], this.dtype, 'noise_embedding');
  }

  /** w_hat from x0_hat z [B, in_channels, H, W] and noiseEmb = embedNoise(sigmas) [B, noise_embed_dim]. */
  forward(rec: Recorder, z: Tensor, noiseEmb: Tensor): Tensor {
    const c = this.config;
    assertArg(z.rank === 4 && z.shape[1] === c.inChannels, `LatentDegradationNetwork: z must be [B, ${c.inChannels}, H, W], got ${shapeString(z.shape)}`);
    const [b, , h, wd] = z.shape as [number, number, number, number];
    assertArg(
      noiseEmb.rank === 2 && noiseEmb.shape[0] === b && noiseEmb.shape[1] === c.noiseEmbedDim,
      `LatentDegradationNetwork: noise embedding must be [${b}, ${c.noiseEmbedDim}] (embedNoise), got ${shapeString(noiseEmb.shape)}`,
    );
    const engine = rec.engine;
    return rec.scope('silo_preserve', () =>
      engine.tidy(() => {
        const colorProjected = this.initialProj.forward(rec, z, 'silu');
        let pos = this.positionalEmbedding.reshape([1, c.posEmbedChannels, c.posSize, c.posSize]);
        if (h !== c.posSize || wd !== c.posSize) pos = resizeBilinear(rec, pos, h, wd);
        // expand(B, ...) as a broadcast add of zeros.
        if (b > 1) pos = add(rec, pos, engine.zeros([b, 1, 1, 1], z.dtype));
        let x = this.initialConv.forward(rec, concatChannels(rec, [z, pos]));
        const skips: Tensor[] = [];
        this.blocks.forEach((block, i) => {
          skips.push(x);
          x = rec.scope(`blocks.${i}`, () => block.forward(rec, x, noiseEmb));
        });
        x = rec.scope('bottleneck', () => this.bottleneck.forward(rec, x, noiseEmb));
        this.upBlocks.forEach((block, i) => {
          const input = i > 0 ? concatChannels(rec, [x, skips[skips.length - i - 1]!]) : x;
          x = rec.scope(`up_blocks.${i}`, () => block.forward(rec, input, noiseEmb));
        });
        x = this.finalConv.forward(rec, x);
        const gate = this.identityGate.forward(rec, noiseEmb, 'sigmoid').reshape([b, 1, 1, 1]);
        const processed = mul(rec, x, scale(rec, gate, -1, 1));
        const mixed = add(rec, processed, mul(rec, colorProjected, gate));
        return add(rec, mixed, mul(rec, z, this.skipScale));
      }),
    );
  }
}
