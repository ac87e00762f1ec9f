// CPU references for whole-tensor reductions (f64 accumulation).

export function sumRef(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]!;
  return s;
}

export function sumAbsRef(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.abs(x[i]!);
  return s;
}

/** sqrt(sum x^2) with a scale so that f64 itself cannot overflow for huge inputs. */
export function l2NormRef(x: ArrayLike<number>): number {
  const m = maxAbsRef(x);
  if (m === 0) return 0;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i]! / m) ** 2;
  return m * Math.sqrt(s);
}

export function maxAbsRef(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
  return m;
}

export function nonFiniteRef(x: ArrayLike<number>): number {
  let c = 0;
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) c++;
  return c;
}
