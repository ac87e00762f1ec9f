// The autoencoder an operator is trained for, behind one interface (issue #13 item 6): SD's VAE (a
// posterior sample times scaling_factor, as SILO's trainer encodes) or a TAESD-family tiny autoencoder
// (deterministic; images in [0, 1], so x / 2 + 1 / 2 first). Channel count and the image-to-latent
// factor come from the encoder; the decoder, when given, serves validation (D(H(E(x))) against A(x)).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import type { U64 } from '../../engine/random.js';
import { SiloError } from '../../engine/errors.js';
import { scale } from '../../engine/ops/elementwise.js';
import type { AutoencoderKL } from '../../models/vae/autoencoder.js';
import type { TinyAutoencoder } from '../../models/taesd/autoencoder.js';
import { taesdScaleFactor } from '../../models/taesd/config.js';

export interface LatentCodec {
  /** For logs and checkpoint metadata ("taesd-family (32 channels)", "sd-vae"). */
  readonly name: string;
  readonly channels: number;
  /** Image side / latent side. */
  readonly factor: number;
  readonly canDecode: boolean;
  /** x [N, 3, H, W] in [-1, 1] -> the latent the operator sees; `seed` draws a posterior sample where there is one. */
  encode(rec: Recorder, x: Tensor, seed: U64): Tensor;
  /** latent -> image [N, 3, H, W] in [-1, 1]. */
  decode(rec: Recorder, z: Tensor): Tensor;
}

export function taesdCodec(ae: TinyAutoencoder, label = 'taesd-family'): LatentCodec {
  if (!ae.encoder) throw new SiloError('training needs the autoencoder\'s encoder weights');
  const f = taesdScaleFactor(ae.config);
  return {
    name: `${label} (${ae.config.latentChannels} channels, /${f.encoder})`,
    channels: ae.config.latentChannels,
    factor: f.encoder,
    canDecode: !!ae.decoder,
    encode: (rec, x) => rec.engine.tidy(() => ae.encode(rec, scale(rec, x, 0.5, 0.5))),
    decode: (rec, z) => rec.engine.tidy(() => scale(rec, ae.decodeImage(rec, z), 2, -1)),
  };
}

export function sdVaeCodec(vae: AutoencoderKL, label = 'sd-vae'): LatentCodec {
  const { scalingFactor: s, shiftFactor: shift } = vae.config;
  const factor = 2 ** (vae.config.blockOutChannels.length - 1);
  return {
    name: `${label} (${vae.config.latentChannels} channels, /${factor}, scaled by ${s})`,
    channels: vae.config.latentChannels,
    factor,
    canDecode: true,
    encode: (rec, x, seed) =>
      rec.engine.tidy(() => {
        const post = vae.encode(rec, x);
        const z = vae.sample(rec, post, seed);
        return scale(rec, z, s, -s * shift);
      }),
    decode: (rec, z) => rec.engine.tidy(() => vae.decode(rec, scale(rec, z, 1 / s, shift))),
  };
}
