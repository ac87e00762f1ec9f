// SILO's Readout-Guidance operator: the readout features of the UNet's up blocks, bilinearly resized to
// the latent size (readout_guidance/rg_helpers.py collect_and_resize_feats), aggregated by
// `AggregationNetwork` (dhf/aggregation_network.py) into w_hat:
//   sigma_map = LayerNorm([1, 64, 64])(Linear(1280 -> 64*64)(sigma_emb) reshaped B x 1 x 64 x 64)
//   group i:  x = cat(resize(feat_i), sigma_map)
//             h = relu(GN(conv1x1 C+1 -> 96)); h = relu(GN(conv3x3 96 -> 96)); h = GN(conv1x1 96 -> 384)
//             h_i = relu(h + GN(conv1x1 shortcut C+1 -> 384))         (no conv has a bias)
//   agg       = sum_i softmax(mixing_weights)_i * h_i
//             (the softmax is taken once at load time; since it is positive, w_i relu(h + s) is
//             computed as relu(w_i h + w_i s) in the same pass as the residual add)
//   output    = conv1x1(silu(conv3x3(silu(conv3x3(cat(agg, sigma_map[, mask]))))))  385(+1) -> 128 -> 32 -> 4
// The blocks' `emb_layers` (timestep conditioning) are never applied by SILO's sampler (emb is None for
// SD-1.5), so they are loaded-but-unused here.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, relu, scale, unary } from '../../engine/ops/elementwise.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { resizeBilinear } from '../../engine/ops/resample.js';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import type { AggregationNetworkConfig } from './config.js';

/** SILO's `Conv2d` wrapper: a bias-free convolution followed by its own GroupNorm (`<name>.norm`). */
class ConvGroupNorm {
  readonly conv: Conv2d;
  readonly norm: GroupNorm;
  constructor(w: WeightLoader, name: string, cin: number, cout: number, kernel: number, groups: number) {
    this.conv = new Conv2d(w, name, cin, cout, kernel, { padding: (kernel - 1) / 2, bias: false });
    this.norm = new GroupNorm(w, `${name}.norm`, groups, cout);
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => this.norm.forward(rec, this.conv.forward(rec, x)));
  }
}

/** dhf BottleneckBlock as the sampler runs it (no timestep embedding, no sigma_condition_2). */
export class BottleneckBlock {
  readonly conv1: ConvGroupNorm;
  readonly conv2: ConvGroupNorm;
  readonly conv3: ConvGroupNorm;
  readonly shortcut?: ConvGroupNorm;

  constructor(w: WeightLoader, readonly inChannels: number, readonly outChannels: number, bottleneck: number, groups: number) {
    if (inChannels !== outChannels) this.shortcut = new ConvGroupNorm(w, 'shortcut', inChannels, outChannels, 1, groups);
    this.conv1 = new ConvGroupNorm(w, 'conv1', inChannels, bottleneck, 1, groups);
    this.conv2 = new ConvGroupNorm(w, 'conv2', bottleneck, bottleneck, 3, groups);
    this.conv3 = new ConvGroupNorm(w, 'conv3', bottleneck, outChannels, 1, groups);
    // emb_layers = Linear(1280, bottleneck) is in every checkpoint (SILO's training passes the timestep
    // embedding) but the sampler calls the network with emb = None, so it never runs: claimed so that
    // strict loading passes, never uploaded.
    w.ignore((n) => n.startsWith('emb_layers.'));
  }

  /** weight * block(x) for weight >= 0 (the mixing weight folded into the last add: w relu(v) = relu(w v)). */
  forward(rec: Recorder, x: Tensor, weight = 1): Tensor {
    assertArg(weight >= 0, `BottleneckBlock: the folded weight must be >= 0, got ${weight}`);
    return rec.engine.tidy(() => {
      let h = relu(rec, this.conv1.forward(rec, x));
      h = relu(rec, this.conv2.forward(rec, h));
      h = this.conv3.forward(rec, h);
      const sc = this.shortcut ? this.shortcut.forward(rec, x) : x;
      return add(rec, h, sc, { ca: weight, cb: weight, act: 'relu' });
    });
  }
}

export interface ReadoutDebug {
  output: Tensor;
  /** B x 1 x 64 x 64 (golden `debug.sigma_map`). */
  sigmaMap?: Tensor;
  /** Each feature after the resize, B x C_i x 64 x 64 (golden `debug.resized_XX`, first 4 channels). */
  resized: Tensor[];
  /** sum_i w_i h_i, B x projection_dim x 64 x 64 (golden `debug.aggregated`, first 8 channels). */
  aggregated: Tensor;
}

export class AggregationNetwork {
  readonly bottlenecks: BottleneckBlock[] = [];
  /**
   * softmax(mixing_weights) (golden `debug.mixing_softmax`), computed in f64 at load time; a trainable
   * network recomputes it from `mixingLogits` after each optimizer step (syncMixing).
   */
  readonly mixing: Float32Array;
  /** The mixing logits on the GPU, for training only (the sampler folds the softmax into its dispatches). */
  readonly mixingLogits?: Tensor;
  readonly sigmaEmbLinear?: Linear;
  readonly sigmaEmbNorm?: LayerNorm;
  readonly head?: { conv0: Conv2d; conv2: Conv2d; conv4: Conv2d };
  /** Number of feature groups = featureDims x saveTimestep (blocks are shared across timesteps). */
  readonly groups: number;

  constructor(
    w: WeightLoader,
    readonly config: AggregationNetworkConfig,
    opts: { trainable?: boolean } = {},
  ) {
    const c = config;
    const s = c.sigmaCondition ? 1 : 0;
    if (c.sigmaCondition) {
      this.sigmaEmbLinear = new Linear(w, 'sigma_emb_linear', c.sigmaEmbDim, c.latentSize * c.latentSize);
      this.sigmaEmbNorm = new LayerNorm(w, 'sigma_emb_norm', [1, c.latentSize, c.latentSize]);
    }
    c.featureDims.forEach((dim, i) => {
      this.bottlenecks.push(new BottleneckBlock(w.scope(`bottleneck_layers.${i}.`), dim + s, c.projectionDim, c.bottleneckDim, c.numNormGroups));
    });
    this.groups = c.featureDims.length * c.saveTimestep.length;
    this.mixing = new Float32Array(this.groups);
    if (opts.trainable) this.mixingLogits = w.get('mixing_weights', [this.groups], 'f32');
    else this.setMixing(w.values('mixing_weights', [this.groups]));
    if (c.useOutputHead) {
      const cin = c.projectionDim + s + (c.condInpaint ? 1 : 0);
      this.head = {
        conv0: new Conv2d(w, 'output_head.0', cin, 128, 3, { padding: 1 }),
        conv2: new Conv2d(w, 'output_head.2', 128, 32, 3, { padding: 1 }),
        conv4: new Conv2d(w, 'output_head.4', 32, c.outputHeadChannels, 1),
      };
    }
  }

  private setMixing(logits: Float32Array): void {
    const top = Math.max(...logits);
    const e = Array.from(logits, (v) => Math.exp(v - top));
    const sum = e.reduce((a, b) => a + b, 0);
    e.forEach((v, i) => (this.mixing[i] = v / sum));
  }

  /** A trainable network: reads the mixing logits back and recomputes their softmax (after each update). */
  async syncMixing(): Promise<void> {
    assertArg(this.mixingLogits, 'AggregationNetwork.syncMixing: built without trainable mixing weights');
    this.setMixing(await this.mixingLogits.read());
  }

  /**
   * Every trainable tensor with its state-dict name (a trainable network only): what training optimises.
   * The blocks' emb_layers are not among them: the sampler never runs them.
   */
  parameters(): { name: string; tensor: Tensor; transposed?: boolean }[] {
    assertArg(this.mixingLogits, 'AggregationNetwork.parameters: built without trainable mixing weights ({ trainable: true })');
    const out: { name: string; tensor: Tensor; transposed?: boolean }[] = [];
    const add = (name: string, t: Tensor | undefined, transposed = false) => {
      if (t) out.push({ name, tensor: t, ...(transposed ? { transposed } : {}) });
    };
    if (this.sigmaEmbLinear) {
      add('sigma_emb_linear.weight', this.sigmaEmbLinear.weight, this.sigmaEmbLinear.transposed);
      add('sigma_emb_linear.bias', this.sigmaEmbLinear.bias);
      add('sigma_emb_norm.weight', this.sigmaEmbNorm!.weight);
      add('sigma_emb_norm.bias', this.sigmaEmbNorm!.bias);
    }
    this.bottlenecks.forEach((b, i) => {
      for (const [k, u] of [['shortcut', b.shortcut], ['conv1', b.conv1], ['conv2', b.conv2], ['conv3', b.conv3]] as const) {
        if (!u) continue;
        add(`bottleneck_layers.${i}.${k}.weight`, u.conv.weight);
        add(`bottleneck_layers.${i}.${k}.norm.weight`, u.norm.weight);
        add(`bottleneck_layers.${i}.${k}.norm.bias`, u.norm.bias);
      }
    });
    add('mixing_weights', this.mixingLogits);
    if (this.head) {
      for (const [k, c] of [['0', this.head.conv0], ['2', this.head.conv2], ['4', this.head.conv4]] as const) {
        add(`output_head.${k}.weight`, c.weight);
        add(`output_head.${k}.bias`, c.bias);
      }
    }
    return out;
  }

  /** LayerNorm(Linear(sigma_emb)) as a B x 1 x 64 x 64 map. */
  sigmaMap(rec: Recorder, sigmaEmb: Tensor): Tensor {
    const { sigmaEmbDim, latentSize } = this.config;
    assertArg(this.sigmaEmbLinear && this.sigmaEmbNorm, 'AggregationNetwork: built without sigma_condition, it takes no sigma embedding');
    assertArg(
      sigmaEmb.rank === 2 && sigmaEmb.shape[1] === sigmaEmbDim,
      `AggregationNetwork: sigma_emb must be [B, ${sigmaEmbDim}] (the UNet time embedding at sigmaTimestep(sigma)), got ${shapeString(sigmaEmb.shape)}`,
    );
    return rec.scope('sigma_emb', () =>
      rec.engine.tidy(() => {
        const m = this.sigmaEmbLinear!.forward(rec, sigmaEmb).reshape([sigmaEmb.shape[0]!, 1, latentSize, latentSize]);
        return this.sigmaEmbNorm!.forward(rec, m);
      }),
    );
  }

  /** rg_helpers.resize_feat: F.interpolate(size=64, bilinear, align_corners False); 64x64 features pass unchanged. */
  resizeFeature(rec: Recorder, feature: Tensor): Tensor {
    const n = this.config.latentSize;
    return feature.shape[2] === n && feature.shape[3] === n ? feature : resizeBilinear(rec, feature, n, n);
  }

  /**
   * w_hat from the readout features at their native resolutions (features[i]: [B, featureDims[i % n], h_i, w_i],
   * SILO's order), sigmaEmb [B, 1280] (with sigma_condition) and, for cond_inpaint networks, the inpainting
   * mask at latent resolution [B, 1, 64, 64].
   */
  forward(rec: Recorder, features: Tensor[], sigmaEmb?: Tensor, mask?: Tensor): Tensor {
    return this.run(rec, features, sigmaEmb, mask, false).output;
  }

  /** forward plus the intermediates the golden case checks (keeps every resized feature alive). */
  forwardWithDebug(rec: Recorder, features: Tensor[], sigmaEmb?: Tensor, mask?: Tensor): ReadoutDebug {
    return this.run(rec, features, sigmaEmb, mask, true).debug!;
  }

  /** Validates forward's arguments; returns the batch size (also used by readout-vjp.ts). */
  check(features: Tensor[], sigmaEmb: Tensor | undefined, mask: Tensor | undefined): number {
    const c = this.config;
    assertArg(features.length === this.groups, `AggregationNetwork: expected ${this.groups} readout features, got ${features.length}`);
    const b = features[0]!.shape[0]!;
    features.forEach((f, i) => {
      const dim = c.featureDims[i % c.featureDims.length]!;
      assertArg(
        f.rank === 4 && f.shape[0] === b && f.shape[1] === dim,
        `AggregationNetwork: feature ${i} must be [${b}, ${dim}, H, W], got ${shapeString(f.shape)}`,
      );
    });
    if (c.sigmaCondition) {
      assertArg(sigmaEmb, 'AggregationNetwork: this operator is sigma-conditioned and needs sigma_emb');
      assertArg(sigmaEmb.shape[0] === b, `AggregationNetwork: sigma_emb ${shapeString(sigmaEmb.shape)} does not match batch ${b}`);
    } else {
      assertArg(!sigmaEmb, 'AggregationNetwork: built without sigma_condition, it takes no sigma embedding');
    }
    const n = c.latentSize;
    if (c.condInpaint) {
      assertArg(
        mask && mask.rank === 4 && mask.shape[0] === b && mask.shape[1] === 1 && mask.shape[2] === n && mask.shape[3] === n,
        `AggregationNetwork: built with cond_inpaint, it needs the inpainting mask as [${b}, 1, ${n}, ${n}], got ${mask ? shapeString(mask.shape) : 'none'}`,
      );
    } else {
      assertArg(!mask, 'AggregationNetwork: built without cond_inpaint, it takes no mask');
    }
    return b;
  }

  private run(rec: Recorder, features: Tensor[], sigmaEmb: Tensor | undefined, mask: Tensor | undefined, debug: boolean): RunResult {
    this.check(features, sigmaEmb, mask);
    const engine = rec.engine;
    return rec.scope('silo_rg', () =>
      engine.tidy((): RunResult => {
        const sigmaMap = sigmaEmb ? this.sigmaMap(rec, sigmaEmb) : undefined;
        const resized: Tensor[] = [];
        let agg: Tensor | undefined;
        for (let i = 0; i < this.groups; i++) {
          const block = this.bottlenecks[i % this.bottlenecks.length]!;
          const step = rec.scope(`bottleneck_layers.${i}`, () =>
            engine.tidy((): { sum: Tensor; r?: Tensor } => {
              const f = features[i]!;
              const r = this.resizeFeature(rec, f);
              const x = sigmaMap ? concatChannels(rec, [r, sigmaMap]) : r;
              const term = block.forward(rec, x, this.mixing[i]!);
              const sum = agg ? add(rec, agg, term) : term;
              // A view keeps an unresized input apart from the caller's tensor (disposing it is harmless).
              return debug ? { sum, r: r === f ? f.reshape(f.shape) : r } : { sum };
            }),
          );
          // The previous partial sum was last read by the add just recorded.
          agg?.dispose();
          agg = step.sum;
          if (step.r) resized.push(step.r);
        }
        let output = agg!;
        if (this.head) {
          const h = this.head;
          output = rec.scope('output_head', () =>
            engine.tidy(() => {
              const parts = [agg!];
              if (sigmaMap) parts.push(sigmaMap);
              if (mask) parts.push(mask);
              const x = parts.length > 1 ? concatChannels(rec, parts) : agg!;
              let y = h.conv0.forward(rec, x, 'silu');
              y = h.conv2.forward(rec, y, 'silu');
              y = h.conv4.forward(rec, y);
              // tanh(y) = 2 sigmoid(2y) - 1 (output_head_act; off in SILO's sampler).
              if (this.config.outputHeadAct) y = scale(rec, unary(rec, y, { act: 'sigmoid', scale: 2 }), 2, -1);
              return y;
            }),
          );
        }
        return debug ? { output, debug: { output, sigmaMap, resized, aggregated: agg! } } : { output };
      }),
    );
  }
}

interface RunResult {
  output: Tensor;
  debug?: ReadoutDebug;
}
