// Comparison of an output tensor with its golden reference under a case's tolerance rule:
// element-wise |x - ref| <= atol + rtol |ref| (atol may be relative to max|ref|), or, for gradients
// through many ReLUs, a relative L2 bound with a bounded fraction of elements over atol.

export interface Tolerance {
  atol?: number;
  rtol?: number;
  /** atol = this * max|ref| (gradients of arbitrary scale). */
  atolRelativeToMaxAbs?: number;
  /** ||x - ref|| / ||ref|| bound; with it, maxFractionOverAtol of the elements may exceed atol. */
  relL2?: number;
  maxFractionOverAtol?: number;
  /** Integers that must match exactly (token ids). */
  exact?: boolean;
}

export interface CheckItem {
  name: string;
  actual: ArrayLike<number>;
  expected: ArrayLike<number>;
  tol: Tolerance;
}

export interface CheckResult {
  name: string;
  n: number;
  maxAbs: number;
  /** max |x - ref| / max |ref| */
  maxRel: number;
  relL2: number;
  pass: boolean;
  detail: string;
  rule: string;
}

export function describeTolerance(t: Tolerance): string {
  if (t.exact) return 'exact';
  const parts: string[] = [];
  if (t.atolRelativeToMaxAbs !== undefined) parts.push(`atol ${t.atolRelativeToMaxAbs}*max|ref|`);
  else parts.push(`atol ${t.atol ?? 0}`);
  if (t.rtol) parts.push(`rtol ${t.rtol}`);
  if (t.relL2 !== undefined) parts.push(`relL2 ${t.relL2}, <= ${(100 * (t.maxFractionOverAtol ?? 0)).toFixed(1)}% over atol`);
  return parts.join(', ');
}

export function compare(item: CheckItem): CheckResult {
  const { actual: x, expected: r, tol } = item;
  const rule = describeTolerance(tol);
  const base = { name: item.name, n: r.length, rule };
  if (x.length !== r.length) {
    return { ...base, maxAbs: NaN, maxRel: NaN, relL2: NaN, pass: false, detail: `length ${x.length}, expected ${r.length}` };
  }
  let maxRef = 0;
  for (let i = 0; i < r.length; i++) maxRef = Math.max(maxRef, Math.abs(r[i]!));
  const atol = tol.atolRelativeToMaxAbs !== undefined ? tol.atolRelativeToMaxAbs * maxRef : (tol.atol ?? 0);
  const rtol = tol.rtol ?? 0;
  let maxAbs = 0;
  let over = 0;
  let worst = -1;
  let worstExcess = -Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < r.length; i++) {
    const a = x[i]!;
    const e = r[i]!;
    const d = Math.abs(a - e);
    if (Number.isNaN(d)) {
      return { ...base, maxAbs: NaN, maxRel: NaN, relL2: NaN, pass: false, detail: `element ${i} is ${a} (expected ${e})` };
    }
    maxAbs = Math.max(maxAbs, d);
    num += d * d;
    den += e * e;
    const limit = tol.exact ? 0 : atol + rtol * Math.abs(e);
    if (d > limit) over++;
    if (d - limit > worstExcess) {
      worstExcess = d - limit;
      worst = i;
    }
  }
  const relL2 = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
  const maxRel = maxRef > 0 ? maxAbs / maxRef : maxAbs;
  let pass: boolean;
  if (tol.relL2 !== undefined) pass = relL2 <= tol.relL2 && over <= (tol.maxFractionOverAtol ?? 0) * r.length;
  else pass = over === 0;
  const detail = pass
    ? ''
    : `${over} of ${r.length} elements out of tolerance; worst at ${worst}: ${x[worst]} vs ${r[worst]}`;
  return { ...base, maxAbs, maxRel, relL2, pass, detail };
}
