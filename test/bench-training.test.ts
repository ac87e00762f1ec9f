// The training benchmark (bench/training.ts): its flags, and one tiny step per width that runs the
// trainer's path (training pass, loss, gradients, Adam) and reports it.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { parseTrainingArgs, runTrainingBench } from '../bench/training.js';
import { getEngine } from './helpers/engine.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('training benchmark', () => {
  it('defaults to the TAEF2 proof shapes at widths 1, 2 and 4; reads its flags; names a bad one', () => {
    expect(parseTrainingArgs(['training'])).toEqual({ widths: [1, 2, 4], batch: 16, latent: 16, channels: 32, steps: 2, profile: false, recompute: false });
    expect(parseTrainingArgs(['training', '--width', '6', '--batch', '4', '--latent', '8', '--channels', '4', '--steps', '3', '--profile', '--recompute'])).toEqual({
      widths: [6], batch: 4, latent: 8, channels: 4, steps: 3, profile: true, recompute: true,
    });
    expect(parseTrainingArgs(['training', '--quick']).steps).toBe(1);
    expect(() => parseTrainingArgs(['training', '--width', '0'])).toThrow(/--width must be an integer in \[1, 16\], got "0"/);
    expect(() => parseTrainingArgs(['training', '--batch'])).toThrow(/--batch needs a value/);
  });

  it('times a step of a tiny operator at two widths (and the recomputing baseline): parameters grow with the width', async () => {
    const one = await runTrainingBench(engine, { args: ['--width', '1', '--batch', '2', '--latent', '4', '--channels', '3', '--steps', '1'] });
    const two = await runTrainingBench(engine, { args: ['--width', '2', '--batch', '2', '--latent', '4', '--channels', '3', '--steps', '1', '--profile', '--recompute'] });
    const [r1, r2] = [one.results[0]!, two.results[0]!];
    expect(r1.width).toBe(1);
    expect(r2.parameters).toBeGreaterThan(2 * r1.parameters);
    for (const r of [r1, r2]) {
      expect(r.msPerStep).toBeGreaterThan(0);
      expect(r.dispatches).toBeGreaterThan(50); // forward, backward and 42 Adam updates in one program
    }
    // The baseline re-runs the forward inside the VJP: more dispatches for the same step.
    expect(r2.recompute!.dispatches).toBeGreaterThan(r2.dispatches);
    expect(r1.recompute).toBeUndefined();
    if (engine.hasTimestamps) expect(r2.profile!.map((k) => k.kind)).toEqual(expect.arrayContaining(['adam', 'conv2d_backward/weight', 'layer_norm_backward']));
  });
});
