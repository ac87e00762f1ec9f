// DDPM and DDIM schedulers: the `schedulers` golden case through its CaseRunner (the same code as
// `silo check ../shared/golden/schedulers`), config resolution and rejection, timestep spacings, the
// errors diffusers raises, and the GPU step against an f64 CPU reference on awkward shapes with the
// options the golden case does not cover (clip_sample, sample / v prediction, eta, clipped eps).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { runProgram } from '../../src/engine/recorder.js';
import { ArgumentError } from '../../src/engine/errors.js';
import { runSchedulers } from '../../src/check/schedulers.js';
import { detectKind } from '../../src/check/registry.js';
import {
  DDIMScheduler,
  DDPMScheduler,
  parseSchedulerConfig,
  SchedulerConfigError,
  inferenceTimesteps,
  type StepOptions,
  type Scheduler,
} from '../../src/solvers/schedulers/index.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { expectAllPass, goldenFiles, goldenManifest } from '../helpers/golden.js';
import { ddimStepRef, ddpmStepRef, type StepRefOptions } from '../ref/schedulers.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const manifest = goldenManifest('schedulers');
const SD15 = manifest['scheduler_config_input'] as Record<string, unknown>;

describe('schedulers golden case', () => {
  it('is recognised by silo check', async () => {
    expect(await detectKind(goldenFiles('schedulers'), manifest)).toBe('schedulers');
    expect(await detectKind(goldenFiles('schedulers'), { ...manifest, case: 'renamed' })).toBe('schedulers');
  });

  it('betas/alphas/alphas_cumprod (rtol 1e-6; bit-exact), timesteps (exact), ddpm variances (rtol 1e-6), traces (atol 1e-5, rtol 1e-5)', async () => {
    const items = await runSchedulers(engine, goldenFiles('schedulers'), manifest, {});
    const names = items.map((i) => i.name);
    for (const n of [999, 1000, 500, 50, 20]) expect(names).toContain(`ddpm.timesteps.${n}`), expect(names).toContain(`ddim.timesteps.${n}`);
    for (const tr of ['ddpm999_first', 'ddpm999_last', 'ddpm50_full', 'ddim50_eta0', 'ddim50_eta1', 'ddim20_eta0']) {
      for (const q of ['t', 'prev_sample', 'pred_original_sample']) expect(names).toContain(`trace.${tr}.${q}`);
    }
    expectAllPass(items, 'schedulers');
  });
});

describe('scheduler config', () => {
  it("resolves SD-1.5's PNDM config as from_config does (unknown keys ignored)", () => {
    const ddpm = parseSchedulerConfig(SD15, 'ddpm');
    const ddim = parseSchedulerConfig(SD15, 'ddim');
    for (const [cfg, key] of [[ddpm, 'ddpm_config_resolved'], [ddim, 'ddim_config_resolved']] as const) {
      const r = manifest[key] as Record<string, unknown>;
      expect(cfg.numTrainTimesteps).toBe(r['num_train_timesteps']);
      expect(cfg.betaStart).toBe(r['beta_start']);
      expect(cfg.betaEnd).toBe(r['beta_end']);
      expect(cfg.betaSchedule).toBe(r['beta_schedule']);
      expect(cfg.stepsOffset).toBe(r['steps_offset']);
      expect(cfg.timestepSpacing).toBe(r['timestep_spacing']);
      expect(cfg.predictionType).toBe(r['prediction_type']);
      expect(cfg.clipSample).toBe(r['clip_sample']);
      expect(cfg.clipSampleRange).toBe(r['clip_sample_range']);
      expect(cfg.setAlphaToOne).toBe(r['set_alpha_to_one']);
    }
    expect(ddpm.varianceType).toBe('fixed_small');
  });

  it("uses diffusers' class defaults for missing keys", () => {
    const d = parseSchedulerConfig({}, 'ddim');
    expect(d).toMatchObject({ numTrainTimesteps: 1000, betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear', clipSample: true, setAlphaToOne: true, stepsOffset: 0 });
    expect(parseSchedulerConfig({}, 'ddpm').varianceType).toBe('fixed_small');
  });

  it('rejects what it does not implement, by name', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ thresholding: true }, /thresholding/],
      [{ rescale_betas_zero_snr: true }, /rescale_betas_zero_snr/],
      [{ variance_type: 'learned_range' }, /variance_type.*learned/],
      [{ beta_schedule: 'sigmoid' }, /beta_schedule/],
      [{ prediction_type: 'flow' }, /prediction_type/],
      [{ timestep_spacing: 'karras' }, /timestep_spacing/],
      [{ num_train_timesteps: 0 }, /num_train_timesteps/],
      [{ clip_sample: 'no' }, /clip_sample/],
      [{ trained_betas: [0.1, 'x'] }, /trained_betas/],
    ];
    for (const [cfg, re] of bad) expect(() => parseSchedulerConfig(cfg, 'ddpm')).toThrow(re);
    expect(() => new DDPMScheduler({ trained_betas: [0.1, 0.2], num_train_timesteps: 3 })).toThrow(SchedulerConfigError);
  });

  it('linear, cosine and trained betas', () => {
    const lin = new DDIMScheduler({ beta_schedule: 'linear', beta_start: 1e-4, beta_end: 0.02, num_train_timesteps: 37 });
    expect(lin.betas[0]).toBe(Math.fround(1e-4));
    expect(lin.betas[36]).toBe(Math.fround(0.02));
    // torch float32 linspace: within 1 ulp (~1e-9 at 0.02) of the exact line.
    lin.betas.forEach((b, i) => expect(Math.abs(b - (1e-4 + ((0.02 - 1e-4) * i) / 36))).toBeLessThan(4e-9));
    const cos = new DDPMScheduler({ beta_schedule: 'squaredcos_cap_v2', num_train_timesteps: 50 });
    const ab = (t: number) => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
    cos.betas.forEach((b, i) => expect(b).toBe(Math.fround(Math.min(1 - ab((i + 1) / 50) / ab(i / 50), 0.999))));
    expect(cos.betas[49]).toBe(Math.fround(0.999));
    const tr = new DDPMScheduler({ trained_betas: [0.1, 0.2, 0.30000001], num_train_timesteps: 3 });
    expect(Array.from(tr.alphasCumprod)).toEqual([Math.fround(0.9), Math.fround(Math.fround(0.9) * Math.fround(0.8)), Math.fround(Math.fround(0.9) * Math.fround(0.8) * Math.fround(1 - Math.fround(0.30000001)))]);
  });
});

describe('timesteps', () => {
  const cfg = (spacing: string, offset = 0) => parseSchedulerConfig({ timestep_spacing: spacing, steps_offset: offset }, 'ddim');
  it('leading, linspace and trailing spacing as numpy computes them', () => {
    expect(inferenceTimesteps(cfg('leading', 1), 10)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(inferenceTimesteps(cfg('leading'), 3)).toEqual([666, 333, 0]);
    expect(inferenceTimesteps(cfg('linspace'), 10)).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    // linspace(0, 999, 4) = 0, 333, 666, 999; (0, 999, 8): 142.71.. -> 143, 285.43 -> 285, 428.14 -> 428, 570.86 -> 571 ...
    expect(inferenceTimesteps(cfg('linspace'), 8)).toEqual([999, 856, 714, 571, 428, 285, 143, 0]);
    expect(inferenceTimesteps(cfg('trailing'), 10)).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    expect(inferenceTimesteps(cfg('trailing'), 1)).toEqual([999]);
    // numpy's float arange for non-integer ratios (values taken from numpy):
    expect(inferenceTimesteps(cfg('trailing'), 3)).toEqual([999, 666, 332]);
    expect(inferenceTimesteps(cfg('trailing'), 7)).toEqual([999, 856, 713, 570, 428, 285, 142]);
    expect(inferenceTimesteps(cfg('trailing'), 999).slice(-3)).toEqual([2, 1, 0]);
    expect(inferenceTimesteps(cfg('linspace'), 1)).toEqual([0]);
  });

  it('refuses more steps than training timesteps, and non-positive counts', () => {
    const s = new DDPMScheduler(SD15);
    expect(() => s.setTimesteps(1001)).toThrow(/cannot be larger than num_train_timesteps/);
    expect(() => s.setTimesteps(0)).toThrow(/>= 1/);
  });

  it('DDPM before set_timesteps: every training step, prev = t - 1', () => {
    const s = new DDPMScheduler(SD15);
    expect(s.timesteps.length).toBe(1000);
    expect(s.timesteps[0]).toBe(999);
    expect(s.previousTimestep(500)).toBe(499);
  });
});

function upload(data: Float32Array, shape: number[]): Tensor {
  return engine.tensor(data, shape, 'f32', 'input');
}

/** Runs one step on the GPU and returns [prev, x0, dispatches in the scheduler's scope]. */
async function gpuStep(s: Scheduler, t: number, shape: number[], seed: number, opts: StepOptions & { withNoise?: boolean } = {}) {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = randomData(n, seed, -2, 2);
  const m = randomData(n, seed + 1, -2, 2);
  const z = randomData(n, seed + 2, -2, 2);
  const [xt, mt] = [upload(x, shape), upload(m, shape)];
  const zt = opts.withNoise ? upload(z, shape) : undefined;
  try {
    const { result } = await runProgram(engine, 'step', (rec) => {
      const r = s.step(rec, mt, t, xt, { ...opts, noise: zt });
      return { r, dispatches: rec.countDispatches(s.kind) };
    });
    const out = { prev: await result.r.prevSample.read(), x0: await result.r.predOriginalSample.read(), x, m, z, dispatches: result.dispatches };
    result.r.prevSample.dispose();
    result.r.predOriginalSample.dispose();
    return out;
  } finally {
    xt.dispose();
    mt.dispose();
    zt?.dispose();
  }
}

// f32 GPU arithmetic vs f64: x0 at t near 999 amplifies rounding by 1/sqrt(alpha_prod) ~ 15, on values up to ~60.
const STEP_TOL = { atol: 2e-5, rtol: 1e-5 };
const SHAPES = [[1], [3, 5, 7], [2, 4, 3, 5]];

describe('DDPM step (GPU) vs f64 reference', () => {
  const cases: [string, Record<string, unknown>, number, number, Partial<StepRefOptions>][] = [
    ['epsilon, 999 steps, t=999', {}, 999, 999, {}],
    ['epsilon, 50 steps, last t=1 (alpha_prev = 1)', {}, 50, 1, {}],
    ['clip_sample 1.5, t=981', { clip_sample: true, clip_sample_range: 1.5 }, 50, 981, { clip: 1.5 }],
    ['sample prediction, t=501', { prediction_type: 'sample' }, 50, 501, { prediction: 'sample' }],
    ['v_prediction, t=21', { prediction_type: 'v_prediction' }, 50, 21, { prediction: 'v_prediction' }],
  ];
  for (const [what, extra, steps, t, ro] of cases) {
    it(`${what} (atol 2e-5, rtol 1e-5)`, async () => {
      const s = new DDPMScheduler({ ...SD15, ...extra });
      s.setTimesteps(steps);
      for (const [k, shape] of SHAPES.entries()) {
        const g = await gpuStep(s, t, shape, 10 * k + t, { withNoise: true });
        const [prev, x0] = ddpmStepRef(s.alphasCumprod, t, g.x, g.m, g.z, { numTrain: 1000, numInference: steps, ...ro });
        expectClose(g.x0, x0, STEP_TOL, `${what} ${shape} x0`);
        expectClose(g.prev, prev, STEP_TOL, `${what} ${shape} prev`);
        // x0, mean, noise: three elementwise dispatches (four with clipping), nothing read back.
        expect(g.dispatches).toBe(ro.clip !== undefined ? 4 : 3);
      }
    });
  }

  it('t = 0 adds no noise and needs none', async () => {
    const s = new DDPMScheduler(SD15);
    s.setTimesteps(1000);
    const g = await gpuStep(s, 0, [3, 5, 7], 3);
    const [prev] = ddpmStepRef(s.alphasCumprod, 0, g.x, g.m, null, { numTrain: 1000, numInference: 1000 });
    expectClose(g.prev, prev, STEP_TOL, 't=0 prev');
    expect(s.stepCoefficients(0).noiseStd).toBe(0);
  });

  it('stepCoefficients: the last step of 999 uses alphas_cumprod[0], of 50 uses 1', () => {
    const s = new DDPMScheduler(SD15);
    s.setTimesteps(999);
    expect(s.stepCoefficients(1)).toMatchObject({ prevT: 0, alphaProdTPrev: s.alphasCumprod[0] });
    s.setTimesteps(50);
    const c = s.stepCoefficients(1);
    expect(c).toMatchObject({ prevT: -19, alphaProdTPrev: 1 });
    expect(c.noiseStd).toBeCloseTo(Math.sqrt(c.variance), 7);
  });
});

describe('DDIM step (GPU) vs f64 reference', () => {
  const cases: [string, Record<string, unknown>, number, number, Partial<StepRefOptions> & { eta?: number }][] = [
    ['eta 0, t=981', {}, 50, 981, {}],
    ['eta 0, last t=1 (alpha_prev = alphas_cumprod[0])', {}, 50, 1, {}],
    ['eta 0.5, set_alpha_to_one, last t=1', { set_alpha_to_one: true }, 50, 1, { eta: 0.5 }],
    ['eta 1, clipped x0 and eps, t=301', { clip_sample: true }, 20, 301, { eta: 1, clip: 1, useClipped: true }],
    ['sample prediction, clipped, t=451', { prediction_type: 'sample', clip_sample: true, clip_sample_range: 0.5 }, 20, 451, { prediction: 'sample', clip: 0.5 }],
    ['v_prediction, eta 0.3, t=701', { prediction_type: 'v_prediction' }, 10, 701, { prediction: 'v_prediction', eta: 0.3 }],
  ];
  for (const [what, extra, steps, t, ro] of cases) {
    it(`${what} (atol 2e-5, rtol 1e-5)`, async () => {
      const s = new DDIMScheduler({ ...SD15, ...extra });
      s.setTimesteps(steps);
      const finalAlpha = extra['set_alpha_to_one'] ? 1 : s.alphasCumprod[0]!;
      for (const [k, shape] of SHAPES.entries()) {
        const g = await gpuStep(s, t, shape, 7 * k + t, { eta: ro.eta, useClippedModelOutput: ro.useClipped, withNoise: (ro.eta ?? 0) > 0 });
        const [prev, x0] = ddimStepRef(s.alphasCumprod, t, g.x, g.m, g.z, { numTrain: 1000, numInference: steps, finalAlpha, ...ro });
        expectClose(g.x0, x0, STEP_TOL, `${what} ${shape} x0`);
        expectClose(g.prev, prev, STEP_TOL, `${what} ${shape} prev`);
      }
    });
  }
});

describe('errors diffusers raises, and argument checks', () => {
  it('t >= num_train_timesteps (set_timesteps(1000) starts at 1000) is a clear error, for both schedulers', async () => {
    for (const s of [new DDPMScheduler(SD15), new DDIMScheduler(SD15)]) {
      s.setTimesteps(1000);
      expect(s.timesteps[0]).toBe(1000);
      expect(() => s.stepCoefficients(1000)).toThrow(/timestep 1000 is out of range for alphas_cumprod \(0\.\.999\)/);
      expect(() => s.stepCoefficients(-3)).toThrow(ArgumentError);
      expect(() => s.stepCoefficients(2.5)).toThrow(ArgumentError);
      const x = upload(new Float32Array(4), [4]);
      await expect(runProgram(engine, 'bad', (rec) => s.step(rec, x, 1000, x, { noise: x }))).rejects.toThrow(/out of range/);
      x.dispose();
    }
  });

  it('missing noise, unset timesteps, mismatched shapes', async () => {
    const a = upload(new Float32Array(6), [2, 3]);
    const b = upload(new Float32Array(6), [3, 2]);
    try {
      const ddpm = new DDPMScheduler(SD15);
      ddpm.setTimesteps(50);
      await expect(runProgram(engine, 'bad', (rec) => ddpm.step(rec, a, 981, a))).rejects.toThrow(/pass opts.noise/);
      await expect(runProgram(engine, 'bad', (rec) => ddpm.step(rec, a, 981, b, { noise: a }))).rejects.toThrow(/differ in shape/);
      const ddim = new DDIMScheduler(SD15);
      await expect(runProgram(engine, 'bad', (rec) => ddim.step(rec, a, 981, a))).rejects.toThrow(/setTimesteps\(\) before step/);
      ddim.setTimesteps(50);
      await expect(runProgram(engine, 'bad', (rec) => ddim.step(rec, a, 981, a, { eta: 1 }))).rejects.toThrow(/pass opts.noise/);
      expect(() => ddim.stepCoefficients(981, { eta: -1 })).toThrow(/eta/);
    } finally {
      a.dispose();
      b.dispose();
    }
  });
});

describe('add_noise', () => {
  it('sqrt(abar) x + sqrt(1 - abar) noise on an odd shape (atol 1e-6, rtol 1e-6)', async () => {
    const s = new DDPMScheduler(SD15);
    const x = randomData(35, 1);
    const z = randomData(35, 2);
    const [xt, zt] = [upload(x, [5, 7]), upload(z, [5, 7])];
    const { result } = await runProgram(engine, 'add_noise', (rec) => s.addNoise(rec, xt, zt, 600));
    const a = s.alphasCumprod[600]!;
    expectClose(await result.read(), x.map((v, i) => Math.sqrt(a) * v + Math.sqrt(1 - a) * z[i]!), { atol: 1e-6, rtol: 1e-6 }, 'add_noise');
    for (const t of [xt, zt, result]) t.dispose();
  });
});
