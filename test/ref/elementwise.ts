// CPU references for elementwise ops (f64 arithmetic).

import { ACT_REF } from './math.js';

export function unaryRef(x: Float32Array, act: string, opts: { scale?: number; shift?: number; alpha?: number; min?: number; max?: number } = {}): Float32Array {
  const f = ACT_REF[act]!;
  return x.map((v) => {
    const y = f(v * (opts.scale ?? 1) + (opts.shift ?? 0), opts.alpha ?? 0.01);
    return Math.min(Math.max(y, opts.min ?? -Infinity), opts.max ?? Infinity);
  });
}

function strides(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

export function broadcastRef(
  a: Float32Array,
  aShape: number[],
  b: Float32Array,
  bShape: number[],
  f: (x: number, y: number) => number,
): { out: Float32Array; shape: number[] } {
  const rank = Math.max(aShape.length, bShape.length);
  const A = [...new Array(rank - aShape.length).fill(1), ...aShape];
  const B = [...new Array(rank - bShape.length).fill(1), ...bShape];
  const shape = A.map((d, i) => Math.max(d, B[i]!));
  const sa = strides(A);
  const sb = strides(B);
  const so = strides(shape);
  const n = shape.reduce((p, d) => p * d, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < rank; d++) {
      const c = Math.floor(i / so[d]!) % shape[d]!;
      if (A[d] !== 1) ia += c * sa[d]!;
      if (B[d] !== 1) ib += c * sb[d]!;
    }
    out[i] = f(a[ia]!, b[ib]!);
  }
  return { out, shape };
}

export function gegluRef(x: Float32Array, rows: number, d: number): Float32Array {
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < d; c++) out[r * d + c] = x[r * 2 * d + c]! * ACT_REF['gelu']!(x[r * 2 * d + d + c]!, 0);
  }
  return out;
}
