// Latent-DPS: the residual ||y - A(D(x0 / s))|| in pixel space, the decoder and its VJP in every step.
import { ArgumentError } from '../../engine/errors.js';
import { latentDpsStep } from '../../solvers/samplers/pixel.js';
import type { Sampler } from '../sampler.js';

export const latentDps: Sampler = {
  method: 'latent-dps',
  label: 'Latent-DPS',
  summary: 'Latent-DPS baseline: pixel-space residual, the VAE decoder in every step',
  space: 'pixel',
  usesEta: true,
  step(rec, s, zt, t, noise) {
    if (s.eta === undefined) throw new ArgumentError('latent-dps: a step needs eta (its step size)');
    return latentDpsStep(rec, s.prior, s.vae, s.A, s.y, zt, t, noise, { scale: s.eta });
  },
};
