import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { Sha256, sha256Hex } from '../src/hub/sha256.js';
import { randomBytes } from './helpers/random-bytes.js';

const ref = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Deterministic pseudo-random bytes (xorshift), so a failure reproduces. */

describe('Sha256', () => {
  it('matches the FIPS 180-2 "abc" vector', () => {
    expect(sha256Hex(new TextEncoder().encode('abc'))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it.each([0, 1, 55, 56, 63, 64, 65, 119, 120, 1000003])('matches node:crypto on %i bytes', (n) => {
    const b = randomBytes(n, n + 7);
    expect(sha256Hex(b)).toBe(ref(b));
  });

  it('gives the same digest for 1-byte pieces and random piece sizes', () => {
    const b = randomBytes(5000, 3);
    const one = new Sha256();
    for (let i = 0; i < b.length; i++) one.update(b.subarray(i, i + 1));
    expect(one.hex()).toBe(ref(b));
    const big = randomBytes(300_001, 9);
    for (let trial = 0; trial < 5; trial++) {
      const h = new Sha256();
      let pos = 0;
      let r = trial * 7919 + 1;
      while (pos < big.length) {
        r = (r * 1103515245 + 12345) >>> 0;
        const len = r % 200; // includes empty updates
        h.update(big.subarray(pos, pos + len));
        pos += len;
      }
      expect(h.hex()).toBe(ref(big));
    }
  });

  it('hex() is stable and update() after it throws', () => {
    const h = new Sha256().update(randomBytes(10));
    expect(h.hex()).toBe(h.hex());
    expect(() => h.update(new Uint8Array(1))).toThrow(/after hex/);
  });

  it('hashes faster than 100 MB/s', () => {
    const b = randomBytes(32 << 20, 5);
    sha256Hex(b.subarray(0, 1 << 20)); // warm up the JIT
    // Best of three, so other work on a shared machine does not decide the result.
    let best = Infinity;
    let got = '';
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      got = sha256Hex(b);
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    const mbs = b.length / 1e6 / best;
    console.log(`[sha256] ${mbs.toFixed(0)} MB/s`);
    expect(got).toBe(ref(b));
    expect(mbs).toBeGreaterThan(100);
  });
});
