// Which runner handles a golden case folder. Known case names map directly; a folder with another
// name (new configs, seeds, shapes) is recognised from its manifest and config files. Cases we cannot
// run yet are named in PENDING_CASES and reported as such, never handed to a runner of another kind
// (a variant's name starting with a pending case's name counts as that case).

import type { CaseRunner } from './case.js';
import type { CaseFiles } from './files.js';
import { runUNetCase } from './unet.js';
import { runVae } from './vae.js';
import { runClipTextMini } from './clip.js';
import { runTaef2 } from './taef2.js';
import { runSiloCnn } from './silo_cnn.js';
import { runSiloRg } from './silo_rg.js';
import { runSiloCnnTrain } from './silo_cnn_train.js';
import { runSchedulers } from './schedulers.js';
import { runDegradations } from './degradations.js';
import { runDpsStep, runSiloStep } from './steps.js';

export const RUNNERS: Record<string, CaseRunner> = {
  unet: runUNetCase,
  vae: runVae,
  clip: runClipTextMini,
  taesd: runTaef2,
  silo_cnn: runSiloCnn,
  silo_rg: runSiloRg,
  silo_cnn_train: runSiloCnnTrain,
  schedulers: runSchedulers,
  degradations: runDegradations,
  silo_step: runSiloStep,
  dps_step: runDpsStep,
};

const CASE_NAMES: Record<string, string> = {
  unet_mini: 'unet',
  vae_mini: 'vae',
  clip_text_mini: 'clip',
  taef2: 'taesd',
  silo_cnn: 'silo_cnn',
  silo_rg: 'silo_rg',
  silo_cnn_train: 'silo_cnn_train',
  schedulers: 'schedulers',
  degradations: 'degradations',
  silo_step: 'silo_step',
  dps_step: 'dps_step',
};

/** Cases of later milestones that `silo check` recognises but cannot run yet: name -> what is missing. */
export const PENDING_CASES: Record<string, string> = {};

export async function detectKind(files: CaseFiles, manifest: Record<string, unknown>): Promise<string | null> {
  const name = typeof manifest['case'] === 'string' ? manifest['case'] : '';
  if (CASE_NAMES[name]) return CASE_NAMES[name]!;
  if (PENDING_CASES[name]) return name;
  const pending = Object.keys(PENDING_CASES).find((p) => name.startsWith(`${p}_`) || name.startsWith(`${p}-`));
  if (pending) return pending;
  // Another case of a known format (other seeds, batch, channels): named after it, and never mistaken
  // for a case whose name it extends (silo_cnn_train_b4 is a training case, not silo_cnn).
  const variant = Object.keys(CASE_NAMES)
    .sort((a, b) => b.length - a.length)
    .find((c) => name.startsWith(`${c}_`) || name.startsWith(`${c}-`));
  if (variant) return CASE_NAMES[variant]!;
  if (manifest['scheduler_config_input'] || manifest['ddpm_config_resolved']) return 'schedulers';
  const fileMap = (manifest['files'] ?? {}) as Record<string, string>;
  if (fileMap['encoder_weights'] || fileMap['decoder_weights']) return 'taesd';
  if (fileMap['tokens'] || fileMap['bpe']) return 'clip';
  if (await files.exists('config.json')) {
    const cfg = JSON.parse(await files.text('config.json')) as Record<string, unknown>;
    const cls = String(cfg['_class_name'] ?? '');
    if (cls === 'UNet2DConditionModel') return 'unet';
    if (cls === 'AutoencoderKL') return 'vae';
    const arch = (cfg['architectures'] as string[] | undefined) ?? [];
    if (arch.includes('CLIPTextModel') || cfg['model_type'] === 'clip_text_model') return 'clip';
    if ('feature_dims' in cfg || 'projection_dim' in cfg) return 'silo_rg';
  }
  if (/silo.*cnn|DegradationModel/i.test(JSON.stringify(manifest['what'] ?? '') + name)) return 'silo_cnn';
  return null;
}
