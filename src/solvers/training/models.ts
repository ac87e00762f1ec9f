// The frozen models a training run needs, from either kind of source `silo train` and the training page
// take (browser-safe; the surfaces only open the files): a TAESD-family autoencoder (e_sigma is then
// the sinusoid of SILO's pseudo-timestep at SD's time_proj width, there being no UNet), or a diffusers
// Stable Diffusion folder (its VAE encodes; its UNet's time embedding gives e_sigma; for the CNN only
// that part of the UNet is loaded, for the readout operator the whole UNet and the text encoder, which
// embeds the empty prompt once and is freed).

import type { Engine } from '../../engine/device.js';
import { ArgumentError } from '../../engine/errors.js';
import type { FolderAccess } from '../../formats/folder.js';
import type { TensorSource } from '../../formats/safetensors.js';
import { openComponent } from '../../models/diffusers-folder.js';
import { loadDiffusersPipeline } from '../../models/pipeline.js';
import { TinyAutoencoder } from '../../models/taesd/autoencoder.js';
import { parseUNetConfig } from '../../models/unet/config.js';
import { AutoencoderKL } from '../../models/vae/autoencoder.js';
import { parseVaeConfig } from '../../models/vae/config.js';
import { WeightLoader } from '../../models/weights.js';
import { sdVaeCodec, taesdCodec, type LatentCodec } from './latent-codec.js';
import type { ReadoutPrior } from './operators.js';
import { readoutPrior } from './readout-prior.js';
import { sinusoidSigmaEmbedder, unetFileSigmaEmbedder, unetSigmaEmbedder, type SigmaEmbedder } from './sigma-embedding.js';

export type TrainModelSource =
  | { kind: 'taesd'; encoder: TensorSource; decoder?: TensorSource }
  | { kind: 'sd'; folder: FolderAccess; variant?: string };

export interface TrainModels {
  codec: LatentCodec;
  embedder: SigmaEmbedder;
  /** The readout operator's frozen UNet and prompt embedding (readout only). */
  prior?: ReadoutPrior;
  dispose(): void;
}

export async function loadTrainModels(engine: Engine, src: TrainModelSource, operator: 'cnn' | 'readout'): Promise<TrainModels> {
  if (src.kind === 'taesd') {
    if (operator === 'readout') throw new ArgumentError('train: the readout operator reads a Stable Diffusion UNet\'s features: give a Stable Diffusion model, not a TAESD-family autoencoder');
    const ae = TinyAutoencoder.load(engine, { encoder: src.encoder, decoder: src.decoder });
    return { codec: taesdCodec(ae), embedder: sinusoidSigmaEmbedder(320), dispose: () => ae.dispose() };
  }
  const owned: { dispose(): void }[] = [];
  const dispose = () => owned.splice(0).reverse().forEach((m) => m.dispose());
  try {
    if (operator === 'readout') {
      const text = await loadDiffusersPipeline(engine, src.folder, { variant: src.variant, components: ['text_encoder', 'tokenizer'], dtype: 'f32' });
      let pipe: Awaited<ReturnType<typeof loadDiffusersPipeline>>;
      let prior: ReadoutPrior;
      try {
        pipe = await loadDiffusersPipeline(engine, src.folder, { variant: src.variant, components: ['unet', 'vae'], dtype: 'f32' });
        owned.push(pipe);
        prior = await readoutPrior(engine, pipe.unet!, text.tokenizer!, text.textEncoder!);
      } finally {
        text.dispose();
      }
      return { codec: sdVaeCodec(pipe.vae!), embedder: unetSigmaEmbedder(pipe.unet!), prior, dispose };
    }
    const [vaeFiles, unetFiles] = [await openComponent(src.folder, 'vae', { variant: src.variant }), await openComponent(src.folder, 'unet', { variant: src.variant })];
    const vae = WeightLoader.load(engine, vaeFiles.weights, { dtype: 'f32' }, (w) => new AutoencoderKL(w, parseVaeConfig(vaeFiles.config)));
    owned.push(vae);
    const embedder = unetFileSigmaEmbedder(engine, unetFiles.weights, parseUNetConfig(unetFiles.config));
    owned.push(embedder);
    return { codec: sdVaeCodec(vae.model), embedder, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}
