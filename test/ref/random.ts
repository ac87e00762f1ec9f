// Independent Philox4x32-10 reference with BigInt arithmetic (no 16-bit-half tricks), used to check
// the Math.imul implementation in src/engine/random.ts on arbitrary counters and keys.

const MASK = 0xffffffffn;

export function philoxRef(counter: readonly number[], key: readonly number[], rounds = 10): number[] {
  let [c0, c1, c2, c3] = counter.map(BigInt) as [bigint, bigint, bigint, bigint];
  let [k0, k1] = key.map(BigInt) as [bigint, bigint];
  for (let r = 0; r < rounds; r++) {
    const p0 = 0xd2511f53n * c0;
    const p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [(p1 >> 32n) ^ c1 ^ k0, p1 & MASK, (p0 >> 32n) ^ c3 ^ k1, p0 & MASK];
    k0 = (k0 + 0x9e3779b9n) & MASK;
    k1 = (k1 + 0xbb67ae85n) & MASK;
  }
  return [c0, c1, c2, c3].map(Number);
}

/** Standard normal CDF in f64 (for goodness-of-fit tests). */
export function normalCdf(x: number, erf: (v: number) => number): number {
  return 0.5 * (1 + erf(x / Math.SQRT2));
}
