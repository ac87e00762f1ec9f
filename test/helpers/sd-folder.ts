// A diffusers Stable Diffusion folder assembled by symlinks from the golden mini models (unet_mini,
// vae_mini, clip_text_mini with its BPE vocabulary) and SD-1.5's scheduler config, in `root`/`name`.
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { goldenDir } from './golden.js';

const SD15_SCHEDULER = {
  _class_name: 'PNDMScheduler', beta_end: 0.012, beta_schedule: 'scaled_linear', beta_start: 0.00085,
  num_train_timesteps: 1000, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1, trained_betas: null, clip_sample: false,
};

export function miniSdFolder(root: string, name = 'sd'): string {
  const dir = join(root, name);
  const link = (from: string, to: string) => {
    mkdirSync(join(dir, to, '..'), { recursive: true });
    symlinkSync(from, join(dir, to));
  };
  link(`${goldenDir('unet_mini')}/config.json`, 'unet/config.json');
  link(`${goldenDir('unet_mini')}/diffusion_pytorch_model.safetensors`, 'unet/diffusion_pytorch_model.safetensors');
  link(`${goldenDir('vae_mini')}/config.json`, 'vae/config.json');
  link(`${goldenDir('vae_mini')}/diffusion_pytorch_model.safetensors`, 'vae/diffusion_pytorch_model.safetensors');
  link(`${goldenDir('clip_text_mini')}/config.json`, 'text_encoder/config.json');
  link(`${goldenDir('clip_text_mini')}/model.safetensors`, 'text_encoder/model.safetensors');
  link(`${goldenDir('clip_text_mini')}/bpe_simple_vocab_16e6.txt.gz`, 'tokenizer/bpe_simple_vocab_16e6.txt.gz');
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  writeFileSync(join(dir, 'scheduler/scheduler_config.json'), JSON.stringify(SD15_SCHEDULER));
  const index = {
    _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'],
    text_encoder: ['transformers', 'CLIPTextModel'], tokenizer: ['transformers', 'CLIPTokenizer'], scheduler: ['diffusers', 'PNDMScheduler'],
  };
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify(index));
  return dir;
}
