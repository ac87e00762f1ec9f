// CPU reference of torch.optim.Adam / AdamW (torch 1.13's single-tensor path) and of
// torch.nn.utils.clip_grad_norm_, in f64.

export interface AdamRefState {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

export interface AdamRefOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  decoupled?: boolean;
}

/** One step t (>= 1) in place; g already scaled / clipped. */
export function adamRefStep(s: AdamRefState, g: ArrayLike<number>, t: number, o: AdamRefOptions): void {
  const b1 = o.beta1 ?? 0.9;
  const b2 = o.beta2 ?? 0.999;
  const eps = o.eps ?? 1e-8;
  const wd = o.weightDecay ?? 0;
  const stepSize = o.lr / (1 - b1 ** t);
  const bc2 = Math.sqrt(1 - b2 ** t);
  for (let i = 0; i < s.p.length; i++) {
    let gi = g[i]!;
    if (o.decoupled) s.p[i] = s.p[i]! * (1 - o.lr * wd);
    else gi += wd * s.p[i]!;
    s.m[i] = b1 * s.m[i]! + (1 - b1) * gi;
    s.v[i] = b2 * s.v[i]! + (1 - b2) * gi * gi;
    s.p[i] = s.p[i]! - (stepSize * s.m[i]!) / (Math.sqrt(s.v[i]!) / bc2 + eps);
  }
}

/** clip_grad_norm_: the factor min(1, maxNorm / (total + 1e-6)) that every gradient is multiplied by. */
export function clipFactorRef(grads: readonly ArrayLike<number>[], maxNorm: number): number {
  let ss = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) ss += g[i]! * g[i]!;
  return Math.min(1, maxNorm / (Math.sqrt(ss) + 1e-6));
}
