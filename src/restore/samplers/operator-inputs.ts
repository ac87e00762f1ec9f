// Checks shared by the latent-operator samplers.
import type { Tensor } from '../../engine/tensor.js';
import { ArgumentError } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import type { SiloOperator } from '../../solvers/samplers/silo.js';
import type { StepInputs } from '../sampler.js';

/** The e_sigma a sigma-conditioned operator gets, checked against its width. */
export function sigmaEmbFor(e: Tensor | undefined, width: number): Tensor {
  if (!e) throw new ArgumentError('restore: the operator is sigma-conditioned and no sigma embedding was given');
  if (e.shape[e.rank - 1] !== width) {
    throw new ArgumentError(
      `restore: the operator's sigma branch takes a ${width}-d embedding (SD-1.5's time embedding) but got ${shapeString(e.shape)}; ` +
        `a UNet with another time-embedding width needs the embedding supplied (models.sigmaEmb / --sigma-emb)`,
    );
  }
  return e;
}

export function requireOperatorInputs(s: StepInputs, method: string): { operator: SiloOperator; w: Tensor; eta: number } {
  if (!s.operator || !s.w || s.eta === undefined) throw new ArgumentError(`${method}: a step needs the operator, the latent measurement w and eta`);
  return { operator: s.operator, w: s.w, eta: s.eta };
}
