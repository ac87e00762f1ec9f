// CPU reference for softmax over the last dimension (f64, max-subtracted).

export function softmaxRef(x: ArrayLike<number>, cols: number, scale = 1): Float32Array {
  const out = new Float32Array(x.length);
  for (let base = 0; base < x.length; base += cols) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, scale * x[base + j]!);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(scale * x[base + j]! - m);
    for (let j = 0; j < cols; j++) out[base + j] = Math.exp(scale * x[base + j]! - m) / s;
  }
  return out;
}
