// The defaults of a restoration, in one table: what every method and task runs with when the user does
// not say. The CLI's help, the batch runner, the benchmarks and the web page read them from here.

import { SILO_ETA, type DegradationTask } from '../solvers/degradations/tasks.js';
import { SILO_NOISE_SIGMA } from '../solvers/degradations/noise.js';
import type { RestoreMethod } from './registry.js';
import { samplerFor } from './registry.js';

/** SILO's sampling defaults (silo_sample.py): 999 DDPM steps, seed 1000, no classifier-free guidance. */
export const RESTORE_DEFAULTS = {
  steps: 999,
  seed: 1000,
  sigma: SILO_NOISE_SIGMA,
  cfg: 1,
  /** SILO's FFHQ prompt; its COCO scripts use "A high quality photo". */
  prompt: 'A high quality photo of a face',
  clampW: true,
  /** The weights' storage: f16 (mixed precision) where the adapter has shader-f16, else f32. */
  weights: 'auto',
} as const;

/** Latent-DPS's step size (the DPS reference's scale for this residual). */
export const LATENT_DPS_ETA = 1.0;
/** SILO's step size where no task says otherwise (blur, SR, JPEG). */
export const SILO_DEFAULT_ETA = 0.5;

/** Which eta a method runs with for a task, and where it came from (for logs and the report). */
export function methodEta(method: RestoreMethod, task: DegradationTask, given?: number): { eta?: number; from: string } {
  const sampler = samplerFor(method);
  if (!sampler.usesEta) return { from: `not used: ${sampler.label} steps with its own weights` };
  if (given !== undefined) return { eta: given, from: 'given' };
  if (sampler.space === 'latent') return { eta: SILO_ETA[task], from: `SILO's default for ${task}` };
  return { eta: LATENT_DPS_ETA, from: `${sampler.label} default` };
}

/**
 * The method the given models imply when none is named: a readout folder -> silo-rg, a CNN file or the
 * golden models (whose operator is the CNN) -> silo-cnn; undefined when the models say nothing (then
 * the task's released operator decides).
 */
export function defaultMethod(o: { operator?: 'file' | 'folder'; golden?: boolean }): RestoreMethod | undefined {
  if (o.operator === 'folder') return 'silo-rg';
  if (o.operator === 'file' || o.golden) return 'silo-cnn';
  return undefined;
}
