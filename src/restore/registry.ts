// The restoration methods by name. Adding a method: one file in samplers/ and one line here.
import type { Sampler } from './sampler.js';
import { siloCnn } from './samplers/silo-cnn.js';
import { siloRg } from './samplers/silo-rg.js';
import { latentDps } from './samplers/latent-dps.js';
import { psld } from './samplers/psld.js';
import { ArgumentError } from '../engine/errors.js';

export const SAMPLERS = {
  'silo-cnn': siloCnn,
  'silo-rg': siloRg,
  'latent-dps': latentDps,
  psld,
} as const satisfies Record<string, Sampler>;

export type RestoreMethod = keyof typeof SAMPLERS;
export const RESTORE_METHODS = Object.keys(SAMPLERS) as RestoreMethod[];

export function isRestoreMethod(name: string): name is RestoreMethod {
  return Object.hasOwn(SAMPLERS, name);
}

/** The sampler for a method name; an unknown name is an ArgumentError listing the known ones. */
export function samplerFor(method: string): Sampler {
  if (!isRestoreMethod(method)) throw new ArgumentError(`restore: unknown method "${method}" (known: ${RESTORE_METHODS.join(', ')})`);
  return SAMPLERS[method];
}
