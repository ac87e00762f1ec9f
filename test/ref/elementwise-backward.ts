// CPU references (f64) for the elementwise vector-Jacobian products: analytic derivatives written from
// the math, independent of the WGSL forms, plus f64 forwards for the finite-difference checks.

import { ACT_REF, erfc, sigmoid } from './math.js';

const SQRT_2PI = Math.sqrt(2 * Math.PI);
const K_TANH = Math.sqrt(2 / Math.PI);

/** d act(x) / dx in f64. */
export const ACT_GRAD_REF: Record<string, (x: number, alpha: number) => number> = {
  none: () => 1,
  relu: (x) => (x > 0 ? 1 : 0),
  silu: (x) => sigmoid(x) * (1 + x * (1 - sigmoid(x))),
  gelu: (x) => 0.5 * erfc(-x / Math.SQRT2) + (x * Math.exp(-0.5 * x * x)) / SQRT_2PI,
  gelu_tanh: (x) => {
    const u = K_TANH * (x + 0.044715 * x ** 3);
    const t = Math.tanh(u);
    const sech2 = Math.abs(u) > 300 ? 0 : 1 / Math.cosh(u) ** 2;
    return 0.5 * (1 + t) + 0.5 * x * sech2 * K_TANH * (1 + 3 * 0.044715 * x * x);
  },
  quick_gelu: (x) => sigmoid(1.702 * x) + 1.702 * x * sigmoid(1.702 * x) * sigmoid(-1.702 * x),
  leaky_relu: (x, a) => (x > 0 ? 1 : a),
  sigmoid: (x) => sigmoid(x) * sigmoid(-x),
};

export interface UnaryRefOptions {
  act?: string;
  scale?: number;
  shift?: number;
  alpha?: number;
  min?: number;
  max?: number;
}

/** f64 forward: clamp(act(scale x + shift)). */
export function unaryForward64(x: ArrayLike<number>, o: UnaryRefOptions = {}): Float64Array {
  const f = ACT_REF[o.act ?? 'none']!;
  return Float64Array.from(x, (v) => Math.min(Math.max(f(v * (o.scale ?? 1) + (o.shift ?? 0), o.alpha ?? 0.01), o.min ?? -Infinity), o.max ?? Infinity));
}

export function unaryBackwardRef(x: ArrayLike<number>, g: ArrayLike<number>, o: UnaryRefOptions = {}): Float64Array {
  const f = ACT_REF[o.act ?? 'none']!;
  const df = ACT_GRAD_REF[o.act ?? 'none']!;
  const s = o.scale ?? 1;
  return Float64Array.from(x, (v, i) => {
    const z = v * s + (o.shift ?? 0);
    const y = f(z, o.alpha ?? 0.01);
    const inside = y >= (o.min ?? -Infinity) && y <= (o.max ?? Infinity);
    return inside ? g[i]! * df(z, o.alpha ?? 0.01) * s : 0;
  });
}

function padShape(shape: readonly number[], rank: number): number[] {
  return [...new Array<number>(rank - shape.length).fill(1), ...shape];
}

/** Calls fn(outIndex, aIndex, bIndex) for every element of the broadcast of shapes a and b. */
function forBroadcast(aShape: readonly number[], bShape: readonly number[], fn: (io: number, ia: number, ib: number) => void): number[] {
  const rank = Math.max(aShape.length, bShape.length);
  const A = padShape(aShape, rank);
  const B = padShape(bShape, rank);
  const out = A.map((d, i) => Math.max(d, B[i]!));
  const n = out.reduce((p, d) => p * d, 1);
  for (let io = 0; io < n; io++) {
    let rem = io;
    let ia = 0;
    let ib = 0;
    let sa = 1;
    let sb = 1;
    for (let d = rank - 1; d >= 0; d--) {
      const c = rem % out[d]!;
      rem = Math.floor(rem / out[d]!);
      if (A[d] !== 1) ia += c * sa;
      if (B[d] !== 1) ib += c * sb;
      sa *= A[d]!;
      sb *= B[d]!;
    }
    fn(io, ia, ib);
  }
  return out;
}

export type BinaryKind = 'scale_add' | 'mul';

/** f64 forward of ca * a + cb * b or a * b with broadcasting. */
export function binaryForward64(kind: BinaryKind, a: ArrayLike<number>, aShape: number[], b: ArrayLike<number>, bShape: number[], ca = 1, cb = 1): Float64Array {
  const vals: number[] = [];
  forBroadcast(aShape, bShape, (io, ia, ib) => {
    vals[io] = kind === 'mul' ? a[ia]! * b[ib]! : ca * a[ia]! + cb * b[ib]!;
  });
  return Float64Array.from(vals);
}

/** VJP of binaryForward64: gradients summed over the dims each operand was broadcast along. */
export function binaryBackwardRef(
  kind: BinaryKind,
  a: ArrayLike<number>,
  aShape: number[],
  b: ArrayLike<number>,
  bShape: number[],
  g: ArrayLike<number>,
  ca = 1,
  cb = 1,
): { gradA: Float64Array; gradB: Float64Array } {
  const gradA = new Float64Array(a.length);
  const gradB = new Float64Array(b.length);
  forBroadcast(aShape, bShape, (io, ia, ib) => {
    gradA[ia] += kind === 'mul' ? g[io]! * b[ib]! : ca * g[io]!;
    gradB[ib] += kind === 'mul' ? g[io]! * a[ia]! : cb * g[io]!;
  });
  return { gradA, gradB };
}

export function gegluForward64(x: ArrayLike<number>, rows: number, d: number): Float64Array {
  const out = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < d; c++) out[r * d + c] = x[r * 2 * d + c]! * ACT_REF['gelu']!(x[r * 2 * d + d + c]!, 0);
  }
  return out;
}

export function gegluBackwardRef(x: ArrayLike<number>, g: ArrayLike<number>, rows: number, d: number): Float64Array {
  const out = new Float64Array(rows * 2 * d);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < d; c++) {
      const h = x[r * 2 * d + c]!;
      const q = x[r * 2 * d + d + c]!;
      const gv = g[r * d + c]!;
      out[r * 2 * d + c] = gv * ACT_REF['gelu']!(q, 0);
      out[r * 2 * d + d + c] = gv * h * ACT_GRAD_REF['gelu']!(q, 0);
    }
  }
  return out;
}

export function dot(u: ArrayLike<number>, v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < u.length; i++) s += u[i]! * v[i]!;
  return s;
}

/**
 * Central-difference directional derivative <v, (f(x + h w) - f(x - h w)) / 2h> of an f64 forward,
 * for the adjoint check <v, J w> = <J^T v, w>.
 */
export function fdDirectional(f: (x: Float64Array) => ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, v: ArrayLike<number>, h: number): number {
  const xp = Float64Array.from(x, (e, i) => e + h * w[i]!);
  const xm = Float64Array.from(x, (e, i) => e - h * w[i]!);
  const fp = f(xp);
  const fm = f(xm);
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * (fp[i]! - fm[i]!);
  return s / (2 * h);
}
