// CPU references for the DDPM and DDIM steps (f64 arithmetic on the float32 alphas_cumprod table),
// written from the DDPM / DDIM papers' formulas in diffusers' parameterisation.

export interface StepRefOptions {
  numTrain: number;
  numInference: number;
  prediction?: 'epsilon' | 'sample' | 'v_prediction';
  clip?: number;
  /** DDIM: alpha after the last step (1 or alphas_cumprod[0]). */
  finalAlpha?: number;
  eta?: number;
  useClipped?: boolean;
}

function x0Ref(x: number, m: number, a: number, o: StepRefOptions): number {
  const p = o.prediction ?? 'epsilon';
  let x0 = p === 'epsilon' ? (x - Math.sqrt(1 - a) * m) / Math.sqrt(a) : p === 'sample' ? m : Math.sqrt(a) * x - Math.sqrt(1 - a) * m;
  if (o.clip !== undefined) x0 = Math.min(Math.max(x0, -o.clip), o.clip);
  return x0;
}

/** DDPM posterior step with fixed_small variance: returns [prev, x0]. */
export function ddpmStepRef(ac: Float32Array, t: number, sample: Float32Array, model: Float32Array, noise: Float32Array | null, o: StepRefOptions): [Float32Array, Float32Array] {
  const prevT = t - Math.floor(o.numTrain / o.numInference);
  const a = ac[t]!;
  const ap = prevT >= 0 ? ac[prevT]! : 1;
  const beta = 1 - a / ap;
  const variance = Math.max(((1 - ap) / (1 - a)) * beta, 1e-20);
  const x0 = sample.map((x, i) => x0Ref(x, model[i]!, a, o));
  const prev = sample.map((x, i) => {
    const mean = ((Math.sqrt(ap) * beta) / (1 - a)) * x0[i]! + ((Math.sqrt(a / ap) * (1 - ap)) / (1 - a)) * x;
    return t > 0 ? mean + Math.sqrt(variance) * noise![i]! : mean;
  });
  return [prev, x0];
}

/** DDIM step: returns [prev, x0]. */
export function ddimStepRef(ac: Float32Array, t: number, sample: Float32Array, model: Float32Array, noise: Float32Array | null, o: StepRefOptions): [Float32Array, Float32Array] {
  const prevT = t - Math.floor(o.numTrain / o.numInference);
  const a = ac[t]!;
  const ap = prevT >= 0 ? ac[prevT]! : o.finalAlpha!;
  const eta = o.eta ?? 0;
  const sigma = eta * Math.sqrt(((1 - ap) / (1 - a)) * (1 - a / ap));
  const p = o.prediction ?? 'epsilon';
  const x0 = sample.map((x, i) => x0Ref(x, model[i]!, a, o));
  const prev = sample.map((x, i) => {
    let eps: number;
    if (p === 'sample' || o.useClipped) eps = (x - Math.sqrt(a) * x0[i]!) / Math.sqrt(1 - a);
    else if (p === 'epsilon') eps = model[i]!;
    else eps = Math.sqrt(a) * model[i]! + Math.sqrt(1 - a) * x;
    const det = Math.sqrt(ap) * x0[i]! + Math.sqrt(1 - ap - sigma * sigma) * eps;
    return eta > 0 ? det + sigma * noise![i]! : det;
  });
  return [prev, x0];
}
