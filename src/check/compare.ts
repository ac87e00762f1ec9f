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
  /**
   * The share of elements that may exceed atol: with relL2, that fraction of n; without it (optimizer
   * steps), ceil(fraction * n) elements and at least one.
   */
  maxFractionOverAtol?: number;
  /** Every element within this, whatever the fraction rule allows. */
  maxAbs?: number;
  /** A parameter update: ||(x - base) - (ref - base)|| / ||ref - base|| <= bound. */
  update?: { base: ArrayLike<number>; relL2: number };
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
  else if (t.maxFractionOverAtol !== undefined) parts.push(`all but ${(100 * t.maxFractionOverAtol).toFixed(1)}% within atol`);
  if (t.maxAbs !== undefined) parts.push(`every element within ${t.maxAbs}`);
  if (t.update) parts.push(`update relL2 ${t.update.relL2}`);
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
  else if (tol.maxFractionOverAtol !== undefined) pass = over <= Math.max(1, Math.ceil(tol.maxFractionOverAtol * r.length));
  else pass = over === 0;
  const problems: string[] = [];
  if (!pass) problems.push(`${over} of ${r.length} elements out of tolerance; worst at ${worst}: ${x[worst]} vs ${r[worst]}`);
  if (tol.maxAbs !== undefined && maxAbs > tol.maxAbs) {
    pass = false;
    problems.push(`an element is ${maxAbs} off, over the bound ${tol.maxAbs}`);
  }
  if (tol.update) {
    const b = tol.update.base;
    let un = 0;
    let ud = 0;
    for (let i = 0; i < r.length; i++) {
      un += (x[i]! - r[i]!) ** 2;
      ud += (r[i]! - b[i]!) ** 2;
    }
    const rel = ud > 0 ? Math.sqrt(un / ud) : Math.sqrt(un);
    if (b.length !== r.length || !(rel <= tol.update.relL2)) {
      pass = false;
      problems.push(`the update is ${rel.toPrecision(3)} off in relative L2 (bound ${tol.update.relL2})`);
    }
  }
  return { ...base, maxAbs, maxRel, relL2, pass, detail: problems.join('; ') };
}
