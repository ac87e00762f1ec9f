// `silo check` in-process: a golden case passes with exit 0 and one line per tensor; a case whose
// golden tensor was perturbed fails with exit 1 naming the tensor; unknown folders are clear errors.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { parseSafetensors, serializeSafetensors } from '../src/formats/safetensors.js';
import { goldenDir } from './helpers/golden.js';
import { PENDING_CASES } from '../src/check/registry.js';

function capture(): CliIO & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l) };
}

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-check-'));
  // unet_mini with eps perturbed by 1e-2 in one element (weights and config linked, not copied)
  const src = goldenDir('unet_mini');
  const bad = join(tmp, 'unet_perturbed');
  mkdirSync(bad);
  symlinkSync(join(src, 'config.json'), join(bad, 'config.json'));
  symlinkSync(join(src, 'diffusion_pytorch_model.safetensors'), join(bad, 'diffusion_pytorch_model.safetensors'));
  const manifest = JSON.parse(readFileSync(join(src, 'manifest.json'), 'utf8'));
  manifest.case = 'unet_variant_for_test'; // an unknown name: the kind must be detected from config.json
  writeFileSync(join(bad, 'manifest.json'), JSON.stringify(manifest));
  const golden = parseSafetensors(readFileSync(join(src, 'golden.safetensors')), 'golden');
  const entries: Record<string, { dtype: string; shape: number[]; data: ArrayBufferView }> = {};
  for (const n of golden.names()) {
    const info = golden.info(n);
    let data = golden.getBytes(n).slice();
    if (n === 'eps') {
      const f = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
      f[17] = f[17]! + 1e-2;
      data = new Uint8Array(f.buffer);
    }
    entries[n] = { dtype: info.dtype, shape: info.shape, data };
  }
  writeFileSync(join(bad, 'golden.safetensors'), serializeSafetensors(entries as Parameters<typeof serializeSafetensors>[0]));
  mkdirSync(join(tmp, 'not_a_case'));
  mkdirSync(join(tmp, 'mystery_case'));
  writeFileSync(join(tmp, 'mystery_case', 'manifest.json'), JSON.stringify({ case: 'mystery', files: {} }));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('silo check', () => {
  it('passes a golden case and prints every tensor', async () => {
    const io = capture();
    const code = await main(['check', goldenDir('clip_text_mini')], io);
    expect(io.errors).toEqual([]);
    expect(code).toBe(0);
    expect(io.lines.some((l) => /ok\s+last_hidden_state\s+max abs/.test(l))).toBe(true);
    expect(io.lines.at(-1)).toBe('all 1 case(s) pass');
  });

  it('fails a perturbed case (kind detected from config.json), naming the tensor', async () => {
    const io = capture();
    const code = await main(['check', join(tmp, 'unet_perturbed')], io);
    expect(code).toBe(1);
    expect(io.lines.some((l) => /\(unet, f32\)/.test(l))).toBe(true);
    expect(io.lines.some((l) => /FAIL\s+eps/.test(l))).toBe(true);
    expect(io.lines.some((l) => /ok\s+readout_hidden_00/.test(l))).toBe(true);
    expect(io.lines.at(-1)).toBe('1 of 1 case(s) FAILED');
  });

  it('reports folders it cannot run', async () => {
    const io = capture();
    const code = await main(['check', join(tmp, 'not_a_case'), join(tmp, 'mystery_case')], io);
    expect(code).toBe(1);
    expect(io.errors.join('\n')).toMatch(/not_a_case: not a golden case folder \(no manifest\.json\)/);
    expect(io.errors.join('\n')).toMatch(/mystery_case: cannot tell which module this case tests \(use --kind .*silo_step/);
    // Every case in ../shared/golden has a runner (silo_cnn_train since issue #13).
    expect(Object.keys(PENDING_CASES)).toEqual([]);
  });

  it('rejects bad arguments with usage', async () => {
    const io = capture();
    expect(await main(['check'], io)).toBe(2);
    expect(await main(['check', 'x', '--dtype', 'f64'], io)).toBe(2);
    expect(io.errors.join('\n')).toMatch(/usage: silo check/);
  });
});
