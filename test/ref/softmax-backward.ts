// CPU references (f64) for the softmax vector-Jacobian product, plus an f64 forward for the adjoint check.

/** f64 softmax over rows of `cols` of scale * x. */
export function softmaxForward64(x: ArrayLike<number>, cols: number, scale = 1): Float64Array {
  const out = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += cols) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, scale * x[base + j]!);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(scale * x[base + j]! - m);
    for (let j = 0; j < cols; j++) out[base + j] = Math.exp(scale * x[base + j]! - m) / s;
  }
  return out;
}

/** dx from the softmax output y: the Jacobian scale * (diag(y) - y y^T) applied to g, row by row. */
export function softmaxBackwardRef(y: ArrayLike<number>, g: ArrayLike<number>, cols: number, scale = 1): Float64Array {
  const dx = new Float64Array(y.length);
  for (let base = 0; base < y.length; base += cols) {
    let d = 0;
    for (let j = 0; j < cols; j++) d += g[base + j]! * y[base + j]!;
    for (let j = 0; j < cols; j++) dx[base + j] = scale * y[base + j]! * (g[base + j]! - d);
  }
  return dx;
}
