// SILO with its CNN operator H(x0, e_sigma), or the preserve CNN H(x0, sigma): the residual
// ||E(y) - H(x0)|| in latent space.
import { siloStep } from '../../solvers/samplers/silo.js';
import { requireOperatorInputs, sigmaEmbFor } from './operator-inputs.js';
import type { Sampler } from '../sampler.js';

export const siloCnn: Sampler = {
  method: 'silo-cnn',
  label: 'SILO-CNN',
  summary: "SILO with the CNN latent operator (SILO's fast path; no autoencoder in the loop)",
  space: 'latent',
  operator: 'cnn',
  usesEta: true,
  makeOperator(models, sigmaEmb, sigma) {
    // SILO calls the preserve network with the raw sigma per batch item; the loop's x0 is batch 1.
    const p = models.preserve;
    if (p) return { kind: 'preserve', model: p, noiseEmb: p.embedNoise(p.engine, [sigma]) };
    const model = models.cnn!;
    return { kind: 'cnn', model, sigmaEmb: model.config.sigmaCondition ? sigmaEmbFor(sigmaEmb, model.config.sigmaEmbDim) : undefined };
  },
  step(rec, s, zt, t, noise) {
    const { operator, w, eta } = requireOperatorInputs(s, 'silo-cnn');
    return siloStep(rec, s.prior, operator, w, zt, t, noise, { eta, gradClamp: s.gradClamp });
  },
};
