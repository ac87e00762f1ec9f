// DDPM and DDIM schedulers (diffusers v0.27 semantics), built from a scheduler_config.json object.

import type { SchedulerKind } from './config.js';
import { DDPMScheduler } from './ddpm.js';
import { DDIMScheduler } from './ddim.js';

export * from './config.js';
export { noiseSchedule, inferenceTimesteps, torchLinspaceF32 } from './schedule.js';
export { Scheduler, linearCombination, type StepOptions, type StepResult, type StepCoefficients } from './scheduler.js';
export { DDPMScheduler, type DdpmCoefficients } from './ddpm.js';
export { DDIMScheduler, type DdimCoefficients } from './ddim.js';

/** `DDPMScheduler.from_config(json)` / `DDIMScheduler.from_config(json)`. */
export function schedulerFromConfig(kind: SchedulerKind, json: Record<string, unknown>): DDPMScheduler | DDIMScheduler {
  return kind === 'ddpm' ? new DDPMScheduler(json) : new DDIMScheduler(json);
}
