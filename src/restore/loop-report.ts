// Counting what a restoration's programs ran, for its report.

import type { ProgramReport } from '../engine/recorder.js';

const AUTOENCODER_SCOPE = /(^|\/)(vae_|taesd_)/;

/** Dispatches a program recorded inside autoencoder scopes (encode, decode and their VJPs). */
export function autoencoderDispatches(report: ProgramReport): number {
  let n = 0;
  for (const [path, s] of Object.entries(report.ops)) if (AUTOENCODER_SCOPE.test(path)) n += s.dispatches;
  return n;
}
