// SILO with its readout operator R(UNet features, e_sigma): the residual ||E(y) - R(.)|| in latent space,
// differentiated through R and the UNet up to its readout features.
import { siloStep } from '../../solvers/samplers/silo.js';
import { requireOperatorInputs, sigmaEmbFor } from './operator-inputs.js';
import type { Sampler } from '../sampler.js';

export const siloRg: Sampler = {
  method: 'silo-rg',
  label: 'SILO-RG',
  summary: 'SILO with the readout (aggregation network) operator on the UNet features; no autoencoder in the loop',
  space: 'latent',
  operator: 'readout',
  usesEta: true,
  makeOperator(models, sigmaEmb) {
    const model = models.readout!;
    return {
      kind: 'readout',
      model,
      sigmaEmb: model.config.sigmaCondition ? sigmaEmbFor(sigmaEmb, model.config.sigmaEmbDim) : undefined,
      mask: models.readoutMask,
    };
  },
  step(rec, s, zt, t, noise) {
    const { operator, w, eta } = requireOperatorInputs(s, 'silo-rg');
    return siloStep(rec, s.prior, operator, w, zt, t, noise, { eta, gradClamp: s.gradClamp });
  },
};
