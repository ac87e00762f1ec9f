// A TAESD-family tiny autoencoder: encoder and/or decoder built from their weight files (taesd.py's
// "<name>_encoder" / "<name>_decoder" state dicts), with the config read from the weights unless given.
// Images are in [0, 1]; the latent is the raw latent (TAESD.scale_latents is only for 8-bit previews).

import type { Engine } from '../../engine/device.js';
import type { DType } from '../../engine/dtype.js';
import type { Recorder } from '../../engine/recorder.js';
import type { TensorSource } from '../../formats/safetensors.js';
import type { Tensor } from '../../engine/tensor.js';
import { SiloError } from '../../engine/errors.js';
import { WeightLoader } from '../weights.js';
import { taesdConfigFromWeights, type TaesdConfig } from './config.js';
import { TaesdEncoder } from './encoder.js';
import { TaesdDecoder } from './decoder.js';

export interface TinyAutoencoderOptions {
  /** Storage dtype of weights and activations (f16 needs shader-f16). */
  dtype?: DType;
  /** The activations' dtype when it differs from the weights' (f16 weights, f32 activations: mixed precision). */
  activations?: DType;
  /** Overrides the config read from the weights (it must still match them). */
  config?: TaesdConfig;
}

export class TinyAutoencoder {
  private constructor(
    readonly config: TaesdConfig,
    /** The activations' dtype (images and latents are given in it). */
    readonly dtype: DType,
    readonly encoder?: TaesdEncoder,
    readonly decoder?: TaesdDecoder,
  ) {}

  static load(engine: Engine, sources: { encoder?: TensorSource; decoder?: TensorSource }, opts: TinyAutoencoderOptions = {}): TinyAutoencoder {
    const config = opts.config ?? taesdConfigFromWeights(sources);
    const dtype = opts.dtype ?? 'f32';
    const activations = opts.activations ?? dtype;
    const encoder = sources.encoder ? WeightLoader.build(engine, sources.encoder, { dtype, activations }, (w) => new TaesdEncoder(w, config)) : undefined;
    let decoder: TaesdDecoder | undefined;
    try {
      decoder = sources.decoder ? WeightLoader.build(engine, sources.decoder, { dtype, activations }, (w) => new TaesdDecoder(w, config)) : undefined;
    } catch (e) {
      encoder?.dispose();
      throw e;
    }
    return new TinyAutoencoder(config, activations, encoder, decoder);
  }

  /** image [N, C, H, W] in [0, 1] -> raw latent. */
  encode(rec: Recorder, image: Tensor): Tensor {
    if (!this.encoder) throw new SiloError('TinyAutoencoder: no encoder weights were loaded');
    return this.encoder.forward(rec, image);
  }

  /** latent -> raw decoder output (use decodeImage for the final image). */
  decode(rec: Recorder, latent: Tensor): Tensor {
    if (!this.decoder) throw new SiloError('TinyAutoencoder: no decoder weights were loaded');
    return this.decoder.forward(rec, latent);
  }

  /** latent -> image clamped to [0, 1]. */
  decodeImage(rec: Recorder, latent: Tensor): Tensor {
    if (!this.decoder) throw new SiloError('TinyAutoencoder: no decoder weights were loaded');
    return this.decoder.decodeImage(rec, latent);
  }

  dispose(): void {
    this.encoder?.dispose();
    this.decoder?.dispose();
  }
}
