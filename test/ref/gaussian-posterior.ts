// f64 CPU reference for a latent diffusion prior whose posterior is known in closed form:
//   z0 ~ N(mu, diag(s^2)),  z_t = sqrt(a) z0 + sqrt(1 - a) e  (a = alphas_cumprod[t])
// gives the exact (MMSE) noise predictor, element-wise affine:
//   E[z0 | z_t] = mu + sqrt(a) s^2 / (a s^2 + 1 - a) (z_t - sqrt(a) mu)
//   eps*(z_t)   = (z_t - sqrt(a) E[z0 | z_t]) / sqrt(1 - a) = c_t (z_t - sqrt(a) mu),  c_t = sqrt(1 - a) / (a s^2 + 1 - a)
// and, for a linear measurement w = H z0 + sigma n, the Gaussian posterior
//   mean = mu + S H^T (H S H^T + sigma^2 I)^-1 (w - H mu),  cov = S - S H^T (H S H^T + sigma^2 I)^-1 H S.
// Matrices are dense row-major Float64Arrays.

/** E[z0 | z_t] per element, from the prior's moments (the brief's formula, f64). */
export function gaussianDenoiserRef(z: ArrayLike<number>, alphaBar: number, mu: ArrayLike<number>, std: ArrayLike<number>): Float64Array {
  const sa = Math.sqrt(alphaBar);
  return Float64Array.from(z, (zi, i) => {
    const s2 = std[i]! ** 2;
    return mu[i]! + ((sa * s2) / (alphaBar * s2 + 1 - alphaBar)) * (zi - sa * mu[i]!);
  });
}

/** eps*(z_t) = (z_t - sqrt(a) E[z0 | z_t]) / sqrt(1 - a). */
export function gaussianEpsRef(z: ArrayLike<number>, alphaBar: number, mu: ArrayLike<number>, std: ArrayLike<number>): Float64Array {
  const x0 = gaussianDenoiserRef(z, alphaBar, mu, std);
  const sa = Math.sqrt(alphaBar);
  const sb = Math.sqrt(1 - alphaBar);
  return Float64Array.from(z, (zi, i) => (zi - sa * x0[i]!) / sb);
}

/** c_t = d eps* / d z_t = sqrt(1 - a) / (a s^2 + 1 - a), per element. */
export function gaussianEpsSlope(alphaBar: number, std: ArrayLike<number>): Float64Array {
  const sb = Math.sqrt(1 - alphaBar);
  return Float64Array.from(std, (s) => sb / (alphaBar * s * s + 1 - alphaBar));
}

/** y = M x for M [rows, cols]. */
export function matVec(M: ArrayLike<number>, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += M[r * cols + c]! * x[c]!;
    y[r] = acc;
  }
  return y;
}

/** y = M^T x for M [rows, cols]. */
export function matTVec(M: ArrayLike<number>, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const xr = x[r]!;
    for (let c = 0; c < cols; c++) y[c]! += M[r * cols + c]! * xr;
  }
  return y;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

export function l2Distance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s);
}

/** Lower Cholesky factor L (L L^T = A) of a symmetric positive definite A [n, n]. */
export function cholesky(A: ArrayLike<number>, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = A[j * n + j]!;
    for (let k = 0; k < j; k++) d -= L[j * n + k]! ** 2;
    if (!(d > 0)) throw new Error(`cholesky: matrix is not positive definite at column ${j} (pivot ${d})`);
    const ljj = Math.sqrt(d);
    L[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = A[i * n + j]!;
      for (let k = 0; k < j; k++) s -= L[i * n + k]! * L[j * n + k]!;
      L[i * n + j] = s / ljj;
    }
  }
  return L;
}

/** Solves L L^T x = b given the Cholesky factor. */
export function choleskySolve(L: Float64Array, n: number, b: ArrayLike<number>): Float64Array {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i]!;
    for (let k = 0; k < i; k++) s -= L[i * n + k]! * y[k]!;
    y[i] = s / L[i * n + i]!;
  }
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i]!;
    for (let k = i + 1; k < n; k++) s -= L[k * n + i]! * x[k]!;
    x[i] = s / L[i * n + i]!;
  }
  return x;
}

export interface GaussianPosterior {
  mean: Float64Array;
  /** Diagonal of the posterior covariance. */
  variance: Float64Array;
  /** tr(cov): E ||z0 - mean||^2 for a posterior sample. */
  trace: number;
}

/**
 * p(z0 | w) for z0 ~ N(mu, diag(std^2)) and w = H z0 + sigma n, H [m, n], through the m x m system
 * G = H S H^T + sigma^2 I (covariance form).
 */
export function gaussianPosterior(mu: ArrayLike<number>, std: ArrayLike<number>, H: ArrayLike<number>, m: number, sigma: number, w: ArrayLike<number>): GaussianPosterior {
  const n = mu.length;
  const s2 = Float64Array.from(std, (s) => s * s);
  // HS = H diag(s^2) [m, n]; G = HS H^T + sigma^2 I.
  const HS = new Float64Array(m * n);
  for (let r = 0; r < m; r++) for (let c = 0; c < n; c++) HS[r * n + c] = H[r * n + c]! * s2[c]!;
  const G = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let acc = 0;
      for (let c = 0; c < n; c++) acc += HS[i * n + c]! * H[j * n + c]!;
      G[i * m + j] = acc;
      G[j * m + i] = acc;
    }
    G[i * m + i]! += sigma * sigma;
  }
  const L = cholesky(G, m);
  const Hmu = matVec(H, m, n, mu);
  const innov = Float64Array.from(w, (wi, i) => wi - Hmu[i]!);
  const mean = Float64Array.from(matTVec(HS, m, n, choleskySolve(L, m, innov)), (v, i) => mu[i]! + v);
  // diag(S H^T G^-1 H S)_c = (HS)[:, c]^T G^-1 (HS)[:, c].
  const variance = new Float64Array(n);
  const col = new Float64Array(m);
  for (let c = 0; c < n; c++) {
    for (let r = 0; r < m; r++) col[r] = HS[r * n + c]!;
    variance[c] = s2[c]! - dot(col, choleskySolve(L, m, col));
  }
  return { mean, variance, trace: variance.reduce((a, b) => a + b, 0) };
}

/**
 * The same posterior mean through the n x n information form (S^-1 + H^T H / sigma^2) mean =
 * S^-1 mu + H^T w / sigma^2: an independent route that checks gaussianPosterior.
 */
export function gaussianPosteriorMeanInformation(mu: ArrayLike<number>, std: ArrayLike<number>, H: ArrayLike<number>, m: number, sigma: number, w: ArrayLike<number>): Float64Array {
  const n = mu.length;
  const P = new Float64Array(n * n);
  const inv2 = 1 / (sigma * sigma);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let acc = 0;
      for (let r = 0; r < m; r++) acc += H[r * n + i]! * H[r * n + j]!;
      P[i * n + j] = acc * inv2;
      P[j * n + i] = acc * inv2;
    }
    P[i * n + i]! += 1 / std[i]! ** 2;
  }
  const Htw = matTVec(H, m, n, w);
  const rhs = Float64Array.from(mu, (v, i) => v / std[i]! ** 2 + Htw[i]! * inv2);
  return choleskySolve(cholesky(P, n), n, rhs);
}
