// The browser bundle of the public entry is self-contained: no bare or node: imports remain, and the
// Node WebGPU binding is only reachable through the computed-name import used in Node.
import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// @ts-expect-error plain ESM script without types
import { bundle } from '../scripts/build.mjs';

describe('browser bundle', () => {
  it('has no runtime dependency', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'silo-bundle-'));
    try {
      const out = await bundle('src/index.ts', join(dir, 'silo.js'), 'browser');
      const code = readFileSync(out, 'utf8');
      const imports = [...code.matchAll(/\bimport\s*(?:[\w{}*\s,]+from\s*)?["']([^"']+)["']/g)].map((m) => m[1]);
      expect(imports).toEqual([]);
      expect(code).not.toMatch(/["']node:/);
      expect(code).toMatch(/enable f16|alias ST/); // the WGSL sources are inlined as text
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
