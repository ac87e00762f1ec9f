// diffusers' AutoencoderKL: encoder -> quant_conv -> diagonal Gaussian posterior; post_quant_conv ->
// decoder. Large inputs go through diffusers' tiled encode / decode when a full-size activation would
// not fit one storage binding (or when asked). Pipelines scale latents: z = scalingFactor * sample.

import type { Engine } from '../../engine/device.js';
import type { Recorder } from '../../engine/recorder.js';
import type { TensorSource } from '../../formats/safetensors.js';
import { Tensor } from '../../engine/tensor.js';
import type { U64 } from '../../engine/random.js';
import { assertArg } from '../../engine/errors.js';
import { bytesPerElement, shapeString } from '../../engine/dtype.js';
import { diagonalGaussian, gaussianSample } from '../../engine/ops/gaussian.js';
import { randomNormal } from '../../engine/ops/random.js';
import { Conv2d } from '../layers.js';
import { WeightLoader, type WeightLoaderOptions } from '../weights.js';
import { parseVaeConfig, vaeDownFactor, type VaeConfig } from './config.js';
import { VaeEncoder, type Taps } from './encoder.js';
import { VaeDecoder } from './decoder.js';
import {
  bindingLimit,
  decoderPeakElements,
  encoderPeakElements,
  planTiles,
  tiledDecode,
  tiledEncode,
  type TileSettings,
  type TilingOptions,
} from './tiling.js';

/** diffusers' DiagonalGaussianDistribution of an encoded image. */
export interface Posterior {
  /** quant_conv output [N, 2L, h, w]. */
  moments: Tensor;
  mean: Tensor;
  /** Clamped to [-30, 20]. */
  logvar: Tensor;
  std: Tensor;
}

export class AutoencoderKL {
  readonly encoder: VaeEncoder;
  readonly decoder: VaeDecoder;
  readonly quantConv?: Conv2d;
  readonly postQuantConv?: Conv2d;

  constructor(
    w: WeightLoader,
    readonly config: VaeConfig,
  ) {
    const l = config.latentChannels;
    this.encoder = new VaeEncoder(w.scope('encoder.'), config);
    this.decoder = new VaeDecoder(w.scope('decoder.'), config);
    if (config.useQuantConv) this.quantConv = new Conv2d(w, 'quant_conv', 2 * l, 2 * l, 1);
    if (config.usePostQuantConv) this.postQuantConv = new Conv2d(w, 'post_quant_conv', l, l, 1);
  }

  /** Builds the model from a diffusers config.json object and its weights (strict: every tensor must be used). */
  static load(engine: Engine, source: TensorSource, configJson: Record<string, unknown>, opts: WeightLoaderOptions = {}): AutoencoderKL {
    const cfg = parseVaeConfig(configJson);
    return WeightLoader.build(engine, source, opts, (w) => new AutoencoderKL(w, cfg));
  }

  get scalingFactor(): number {
    return this.config.scalingFactor;
  }

  /** Image to latent size factor (8 for SD). */
  get downFactor(): number {
    return vaeDownFactor(this.config);
  }

  // No tidy() around the encoder / decoder here: taps must reach the caller without passing through a
  // frame that would free them. The one intermediate is freed explicitly.

  /** encoder + quant_conv on one (untiled) input; `taps` receives the encoder's intermediates. */
  encodeMoments(rec: Recorder, image: Tensor, taps?: Taps): Tensor {
    const h = rec.scope('encoder', () => this.encoder.forward(rec, image, taps));
    if (!this.quantConv) return h;
    const m = rec.scope('quant_conv', () => this.quantConv!.forward(rec, h));
    h.dispose();
    return m;
  }

  /** post_quant_conv + decoder on one (untiled) latent; `taps` receives post_quant_conv and the decoder's intermediates. */
  decodeRaw(rec: Recorder, z: Tensor, taps?: Taps): Tensor {
    const h = this.postQuantConv ? rec.scope('post_quant_conv', () => this.postQuantConv!.forward(rec, z)) : z;
    const out = rec.scope('decoder', () => this.decoder.forward(rec, h, taps));
    if (taps && h !== z) taps['post_quant_conv'] = h;
    else if (h !== z) h.dispose();
    return out;
  }

  /** The tiles an encode / decode of `x` would use, or null for one untiled pass. */
  tilePlan(engine: Engine, direction: 'encode' | 'decode', x: Tensor, opts: TilingOptions = {}): TileSettings | null {
    const mode = opts.tiling ?? 'auto';
    if (mode === 'off') return null;
    const [n, , h, w] = x.shape as [number, number, number, number];
    const limit = bindingLimit(engine.limits);
    if (mode === 'auto') {
      const peak = direction === 'encode' ? encoderPeakElements(this.config, n, h, w) : decoderPeakElements(this.config, n, h, w);
      if (peak * bytesPerElement(x.dtype) <= limit) return null;
    }
    // diffusers' default tile when it fits, else the largest that does.
    const tiles = opts.tiles ?? planTiles(this.config, direction, { limit, dtype: x.dtype, batch: n });
    // diffusers tiles only inputs larger than one tile.
    const size = direction === 'encode' ? tiles.sampleSize : tiles.latentSize;
    return h > size || w > size ? tiles : null;
  }

  /**
   * image [N, in_channels, H, W] in [-1, 1] -> the posterior (tiled when needed, see TilingOptions).
   * `taps` (untiled passes only) receives the encoder's intermediates; the caller frees them.
   */
  encode(rec: Recorder, image: Tensor, opts: TilingOptions & { taps?: Taps } = {}): Posterior {
    assertArg(
      image.rank === 4 && image.shape[1] === this.config.inChannels,
      `AutoencoderKL.encode: image must be [N, ${this.config.inChannels}, H, W], got ${shapeString(image.shape)}`,
    );
    return rec.scope('vae_encode', () => {
      const tiles = this.tilePlan(rec.engine, 'encode', image, opts);
      const moments = tiles ? tiledEncode(rec, image, tiles, (t) => this.encodeMoments(rec, t)) : this.encodeMoments(rec, image, opts.taps);
      return { moments, ...diagonalGaussian(rec, moments) };
    });
  }

  /** mean + std * noise, with noise given or drawn from N(0, 1) with `seed` (engine's Philox stream). */
  sample(rec: Recorder, posterior: Posterior, noise: Tensor | U64): Tensor {
    const { mean, std } = posterior;
    return rec.engine.tidy(() => {
      const eps = noise instanceof Tensor ? noise : randomNormal(rec, mean.shape, noise, { dtype: mean.dtype, name: 'posterior_noise' });
      return gaussianSample(rec, mean, std, eps);
    });
  }

  /**
   * z [N, latent, h, w] (already divided by scalingFactor) -> image [N, out_channels, h f, w f].
   * `taps` (untiled passes only) receives post_quant_conv and the decoder's intermediates.
   */
  decode(rec: Recorder, z: Tensor, opts: TilingOptions & { taps?: Taps } = {}): Tensor {
    assertArg(
      z.rank === 4 && z.shape[1] === this.config.latentChannels,
      `AutoencoderKL.decode: z must be [N, ${this.config.latentChannels}, h, w], got ${shapeString(z.shape)}`,
    );
    return rec.scope('vae_decode', () => {
      const tiles = this.tilePlan(rec.engine, 'decode', z, opts);
      return tiles ? tiledDecode(rec, z, tiles, (t) => this.decodeRaw(rec, t)) : this.decodeRaw(rec, z, opts.taps);
    });
  }
}
