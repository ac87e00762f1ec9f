// CPU references (f64) for the image-space degradations and their adjoints. Forwards are in gather
// form (each output sums what it reads); adjoints are written independently in scatter form (each
// output's gradient is added to everything it read), so the pair checks itself by <A x, g> = <x, A^T g>.

const reflect = (i: number, len: number) => (i < 0 ? -i : i >= len ? 2 * (len - 1) - i : i);

/** Per-plane correlation with an odd size x size kernel after ReflectionPad2d(size // 2); x [N, C, H, W]. */
export function blurRef(x: ArrayLike<number>, shape: number[], k: ArrayLike<number>, size: number): Float64Array {
  const [n, c, h, w] = shape as [number, number, number, number];
  const r = (size - 1) / 2;
  const out = new Float64Array(n * c * h * w);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++) {
        let s = 0;
        for (let u = 0; u < size; u++)
          for (let v = 0; v < size; v++) {
            const kv = k[u * size + v]!;
            if (kv !== 0) s += kv * x[(p * h + reflect(y + u - r, h)) * w + reflect(xx + v - r, w)]!;
          }
        out[(p * h + y) * w + xx] = s;
      }
  return out;
}

/** The blur's adjoint: output (y, x)'s gradient times tap (u, v) goes to the pixel that tap read. */
export function blurAdjointRef(g: ArrayLike<number>, shape: number[], k: ArrayLike<number>, size: number): Float64Array {
  const [n, c, h, w] = shape as [number, number, number, number];
  const r = (size - 1) / 2;
  const out = new Float64Array(n * c * h * w);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++) {
        const gv = g[(p * h + y) * w + xx]!;
        for (let u = 0; u < size; u++)
          for (let v = 0; v < size; v++) {
            const kv = k[u * size + v]!;
            if (kv !== 0) out[(p * h + reflect(y + u - r, h)) * w + reflect(xx + v - r, w)]! += kv * gv;
          }
      }
  return out;
}

/** y[p] = Mh x[p] Mw^T for planes [P, h, w]; Mh [oh, h], Mw [ow, w]. */
export function separableRef(x: ArrayLike<number>, planes: number, h: number, w: number, mh: ArrayLike<number>, oh: number, mw: ArrayLike<number>, ow: number): Float64Array {
  const out = new Float64Array(planes * oh * ow);
  for (let p = 0; p < planes; p++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        let s = 0;
        for (let a = 0; a < h; a++) {
          const mha = mh[i * h + a]!;
          if (mha !== 0) for (let b = 0; b < w; b++) s += mha * mw[j * w + b]! * x[(p * h + a) * w + b]!;
        }
        out[(p * oh + i) * ow + j] = s;
      }
  return out;
}

/** x[p] = Mh^T g[p] Mw for g [P, oh, ow]: each g[i, j] spread over Mh[i, a] Mw[j, b]. */
export function separableAdjointRef(g: ArrayLike<number>, planes: number, h: number, w: number, mh: ArrayLike<number>, oh: number, mw: ArrayLike<number>, ow: number): Float64Array {
  const out = new Float64Array(planes * h * w);
  for (let p = 0; p < planes; p++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        const gv = g[(p * oh + i) * ow + j]!;
        for (let a = 0; a < h; a++) {
          const mha = mh[i * h + a]!;
          if (mha !== 0) for (let b = 0; b < w; b++) out[(p * h + a) * w + b]! += mha * mw[j * w + b]! * gv;
        }
      }
  return out;
}

/** torch F.avg_pool2d(x, f): mean of each f x f block, floor(H / f) x floor(W / f) blocks. */
export function avgPoolRef(x: ArrayLike<number>, shape: number[], f: number): Float64Array {
  const [n, c, h, w] = shape as [number, number, number, number];
  const oh = Math.floor(h / f);
  const ow = Math.floor(w / f);
  const out = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        let s = 0;
        for (let a = 0; a < f; a++) for (let b = 0; b < f; b++) s += x[(p * h + i * f + a) * w + j * f + b]!;
        out[(p * oh + i) * ow + j] = s / (f * f);
      }
  return out;
}

/** avg_pool2d's adjoint: each g / f^2 over its block; pixels in no block (trailing rows / cols) get 0. */
export function avgPoolAdjointRef(g: ArrayLike<number>, shape: number[], f: number): Float64Array {
  const [n, c, h, w] = shape as [number, number, number, number];
  const oh = Math.floor(h / f);
  const ow = Math.floor(w / f);
  const out = new Float64Array(n * c * h * w);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++) {
        const i = Math.floor(y / f);
        const j = Math.floor(xx / f);
        out[(p * h + y) * w + xx] = i < oh && j < ow ? g[(p * oh + i) * ow + j]! / (f * f) : 0;
      }
  return out;
}

/** x * mask with mask [H, W] broadcast over N, C (its own adjoint). */
export function maskRef(x: ArrayLike<number>, mask: ArrayLike<number>): Float64Array {
  const hw = mask.length;
  return Float64Array.from({ length: x.length }, (_, i) => x[i]! * mask[i % hw]!);
}

export function dot64(u: ArrayLike<number>, v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < u.length; i++) s += u[i]! * v[i]!;
  return s;
}

export function norm64(u: ArrayLike<number>): number {
  return Math.sqrt(dot64(u, u));
}
