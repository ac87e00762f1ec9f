// Ctrl-C during `silo train` (the bundled CLI as a real process, TAEF2 on real photos): the first SIGINT
// stops after the current step, writes the checkpoint and the operator, and exits 130; the checkpoint
// holds the step the run reached.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// @ts-expect-error plain ESM script without types
import { bundle } from '../scripts/build.mjs';
import { parseSafetensors } from '../src/formats/safetensors.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

const IMAGES = new URL('../../shared/assets/images', import.meta.url).pathname;
let tmp: string;
let cli: string;
const ROOT = new URL('..', import.meta.url).pathname;
beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-train-int-'));
  // Inside the checkout, so the bundle resolves the `webgpu` package from node_modules.
  mkdirSync(join(ROOT, 'test-output'), { recursive: true });
  cli = await bundle('src/cli/silo.ts', join(ROOT, 'test-output', 'silo-train-interrupt.mjs'), 'node');
}, 120_000);
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
  rmSync(cli, { force: true });
});

describe('silo train and Ctrl-C', () => {
  it('the first SIGINT ends the run after the current step with a checkpoint and the operator; exit 130', async () => {
    const out = join(tmp, 'run');
    const args = [
      cli, 'train', '--task', 'gaussian_blur', '--encoder', `${GOLDEN_ROOT}/taef2/taef2_encoder.safetensors`,
      '--data', `${IMAGES}/faces256`, '--size', '32', '--batch', '2', '--steps', '100000', '--checkpoint-every', '0', '--out', out,
    ];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    let sent = false;
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      // Non-TTY progress prints step 1 first: interrupt once training is under way.
      if (!sent && /step 1\/100000/.test(stderr)) {
        sent = true;
        proc.kill('SIGINT');
      }
    });
    // A run that ignores the interrupt must fail the test, not hang it.
    const guard = setTimeout(() => proc.kill('SIGKILL'), 240_000);
    const code = await new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c)));
    clearTimeout(guard);
    expect(sent, `no step was reported: ${stderr}`).toBe(true);
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/stopping after the current step/);
    const m = /stopped at step (\d+)/.exec(stdout);
    expect(m, stdout).not.toBeNull();
    const step = Number(m![1]);
    expect(step).toBeGreaterThanOrEqual(1);
    expect(step).toBeLessThan(100000);
    const ckpt = parseSafetensors(readFileSync(join(out, 'checkpoint.safetensors')), 'checkpoint');
    expect(ckpt.metadata?.['step']).toBe(String(step));
    expect(parseSafetensors(readFileSync(join(out, 'operator.safetensors')), 'operator').metadata?.['step']).toBe(String(step));
    expect(readFileSync(join(out, 'loss.csv'), 'utf8').trim().split('\n').length).toBe(step + 1);
  }, 300_000);
});
