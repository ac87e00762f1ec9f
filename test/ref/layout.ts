// CPU references for channel concat/slice on [B, C, ...inner] tensors.

export function concatRef(parts: Array<{ data: ArrayLike<number>; c: number }>, batch: number, inner: number): Float32Array {
  const total = parts.reduce((s, p) => s + p.c, 0);
  const out = new Float32Array(batch * total * inner);
  for (let b = 0; b < batch; b++) {
    let off = 0;
    for (const p of parts) {
      for (let i = 0; i < p.c * inner; i++) out[(b * total + off) * inner + i] = p.data[b * p.c * inner + i]!;
      off += p.c;
    }
  }
  return out;
}

export function sliceRef(x: ArrayLike<number>, batch: number, c: number, inner: number, start: number, count: number): Float32Array {
  const out = new Float32Array(batch * count * inner);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < count * inner; i++) out[b * count * inner + i] = x[(b * c + start) * inner + i]!;
  }
  return out;
}
