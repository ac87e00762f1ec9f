// The solvers benchmark's helper logic (bench/solvers.ts): its flag parsing, the --filter rule, the
// ratios to SILO-CNN, the median, and the weight source that adds CPU constants to GPU-generated weights
// (SILO's readout operator reads its mixing weights on the CPU).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { WeightLoader } from '../src/models/weights.js';
import { AggregationNetwork } from '../src/models/silo/readout.js';
import { aggregationConfig } from '../src/models/silo/config.js';
import { BenchArgsError, BenchWeightSource, median, parseSolverArgs, selected, withRatios, type SolverResult } from '../bench/solvers.js';
import { getEngine } from './helpers/engine.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('parseSolverArgs', () => {
  it('defaults: both modes, sr4, 32x32 latent, t 500, one warm-up, steps left to the adapter', () => {
    expect(parseSolverArgs(['solvers'])).toEqual({ steps: undefined, warmup: 1, tiny: false, modes: ['reuse', 'recompute'], task: 'sr4', latent: 32, t: 500, profile: false, replay: undefined, dtype: 'f32' });
  });

  it('reads its flags and ignores main.ts flags; --quick means one timed step unless --steps says otherwise', () => {
    const a = parseSolverArgs(['solvers', '--filter', 'psld', '--tiny', '--steps', '3', '--warmup', '0', '--mode', 'recompute', '--task', 'gaussian_blur', '--latent', '16', '--t', '999']);
    expect(a).toEqual({ steps: 3, warmup: 0, tiny: true, modes: ['recompute'], task: 'gaussian_blur', latent: 16, t: 999, profile: false, replay: undefined, dtype: 'f32' });
    expect(parseSolverArgs(['solvers', '--dtype', 'f16']).dtype).toBe('f16');
    expect(parseSolverArgs(['solvers', '--dtype', 'f16', '--dtype', 'f32']).dtype).toBe('f32'); // the later flag wins
    expect(parseSolverArgs(['solvers', '--replay', '2']).replay).toBe(2);
    expect(parseSolverArgs(['solvers', '--replay', '0']).replay).toBe(0);
    expect(parseSolverArgs(['solvers', '--quick']).steps).toBe(1);
    expect(parseSolverArgs(['solvers', '--profile']).profile).toBe(true);
    expect(parseSolverArgs(['solvers', '--quick', '--steps', '2']).steps).toBe(2);
  });

  it('rejects bad values with the flag named', () => {
    expect(() => parseSolverArgs(['--steps', '0'])).toThrow(/--steps must be an integer in \[1, Infinity\], got "0"/);
    expect(() => parseSolverArgs(['--steps', '1.5'])).toThrow(BenchArgsError);
    expect(() => parseSolverArgs(['--steps'])).toThrow(/--steps needs a value/);
    expect(() => parseSolverArgs(['--steps', '--tiny'])).toThrow(/--steps needs a value/);
    expect(() => parseSolverArgs(['--mode', 'fast'])).toThrow(/--mode must be reuse, recompute or both, got "fast"/);
    expect(() => parseSolverArgs(['--task', 'jpeg10'])).toThrow(/--task must be one of sr4, gaussian_blur/);
    expect(() => parseSolverArgs(['--latent', '20'])).toThrow(/multiple of 8/);
    expect(() => parseSolverArgs(['--t', '1000'])).toThrow(/--t must be an integer in \[0, 999\]/);
    expect(() => parseSolverArgs(['--replay', '-1'])).toThrow(/--replay must be an integer in \[0, Infinity\]/);
    expect(() => parseSolverArgs(['--dtype', 'bf16'])).toThrow(/--dtype must be f32 or f16 \(the weights' storage\), got "bf16"/);
  });
});

describe('selected', () => {
  it('matches the method name or "method mode"; no filter selects everything', () => {
    expect(selected('psld', 'reuse')).toBe(true);
    expect(selected('silo-cnn', 'reuse', 'silo')).toBe(true);
    expect(selected('silo-rg', 'recompute', 'silo-rg recompute')).toBe(true);
    expect(selected('silo-rg', 'reuse', 'silo-rg recompute')).toBe(false);
    expect(selected('latent-dps', 'reuse', 'psld')).toBe(false);
  });
});

describe('withRatios', () => {
  const ok = (method: SolverResult['method'], mode: SolverResult['mode'], ms: number, peak: number): SolverResult => ({ method, mode, steps: [{ ms }], msPerStep: ms, stepPeakBytes: peak });

  it('divides by silo-cnn of the same mode', () => {
    const rows = withRatios([ok('silo-cnn', 'reuse', 100, 50), ok('psld', 'reuse', 450, 200), ok('silo-cnn', 'recompute', 200, 25), ok('psld', 'recompute', 500, 100)]);
    expect(rows.map((r) => [r.msRatio, r.memRatio])).toEqual([
      [1, 1],
      [4.5, 4],
      [1, 1],
      [2.5, 4],
    ]);
  });

  it('leaves ratios undefined without a successful baseline or for a failed method', () => {
    const failedBase: SolverResult = { method: 'silo-cnn', mode: 'reuse', steps: [], error: 'boom' };
    const failed: SolverResult = { method: 'psld', mode: 'recompute', steps: [], error: 'VJP of attention with head dim 512' };
    const rows = withRatios([failedBase, ok('silo-rg', 'reuse', 300, 10), ok('silo-cnn', 'recompute', 100, 10), failed]);
    expect(rows[1]!.msRatio).toBeUndefined();
    expect(rows[1]!.memRatio).toBeUndefined();
    expect(rows[3]!.msRatio).toBeUndefined();
    expect(rows[3]!.error).toMatch(/head dim 512/);
  });
});

describe('median', () => {
  it('odd, even and single counts, unsorted input left alone', () => {
    const xs = [5, 1, 3];
    expect(median(xs)).toBe(3);
    expect(xs).toEqual([5, 1, 3]);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });
});

describe('BenchWeightSource', () => {
  it('answers CPU constants (a copy) next to GPU-generated weights, so a readout operator loads strictly', async () => {
    const cfg = aggregationConfig({
      projection_dim: 64,
      feature_dims: [8, 16],
      num_norm_groups: 8,
      use_output_head: true,
      output_head_channels: 4,
      output_head_act: false,
      sigma_condition: true,
      latent_size: 8,
      sigma_emb_dim: 12,
    });
    const logits = Float32Array.from([0, Math.log(3)]);
    const src = new BenchWeightSource(5, 'test weights').constant('mixing_weights', logits);
    expect(src.has('mixing_weights')).toBe(true);
    expect(src.info('mixing_weights').shape).toEqual([2]);
    const copy = src.getF32('mixing_weights');
    copy[0] = 42;
    expect(src.getF32('mixing_weights')[0]).toBe(0);
    expect(() => src.getF32('never_declared')).toThrow(/not declared|GPU only/);
    // strict loading: every declared name (mixing_weights included) is claimed by the module
    const loaded = WeightLoader.load(engine, src, {}, (w) => new AggregationNetwork(w, cfg));
    await src.generated();
    // softmax([0, ln 3]) = [1/4, 3/4]
    expect(Array.from(loaded.model.mixing)).toEqual([expect.closeTo(0.25, 6), expect.closeTo(0.75, 6)]);
    const lnWeight = await loaded.model.sigmaEmbNorm!.weight.read();
    expect(lnWeight.length).toBe(64);
    expect(lnWeight.every(Number.isFinite)).toBe(true);
    loaded.dispose();
  });
});
