// PSLD: Latent-DPS's residual weighted by omega plus the "gluing" term weighted by gamma; the decoder
// and the encoder in every step. No eta: omega and gamma are its step weights.
import { psldStep } from '../../solvers/samplers/pixel.js';
import type { Sampler } from '../sampler.js';

/** PSLD's weights as its reference uses them. */
export const PSLD_OMEGA = 1;
export const PSLD_GAMMA = 0.1;

export const psld: Sampler = {
  method: 'psld',
  label: 'PSLD',
  summary: 'PSLD baseline: pixel-space residual plus the gluing term, decoder and encoder in every step',
  space: 'pixel',
  usesEta: false,
  step(rec, s, zt, t, noise) {
    return psldStep(rec, s.prior, s.vae, s.A, s.y, zt, t, noise, { omega: s.psldOmega ?? PSLD_OMEGA, gamma: s.psldGamma ?? PSLD_GAMMA });
  },
};
