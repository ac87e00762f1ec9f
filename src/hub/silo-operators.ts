// The latent operators SILO released (github.com/ronraphaeli/SILO, release "Checkpoints", asset
// trained_ckpt.zip), one row per checkpoint, with the settings SILO's own scripts (scripts/*.sh) run
// each one with. Sources and quirks: docs/silo-release.md sections 2-4. Browser-safe.

import { SiloError } from '../engine/errors.js';
import { DEGRADATION_TASKS, type DegradationTask } from '../solvers/degradations/tasks.js';

export type OperatorMethod = 'silo-rg' | 'silo-cnn';
/** readout: AggregationNetwork dict; cnn: DegradationModel state dict; preserve: LatentDegradationNetwork state dict. */
export type OperatorKind = 'readout' | 'cnn' | 'preserve';

export interface ReleasedOperator {
  task: DegradationTask;
  method: OperatorMethod;
  kind: OperatorKind;
  /** Entry inside trained_ckpt.zip. */
  path: string;
  /** The checkpoint's file stem: names the converted operator in the cache. */
  name: string;
  dataset: 'ffhq' | 'coco';
  /** The Stable Diffusion repo SILO samples with for this operator. */
  prior: string;
  /** SILO's guidance step size (`--scale`). */
  eta: number;
  prompt: string;
  /** `--clamp`: the measurement latent is clamped to [-4, 4]. */
  clamp: boolean;
  sigmaCondition: boolean;
  /** The readout head also takes the inpainting mask (random-box inpainting). */
  condInpaint: boolean;
  /** The script in SILO's repo that runs it. */
  script: string;
}

export const SILO_RELEASE = {
  owner: 'ronraphaeli',
  repo: 'SILO',
  tag: 'Checkpoints',
  asset: 'trained_ckpt.zip',
  url: 'https://github.com/ronraphaeli/SILO/releases/download/Checkpoints/trained_ckpt.zip',
} as const;

/** Known sha256 of trained_ckpt.zip by URL: none pinned yet (no machine here could fetch the asset). */
export const PINNED_RELEASE_SHA256: Readonly<Record<string, string>> = {};

export const PRIOR_RV = 'stablediffusionapi/realistic-vision-v51';
export const PRIOR_SD15 = 'botp/stable-diffusion-v1-5';
const FACE = 'A high quality photo of a face';
const PHOTO = 'A high quality photo';

const rg = (task: DegradationTask, stem: string, eta: number, clamp: boolean, extra: Partial<ReleasedOperator> = {}): ReleasedOperator => ({
  task,
  method: 'silo-rg',
  kind: 'readout',
  path: `trained_ckpt/RG/${stem}.pt`,
  name: stem,
  dataset: 'ffhq',
  prior: PRIOR_RV,
  eta,
  prompt: FACE,
  clamp,
  sigmaCondition: true,
  condInpaint: false,
  script: `scripts/rg_ffhq_${stem.replace(/_rg_ffhq_operator$/, '')}.sh`,
  ...extra,
});

/** Every checkpoint in trained_ckpt.zip (docs/silo-release.md section 2). */
export const RELEASED_OPERATORS: readonly ReleasedOperator[] = [
  rg('gaussian_blur', 'gb_rg_ffhq_operator', 0.5, true),
  rg('inpaint_center', 'ip_rg_ffhq_operator', 1, false),
  rg('inpaint_random', 'rand_ip_rg_ffhq_operator', 1, false, { condInpaint: true }),
  rg('jpeg10', 'jpeg_rg_ffhq_operator', 0.5, false),
  rg('sr4', 'sr_4_rg_ffhq_operator', 0.5, true),
  rg('sr8', 'sr_8_rg_ffhq_operator', 0.5, true),
  {
    task: 'sr8', method: 'silo-cnn', kind: 'cnn', path: 'trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt', name: 'sr_8_cnn_ffhq_operator',
    dataset: 'ffhq', prior: PRIOR_RV, eta: 0.5, prompt: FACE, clamp: true, sigmaCondition: true, condInpaint: false, script: 'scripts/cnn_ffhq_sr_8.sh',
  },
  {
    task: 'inpaint_center', method: 'silo-rg', kind: 'readout', path: 'trained_ckpt/RG/ip_rg_coco_operator.pt', name: 'ip_rg_coco_operator',
    dataset: 'coco', prior: PRIOR_SD15, eta: 1, prompt: PHOTO, clamp: false, sigmaCondition: true, condInpaint: false, script: 'scripts/rg_coco_ip.sh',
  },
  // Sits in RG/ and is named _ffhq_, yet SILO runs it on COCO with the SD-1.5 prior (cnn_coco_sr_4.sh);
  // a "preserve" LatentDegradationNetwork conditioned on sigma itself (silo-cnn guides with either CNN).
  {
    task: 'sr4', method: 'silo-cnn', kind: 'preserve', path: 'trained_ckpt/RG/sr_4_cnn_ffhq_operator.pt', name: 'sr_4_cnn_ffhq_operator',
    dataset: 'coco', prior: PRIOR_SD15, eta: 0.75, prompt: PHOTO, clamp: true, sigmaCondition: true, condInpaint: false, script: 'scripts/cnn_coco_sr_4.sh',
  },
];

/** A task/method with no released operator this engine can use; the message says what exists and what would do. */
export class OperatorNotReleasedError extends SiloError {}

const describeRow = (r: ReleasedOperator) =>
  `${r.method} ${r.kind === 'preserve' ? '"preserve" CNN' : r.kind} (${r.dataset.toUpperCase()}, ${r.prior === PRIOR_SD15 ? 'SD-1.5' : 'Realistic Vision v5.1'} prior, ${r.path})`;

const ALTERNATIVES = 'latent-dps and psld need no operator (--method latent-dps|psld)';

/**
 * The released operator for `task`. Without `method`: the one SILO's scripts use, FFHQ rows first;
 * for sr8, where both exist, the CNN (cnn_ffhq_sr_8.sh), SILO's fast path: it needs no UNet readout
 * features, so a guidance step backpropagates through a small CNN instead of the UNet's up blocks.
 * `dataset` picks between FFHQ and COCO rows where a task has both (inpaint_center).
 */
export function releasedOperator(task: string, method?: string, dataset?: 'ffhq' | 'coco'): ReleasedOperator {
  if (!(DEGRADATION_TASKS as readonly string[]).includes(task)) throw new OperatorNotReleasedError(`unknown task "${task}" (known: ${DEGRADATION_TASKS.join(', ')})`);
  if (method !== undefined && method !== 'silo-rg' && method !== 'silo-cnn') {
    throw new OperatorNotReleasedError(`method ${method} uses no SILO operator (only silo-rg and silo-cnn do); ${ALTERNATIVES}`);
  }
  const rows = RELEASED_OPERATORS.filter((r) => r.task === task);
  const usable = rows.filter((r) => (!method || r.method === method) && (!dataset || r.dataset === dataset));
  if (usable.length) {
    const byDataset = usable.filter((r) => r.dataset === (dataset ?? 'ffhq'));
    const pool = byDataset.length ? byDataset : usable;
    return pool.find((r) => r.method === 'silo-cnn') ?? pool[0]!;
  }
  const what = `${task}${method ? ` with --method ${method}` : ''}${dataset ? ` (${dataset})` : ''}`;
  if (!rows.length) {
    throw new OperatorNotReleasedError(
      `SILO released no operator for ${task}: its release covers ${[...new Set(RELEASED_OPERATORS.map((r) => r.task))].join(', ')}. ` +
        `Use --operator with an operator trained for ${task} (silo train, issue #13), or ${ALTERNATIVES}.`,
    );
  }
  const released = rows.map(describeRow).join('; ');
  const others = [...new Set(rows.map((r) => r.method))].filter((m) => m !== method);
  const need =
    method === 'silo-cnn'
      ? `--operator with a DegradationModel trained for ${task} (silo train, issue #13)`
      : method === 'silo-rg'
        ? `--operator with a readout operator folder trained for ${task} (silo train, issue #13)`
        : `--operator with an operator trained for ${task}`;
  throw new OperatorNotReleasedError(
    `no released operator for ${what} that this engine can use. The release has for ${task}: ${released}. ` +
      `Use ${others.length ? `${others.map((m) => `--method ${m}`).join(' or ')}, or ` : ''}${need}, or ${ALTERNATIVES}.`,
  );
}

/** The rows `silo pull` fetches: every row, or those of the given tasks/method/dataset (each task must have one). */
export function selectReleasedOperators(sel: { tasks?: readonly string[]; method?: string; dataset?: 'ffhq' | 'coco'; all?: boolean }): ReleasedOperator[] {
  if (sel.all) {
    const rows = RELEASED_OPERATORS.filter((r) => (!sel.method || r.method === sel.method) && (!sel.dataset || r.dataset === sel.dataset));
    if (!rows.length) throw new OperatorNotReleasedError(`the release has no ${sel.method ?? ''} ${sel.dataset ?? ''} operator`.replace(/\s+/g, ' '));
    return rows;
  }
  const out: ReleasedOperator[] = [];
  for (const t of sel.tasks ?? []) {
    const r = releasedOperator(t, sel.method, sel.dataset);
    if (!out.includes(r)) out.push(r);
  }
  return out;
}
