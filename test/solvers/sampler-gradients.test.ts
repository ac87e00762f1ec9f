// The guided samplers' gradients and options beyond the two golden steps (step-cases.test.ts), on the
// golden unet_mini at an 8x8 latent (64x64 image), with small random SILO operators, vae_mini for the
// SILO restorations and a narrower random VAE for the pixel-space methods (see beforeAll):
//  - the full step gradient `grad` = d residual / d z_t against central finite differences of the step's
//    own residual norm, for SILO-CNN (with and without classifier-free guidance, cfg_fix on and off),
//    SILO-RG, Latent-DPS through three image operators' adjoints, and PSLD's weighted sum;
//  - the gradient clamp and step size of the update z_{t-1} = prev - eta * clamp(grad, -c, c);
//  - restore() end to end on 2-step runs: report fields, seeding, abort and tensor hygiene, argument errors.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import type { Tensor } from '../../src/engine/tensor.js';
import type { Recorder } from '../../src/engine/recorder.js';
import { runProgram } from '../../src/engine/recorder.js';
import { normalCPU } from '../../src/engine/random.js';
import { transpose2d, type RawArray, type TensorInfo, type TensorSource } from '../../src/formats/safetensors.js';
import type { DType } from '../../src/engine/dtype.js';
import { RandomWeightSource } from '../../src/models/random-weights.js';
import { WeightLoader } from '../../src/models/weights.js';
import { DegradationModel } from '../../src/models/silo/cnn.js';
import { AggregationNetwork } from '../../src/models/silo/readout.js';
import { aggregationConfig, degradationConfig, sigmaTimestep } from '../../src/models/silo/config.js';
import { AutoencoderKL } from '../../src/models/vae/autoencoder.js';
import type { UNet2DConditionModel } from '../../src/models/unet/unet.js';
import { DDPMScheduler } from '../../src/solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../../src/solvers/schedulers/config.js';
import { makeDegradation } from '../../src/solvers/degradations/tasks.js';
import type { Degradation } from '../../src/solvers/degradations/types.js';
import { unetEpsModel, unetForwardMode, type UNetEpsOptions } from '../../src/solvers/samplers/eps-model.js';
import { unetTapeBytes } from '../../src/models/unet/tape-bytes.js';
import type { DiffusionPrior } from '../../src/solvers/samplers/denoiser.js';
import type { GuidedStep } from '../../src/solvers/samplers/guided.js';
import { siloStep, type SiloOperator } from '../../src/solvers/samplers/silo.js';
import { latentDpsStep, psldStep } from '../../src/solvers/samplers/pixel.js';
import { residualNorm } from '../../src/solvers/samplers/residual.js';
import { degradationModelVjp } from '../../src/models/silo/cnn-vjp.js';
import { restore, RestoreAbortedError, type RestoreMethod, type RestoreModels, type RestoreOptions, type RestoreProgress, type RestoreReport, type RestoreResult } from '../../src/restore/loop.js';
import { loadUNetFolder } from '../../src/check/unet.js';
import { readJson, readSafetensors } from '../../src/check/files.js';
import { parseVaeConfig } from '../../src/models/vae/config.js';
import { getEngine, randomData } from '../helpers/engine.js';
import { goldenFiles } from '../helpers/golden.js';

/**
 * Random SILO operator weights: RandomWeightSource, except that the element-wise LayerNorm([C, H, W])
 * gains (rank 3, which RandomWeightSource would draw like a matrix, ~N(0, 1/HW): an operator whose
 * output barely moves with its input) are 1 + U(-0.1, 0.1), and that constants a module reads on the CPU
 * (AggregationNetwork's mixing_weights) are set explicitly.
 */
class OperatorWeights implements TensorSource {
  readonly source: string;
  private readonly gpu: RandomWeightSource;
  private readonly cpu = new Map<string, { data: Float32Array; shape: number[] }>();
  private salt = 0;
  constructor(private readonly seed: number, label: string) {
    this.gpu = new RandomWeightSource(seed, label);
    this.source = this.gpu.source;
  }
  setCpu(name: string, data: Float32Array, shape: number[]): void {
    this.cpu.set(name, { data, shape });
  }
  declare(name: string, shape: readonly number[]): void {
    if (shape.length === 3 && name.endsWith('.weight')) {
      const n = shape.reduce((a, b) => a * b, 1);
      this.setCpu(name, randomData(n, this.seed * 1000 + ++this.salt, 0.9, 1.1), shape.slice());
    } else this.gpu.declare(name, shape);
  }
  names(): string[] {
    return [...this.gpu.names(), ...this.cpu.keys()];
  }
  has(name: string): boolean {
    return this.cpu.has(name) || this.gpu.has(name);
  }
  info(name: string): TensorInfo {
    const c = this.cpu.get(name);
    return c ? { dtype: 'F32', shape: c.shape, byteOffset: 0, byteLength: c.data.byteLength } : this.gpu.info(name);
  }
  getRaw(name: string): RawArray {
    return this.getF32(name);
  }
  getF32(name: string): Float32Array {
    return this.cpu.get(name)?.data ?? this.gpu.getF32(name);
  }
  getIntegers(name: string): number[] {
    return this.gpu.getIntegers(name);
  }
  toTensor(engine: Engine, name: string, dtype: DType = 'f32'): Tensor {
    const c = this.cpu.get(name);
    return c ? engine.tensor(c.data, c.shape, dtype, name) : this.gpu.toTensor(engine, name, dtype);
  }
  toTensorTransposed(engine: Engine, name: string, dtype: DType = 'f32'): Tensor {
    const c = this.cpu.get(name);
    if (!c) return this.gpu.toTensorTransposed(engine, name, dtype);
    const [rows, cols] = c.shape as [number, number];
    return engine.tensor(transpose2d(c.data, rows, cols), [cols, rows], dtype, name);
  }
  generated(): Promise<void> {
    return this.gpu.generated();
  }
}

const LATENT = 8;
const IMAGE = LATENT * 8;
let engine: Engine;
let unet: UNet2DConditionModel;
let vae: AutoencoderKL;
/** A narrower random AutoencoderKL (same factor 8) for the pixel methods (Latent-DPS, PSLD). */
let narrowVae: AutoencoderKL;
const loaders: WeightLoader[] = [];
const owned: Tensor[] = [];
let text: Tensor;
let uncond: Tensor;
let sigmaEmb: Tensor;
let cnn: DegradationModel;
let readout: AggregationNetwork;

function upload(data: Float32Array, shape: number[], name: string): Tensor {
  const t = engine.tensor(data, shape, 'f32', name);
  owned.push(t);
  return t;
}

function buildOperator<T>(src: OperatorWeights, make: (w: WeightLoader) => T): T {
  return WeightLoader.build(engine, src, {}, (w) => {
    loaders.push(w);
    return make(w);
  });
}

beforeAll(async () => {
  engine = await getEngine();
  const u = await loadUNetFolder(engine, goldenFiles('unet_mini'));
  unet = u.model;
  loaders.push(u.loader);
  const vf = goldenFiles('vae_mini');
  const vcfg = parseVaeConfig(await readJson<Record<string, unknown>>(vf, 'config.json'));
  const vw = await readSafetensors(vf, 'diffusion_pytorch_model.safetensors');
  vae = WeightLoader.build(engine, vw, {}, (w) => {
    loaders.push(w);
    return new AutoencoderKL(w, vcfg);
  });
  // vae_mini's decoder forward + VJP costs ~6 GFLOP per step at 64x64 (PSLD twice that): the sixteen
  // pixel-method steps here would take minutes on lavapipe. The samplers' composition (1/s, A^T, the
  // decoder and encoder VJPs, PSLD's projection) does not depend on the widths; vae_mini's VJPs have
  // their own golden tests and vae_mini encodes and decodes the SILO restorations below.
  const narrowSrc = new RandomWeightSource(6, 'narrow test VAE');
  const narrowCfg = parseVaeConfig({
    block_out_channels: [8, 16, 16, 32],
    down_block_types: Array(4).fill('DownEncoderBlock2D'),
    up_block_types: Array(4).fill('UpDecoderBlock2D'),
    layers_per_block: 1,
    norm_num_groups: 8,
    latent_channels: 4,
    scaling_factor: 0.18215,
    sample_size: IMAGE,
  });
  narrowVae = WeightLoader.build(engine, narrowSrc, {}, (w) => {
    loaders.push(w);
    return new AutoencoderKL(w, narrowCfg);
  });
  await narrowSrc.generated();
  const ctx = unet.config.crossAttentionDim[0]!;
  text = upload(normalCPU(8 * ctx, 11), [1, 8, ctx], 'text');
  uncond = upload(normalCPU(8 * ctx, 12), [1, 8, ctx], 'uncond');
  // e_sigma from unet_mini's own time embedding (width 128), the operators built for that width: so
  // restore() derives it as SILO does, with no embedding supplied.
  const temb = (await runProgram(engine, 'sigma_emb', (rec) => unet.timeEmbedding(rec, sigmaTimestep(0.02)))).result;
  owned.push(temb);
  sigmaEmb = temb;
  const cnnSrc = new OperatorWeights(3, 'test cnn operator');
  cnn = buildOperator(cnnSrc, (w) => new DegradationModel(w, degradationConfig({ latent_dim: 4, sigma_condition: true, layer_norm: true, latent_size: LATENT, sigma_emb_dim: temb.shape[1] })));
  await cnnSrc.generated();
  const rgSrc = new OperatorWeights(4, 'test readout operator');
  // unet_mini's readout features (up_blocks[0..3].resnets[0..2]): 64 channels x 9, then 32 x 3 (the
  // network checks each feature's channels against these).
  const dims = [...Array(9).fill(64), ...Array(3).fill(32)] as number[];
  rgSrc.setCpu('mixing_weights', randomData(dims.length, 5, -0.5, 0.5), [dims.length]);
  readout = buildOperator(rgSrc, (w) =>
    new AggregationNetwork(
      w,
      aggregationConfig({ feature_dims: dims, projection_dim: 32, num_norm_groups: 8, use_output_head: true, output_head_channels: 4, output_head_act: false, sigma_condition: true, latent_size: LATENT, sigma_emb_dim: temb.shape[1] }),
    ),
  );
  await rgSrc.generated();
});

afterAll(() => {
  for (const t of owned) t.dispose();
  for (const l of loaders) l.disposeAll();
});

function scheduler(steps = 20): DDPMScheduler {
  const s = new DDPMScheduler({ ...SD15_SCHEDULER_CONFIG });
  s.setTimesteps(steps);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Finite differences of a step's residual

type AnyStep = GuidedStep & { glueNorm?: Tensor };
type StepFn = (rec: Recorder, zt: Tensor) => AnyStep;

interface StepValues {
  f: number;
  glue?: number;
  grad: Float32Array;
  prev: Float32Array;
  zPrev: Float32Array;
  x0: Float32Array;
}

function disposeStep(s: AnyStep): void {
  for (const t of [s.zPrev, s.eps, s.x0, s.prev, s.estimate, s.residualNorm, s.grad, s.glueNorm, ...Object.values(s.extras)]) t?.dispose();
}

/** One step at z (one program), read back and freed. */
async function runStep(fn: StepFn, z: Float32Array): Promise<StepValues> {
  const zt = engine.tensor(z, [1, 4, LATENT, LATENT], 'f32', 'z_t');
  try {
    const { result } = await runProgram(engine, 'fd_step', (rec) => fn(rec, zt));
    try {
      return {
        f: (await result.residualNorm.read())[0]!,
        glue: result.glueNorm ? (await result.glueNorm.read())[0]! : undefined,
        grad: await result.grad.read(),
        prev: await result.prev.read(),
        zPrev: await result.zPrev.read(),
        x0: await result.x0.read(),
      };
    } finally {
      disposeStep(result);
    }
  } finally {
    zt.dispose();
  }
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}
const norm2 = (a: ArrayLike<number>) => Math.sqrt(dot(a, a));

/** d = (sign(v) + n) / rms: correlated with v, so <v, d> is a sizeable fraction of |v| |d|. */
function direction(v: Float32Array, seed: number): Float32Array {
  const n = normalCPU(v.length, seed);
  const d = Float32Array.from(v, (x, i) => Math.sign(x) + n[i]!);
  const rms = norm2(d) / Math.sqrt(d.length);
  return d.map((x) => x / rms);
}

const axpy = (z: Float32Array, h: number, d: Float32Array) => Float32Array.from(z, (x, i) => x + h * d[i]!);

interface FdOptions {
  /** Central-difference step along d (rms(d) = 1, z_t ~ N(0, 1)). */
  h: number;
  /** Allowed |FD - <grad, d>| as a fraction of |grad| |d|. */
  tol: number;
  /** The scalar whose gradient `grad` is (default: the residual norm). */
  objective?: (v: StepValues) => number;
  seed?: number;
}

interface FdResult {
  base: StepValues;
  plus: StepValues;
  minus: StepValues;
  d: Float32Array;
  fd: number;
  analytic: number;
  /** |grad| |d|: the Cauchy-Schwarz scale the tolerance is relative to. */
  scale: number;
}

/** Checks <grad, d> against (f(z + h d) - f(z - h d)) / 2h, each f read from a full step at that z_t. */
async function fdCheck(what: string, fn: StepFn, z: Float32Array, o: FdOptions): Promise<FdResult> {
  const f = o.objective ?? ((v: StepValues) => v.f);
  const base = await runStep(fn, z);
  expect(base.grad.every(Number.isFinite), `${what}: finite gradient`).toBe(true);
  const d = direction(base.grad, o.seed ?? 7);
  const analytic = dot(base.grad, d);
  const scale = norm2(base.grad) * norm2(d);
  expect(scale, `${what}: non-zero gradient`).toBeGreaterThan(0);
  // A direction nearly orthogonal to grad would make any gradient pass.
  expect(analytic / scale, `${what}: <grad, d> / (|grad| |d|)`).toBeGreaterThan(0.3);
  const plus = await runStep(fn, axpy(z, o.h, d));
  const minus = await runStep(fn, axpy(z, -o.h, d));
  const fd = (f(plus) - f(minus)) / (2 * o.h);
  const err = Math.abs(fd - analytic) / scale;
  console.log(`${what}: f ${f(base).toFixed(4)}, <grad, d> ${analytic.toFixed(5)}, FD ${fd.toFixed(5)}, |diff| / (|grad| |d|) ${err.toExponential(2)} (tol ${o.tol})`);
  expect(err, `${what}: directional derivative vs central difference`).toBeLessThanOrEqual(o.tol);
  return { base, plus, minus, d, fd, analytic, scale };
}

/** z_prev == prev - eta * clamp(grad, -c, c) element-wise; returns how many entries were clipped. */
function expectUpdate(v: StepValues, eta: number, c: number, what: string): number {
  let clipped = 0;
  let worst = 0;
  for (let i = 0; i < v.grad.length; i++) {
    const g = v.grad[i]!;
    const gc = Math.min(c, Math.max(-c, g));
    if (gc !== g) clipped++;
    const want = v.prev[i]! - eta * gc;
    // One f32 multiply-add: at most two roundings of values of size |prev| + |eta g|.
    const bound = 2 ** -22 * (Math.abs(v.prev[i]!) + Math.abs(eta * gc)) + 1e-30;
    worst = Math.max(worst, Math.abs(v.zPrev[i]! - want) / bound);
  }
  expect(worst, `${what}: z_prev - (prev - eta clamp(grad)) in units of its rounding bound`).toBeLessThanOrEqual(1);
  return clipped;
}

function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

// SILO operators hold ReLUs, so their residual is only piecewise smooth: measured on lavapipe over two
// directions, the central difference was off (as a fraction of |grad| |d|) by 13 % at h = 1e-2 and
// shrank about linearly with h (ReLU kinks inside [z - hd, z + hd]) to 0.3-0.7 % at h = 1e-3 (1.2-1.3 %
// with CFG 3, whose amplified eps moves x0 further), below which the f32 round-off of f (|f| ~ 20,
// ~1e-5 relative through the UNet) divided by 2h stops the gain (0.4-1 % at 5e-4). h = 1e-3 with 3 %
// leaves a 2x margin over the worst case; dropping the UNet VJP misses by 16 % (checked below).
const SILO_FD: FdOptions = { h: 1e-3, tol: 3e-2 };
// The pixel methods' residuals are smooth at this scale (errors ~1e-3 at h = 1e-2 and <= 3e-4 at 3e-3,
// on both adapters): h = 3e-3 with 1 %.
const PIXEL_FD: FdOptions = { h: 3e-3, tol: 1e-2 };
/** A timestep where both x0 = a z_t + b eps terms matter (a 1.9, b -1.6). */
const T = 501;
const N_LATENT = 4 * LATENT * LATENT;

describe('guided step gradients against finite differences', () => {
  let sched: DDPMScheduler;
  let z: Float32Array;
  let noise: Tensor;
  let w: Tensor;
  let prior: DiffusionPrior;
  /** The unguided SILO-CNN step at (z, T) with no clamp, shared with the CFG and clamp tests. */
  let cnnBase: StepValues | undefined;
  const cnnOp = (): SiloOperator => ({ kind: 'cnn', model: cnn, sigmaEmb });
  const cnnStep = (eta: number, gradClamp: number): StepFn => (rec, zt) => siloStep(rec, prior, cnnOp(), w, zt, T, noise, { eta, gradClamp });
  const unguidedCnn = async (): Promise<StepValues> => (cnnBase ??= await runStep(cnnStep(0.5, Infinity), z));

  beforeAll(() => {
    sched = scheduler();
    expect(sched.timesteps).toContain(T);
    z = normalCPU(N_LATENT, 1);
    // The same DDPM noise tensor at every z: it enters prev, never the residual.
    noise = upload(normalCPU(N_LATENT, 2), [1, 4, LATENT, LATENT], 'ddpm_noise');
    w = upload(normalCPU(N_LATENT, 3), [1, 4, LATENT, LATENT], 'w');
    prior = { model: unetEpsModel(unet), scheduler: sched, text };
  });

  it('SILO-CNN: through H, the x0 formula and the UNet VJP; the UNet term is needed to pass', async () => {
    const eta = 0.5;
    const r = await fdCheck('silo-cnn', cnnStep(eta, Infinity), z, SILO_FD);
    cnnBase = r.base;
    expect(expectUpdate(r.base, eta, Infinity, 'silo-cnn, no clamp'), 'nothing clipped').toBe(0);

    // Sensitivity: the same residual differentiated through H and a * I alone (no UNet VJP) must miss
    // the finite difference by well over the tolerance, so a lost or mis-scaled UNet term would fail.
    const x0 = upload(r.base.x0, [1, 4, LATENT, LATENT], 'x0');
    const { result } = await runProgram(engine, 'cnn_x0_grad', (rec) => {
      const est = cnn.forward(rec, x0, sigmaEmb);
      const res = residualNorm(rec, w, est);
      const g = degradationModelVjp(rec, cnn, x0, sigmaEmb, res.grad);
      est.dispose();
      res.grad.dispose();
      return { norm: res.norm, g };
    });
    const norm = (await result.norm.read())[0]!;
    const gX0 = await result.g.read();
    result.norm.dispose();
    result.g.dispose();
    // Same x0 and operator: the step's residual is ||w - H(x0)|| (f32 re-evaluation).
    expect(Math.abs(norm - r.base.f) / r.base.f).toBeLessThan(1e-5);
    const a = sched.stepCoefficients(T).x0FromSample;
    const withoutUnet = a * dot(gX0, r.d);
    const miss = Math.abs(withoutUnet - r.fd) / r.scale;
    console.log(`silo-cnn without the UNet VJP: <a g_x0, d> ${withoutUnet.toFixed(5)}, off by ${miss.toExponential(2)} of |grad| |d|`);
    expect(miss, 'dropping the UNet VJP is detectable').toBeGreaterThan(3 * SILO_FD.tol);
  }, 300_000);

  it("UNet forward modes: 'recompute' and 'auto' over its budget give reuse's step; the pass says which mode ran", async () => {
    const base = await unguidedCnn();
    const tape = unetTapeBytes(unet, [1, 4, LATENT, LATENT]);
    const variants: [UNetEpsOptions, 'reuse' | 'recompute'][] = [
      [{ forward: 'recompute' }, 'recompute'],
      [{ activationBudget: tape - 1 }, 'recompute'],
      [{ activationBudget: tape }, 'reuse'],
      [{ forward: 'reuse', activationBudget: 0 }, 'reuse'],
    ];
    for (const [o, want] of variants) {
      expect(unetForwardMode(unet, [1, 4, LATENT, LATENT], o), JSON.stringify(o)).toBe(want);
      const p: DiffusionPrior = { ...prior, model: unetEpsModel(unet, o) };
      let seen: string | undefined;
      const spy: DiffusionPrior = {
        ...p,
        model: { ...p.model, forward: (rec, ...args) => { const pass = p.model.forward(rec, ...args); seen = pass.forwardMode; return pass; } },
      };
      const v = await runStep((rec, zt) => siloStep(rec, spy, cnnOp(), w, zt, T, noise, { eta: 0.5, gradClamp: Infinity }), z);
      expect(seen, JSON.stringify(o)).toBe(want);
      expect(relL2(v.grad, base.grad), `grad, ${JSON.stringify(o)}`).toBeLessThan(1e-5);
      expect(relL2(v.zPrev, base.zPrev), `z_prev, ${JSON.stringify(o)}`).toBeLessThan(1e-6);
    }
    expect(() => unetEpsModel(unet, { forward: 'keep' as 'reuse' })).toThrow(/forward must be 'auto', 'reuse' or 'recompute'/);
    expect(() => unetEpsModel(unet, { activationBudget: -1 })).toThrow(/activationBudget/);
  }, 300_000);

  it('SILO-CNN with CFG 3: the guided x0 (cfgFix off) matches FD; cfgFix reads the text branch alone', async () => {
    const eta = 0.5;
    const base = await unguidedCnn();
    const cfg = (cfgFix: boolean): DiffusionPrior => ({ ...prior, uncond, guidanceScale: 3, cfgFix });
    const off = await fdCheck('silo-cnn cfg 3', (rec, zt) => siloStep(rec, cfg(false), cnnOp(), w, zt, T, noise, { eta, gradClamp: Infinity }), z, SILO_FD);
    expectUpdate(off.base, eta, Infinity, 'silo-cnn cfg 3');
    // Guidance changes eps (hence prev and the operator's x0).
    expect(relL2(off.base.prev, base.prev)).toBeGreaterThan(1e-2);
    expect(Math.abs(off.base.f - base.f)).toBeGreaterThan(1e-3);

    // With cfgFix the residual depends on z_t only through x0_text = a z_t + b eps_text(z_t): the very
    // function of the unguided step, so its value and gradient must equal the FD-checked unguided ones
    // (a batch of two instead of one: identical bits on both adapters, f32 round-off allowed), while prev follows the guided eps.
    const fix = await runStep((rec, zt) => siloStep(rec, cfg(true), cnnOp(), w, zt, T, noise, { eta, gradClamp: Infinity }), z);
    expect(Math.abs(fix.f - base.f) / base.f, 'cfgFix residual = unguided residual').toBeLessThan(1e-5);
    console.log(`cfgFix vs unguided: residual ${(Math.abs(fix.f - base.f) / base.f).toExponential(2)}, grad relL2 ${relL2(fix.grad, base.grad).toExponential(2)}`);
    expect(relL2(fix.grad, base.grad), 'cfgFix gradient = unguided gradient').toBeLessThan(1e-4);
    expect(relL2(fix.prev, off.base.prev), 'cfgFix keeps the guided DDPM step').toBeLessThan(1e-5);
    expect(relL2(fix.grad, off.base.grad), 'cfgFix changes the gradient').toBeGreaterThan(1e-2);
    expectUpdate(fix, eta, Infinity, 'silo-cnn cfgFix');
  }, 300_000);

  it('SILO-RG: through the readout network and the UNet up to its features', async () => {
    const op: SiloOperator = { kind: 'readout', model: readout, sigmaEmb };
    const r = await fdCheck('silo-rg', (rec, zt) => siloStep(rec, prior, op, w, zt, T, noise, { eta: 0.5, gradClamp: Infinity }), z, SILO_FD);
    expectUpdate(r.base, 0.5, Infinity, 'silo-rg');
  }, 300_000);

  for (const task of ['sr4', 'inpaint_center', 'gaussian_blur'] as const) {
    it(`Latent-DPS through A = ${task}: decoder VJP and A's adjoint; z_prev = prev - scale * grad unclipped`, async () => {
      const A = makeDegradation(engine, task, IMAGE, IMAGE).operator;
      try {
        const y = await measurement(A, 21);
        const scale = 0.7;
        const r = await fdCheck(`latent-dps ${task}`, (rec, zt) => latentDpsStep(rec, prior, narrowVae, A, y, zt, T, noise, { scale }), z, PIXEL_FD);
        expectUpdate(r.base, scale, Infinity, `latent-dps ${task}`);
      } finally {
        A.dispose();
      }
    }, 300_000);
  }

  it('PSLD: grad = d (omega r + gamma glue) / d z_t; z_prev = prev - grad', async () => {
    const A = makeDegradation(engine, 'inpaint_center', IMAGE, IMAGE).operator;
    const omega = 0.8;
    const gamma = 0.5;
    try {
      const y = await measurement(A, 22);
      const r = await fdCheck('psld', (rec, zt) => psldStep(rec, prior, narrowVae, A, y, zt, T, noise, { omega, gamma }), z, { ...PIXEL_FD, objective: (v) => omega * v.f + gamma * v.glue! });
      expectUpdate(r.base, 1, Infinity, 'psld');
      // The gluing term's share of the derivative is far above the tolerance (so dropping it would fail).
      const glueShare = (gamma * (r.plus.glue! - r.minus.glue!)) / (2 * PIXEL_FD.h);
      expect(Math.abs(glueShare) / r.scale).toBeGreaterThan(5 * PIXEL_FD.tol);
    } finally {
      A.dispose();
    }
  }, 300_000);

  it('gradient clamp: z_prev = prev - eta * clamp(grad, -c, c) with a quarter of the entries clipped; grad is returned unclipped', async () => {
    const base = await unguidedCnn();
    const sorted = Float32Array.from(base.grad, Math.abs).sort();
    const c = sorted[Math.floor(0.75 * sorted.length)]!;
    expect(c).toBeGreaterThan(0);
    const eta = 0.3;
    const v = await runStep(cnnStep(eta, c), z);
    expect(relL2(v.grad, base.grad), 'the same gradient as without the clamp').toBeLessThan(1e-6);
    expect(Math.max(...Array.from(v.grad, Math.abs))).toBeGreaterThan(c);
    const clipped = expectUpdate(v, eta, c, 'silo-cnn clamp');
    expect(clipped / v.grad.length).toBeGreaterThan(0.2);
    expect(clipped / v.grad.length).toBeLessThan(0.3);
  }, 300_000);

  it('rejects a non-positive clamp and a non-finite eta before recording anything', async () => {
    const start = engine.pool.stats.liveBytes;
    const rg: SiloOperator = { kind: 'readout', model: readout, sigmaEmb };
    await expect(runStep((rec, zt) => siloStep(rec, prior, cnnOp(), w, zt, T, noise, { eta: 0.5, gradClamp: 0 }), z)).rejects.toThrow(/gradClamp must be positive, got 0/);
    await expect(runStep((rec, zt) => siloStep(rec, prior, rg, w, zt, T, noise, { eta: 0.5, gradClamp: NaN }), z)).rejects.toThrow(/gradClamp must be positive, got NaN/);
    await expect(runStep((rec, zt) => siloStep(rec, prior, cnnOp(), w, zt, T, noise, { eta: NaN }), z)).rejects.toThrow(/eta must be finite, got NaN/);
    await expect(runStep((rec, zt) => siloStep(rec, prior, rg, w, zt, T, noise, { eta: Infinity }), z)).rejects.toThrow(/eta must be finite, got Infinity/);
    // Found after the UNet and its VJP were recorded, the error used to strand their tensors.
    expect(engine.pool.stats.liveBytes).toBe(start);
  });
});

/** y = A(x) for a seeded image x in [-1, 1] (64x64); kept until afterAll. */
async function measurement(A: Degradation, seed: number): Promise<Tensor> {
  const x = engine.tensor(randomData(3 * IMAGE * IMAGE, seed), [1, 3, IMAGE, IMAGE], 'f32', 'x');
  const { result } = await runProgram(engine, 'measure', (rec) => A.apply(rec, x));
  x.dispose();
  owned.push(result);
  return result;
}

// ---------------------------------------------------------------------------------------------
// restore() end to end

describe('restore() end to end (2 steps, 64x64)', () => {
  const STEPS = 2;
  // diffusers' leading spacing with steps_offset 1: arange(0, 2) * (1000 // 2) reversed, + 1.
  const TIMESTEPS: [number, number] = [501, 1];
  let inpaint: Degradation;
  let yInpaint: Tensor;

  const models = (extra: Partial<RestoreModels> = {}): RestoreModels => ({ unet, vae, scheduler: new DDPMScheduler({ ...SD15_SCHEDULER_CONFIG }), text, ...extra });
  const live = () => engine.pool.stats.liveBytes;

  beforeAll(async () => {
    inpaint = makeDegradation(engine, 'inpaint_center', IMAGE, IMAGE).operator;
    // Also uploads the operator's mask (kept until dispose), before any live-bytes baseline is taken.
    yInpaint = await measurement(inpaint, 31);
  });
  afterAll(() => inpaint.dispose());

  async function imageOf(r: RestoreResult): Promise<Float32Array> {
    expect(r.image.shape).toEqual([1, 3, IMAGE, IMAGE]);
    expect(r.latent.shape).toEqual([1, 4, LATENT, LATENT]);
    const img = await r.image.read();
    expect(img.every((v) => Number.isFinite(v) && v >= -1 && v <= 1), 'image finite and in [-1, 1]').toBe(true);
    expect((await r.latent.read()).every(Number.isFinite)).toBe(true);
    r.image.dispose();
    r.latent.dispose();
    return img;
  }

  function expectReport(r: RestoreReport, method: RestoreMethod, silo: boolean): void {
    expect(r.method).toBe(method);
    expect(r.steps).toBe(STEPS);
    expect(r.timesteps).toEqual(TIMESTEPS);
    // SILO's claim, measured: the autoencoder runs once before (E(y)) and once after (D(z_0)), never in the loop.
    if (silo) {
      expect(r.loop.autoencoderDispatches).toBe(0);
      expect(r.encode.autoencoderDispatches).toBeGreaterThan(0);
    } else {
      expect(r.loop.autoencoderDispatches).toBeGreaterThan(0);
      expect(r.encode.autoencoderDispatches).toBe(0);
    }
    expect(r.loop.dispatches).toBeGreaterThan(r.loop.autoencoderDispatches);
    expect(r.loop.perStepDispatches).toBe(r.loop.dispatches / STEPS);
    expect(r.decode.autoencoderDispatches).toBeGreaterThan(0);
    expect(r.decode.dispatches).toBeGreaterThanOrEqual(r.decode.autoencoderDispatches);
    for (const p of [r.encode, r.loop, r.decode]) expect(p.ms).toBeGreaterThanOrEqual(0);
    expect(r.loop.peakLiveBytes).toBeGreaterThan(0);
    expect(Number.isFinite(r.finalResidual) && r.finalResidual > 0).toBe(true);
    expect(r.unetTapeBytes).toBe(unetTapeBytes(unet, [1, 4, LATENT, LATENT]));
    expect(r.forwardMode).toBe('reuse'); // the mini UNet's activations fit the default budget
  }

  it('silo-cnn: report, progress and residuals; the same seed repeats, another seed differs; nothing leaks', async () => {
    const start = live();
    const progress: RestoreProgress[] = [];
    const opts: RestoreOptions = { method: 'silo-cnn', steps: STEPS, seed: 1, residualEvery: 1, onProgress: (p) => progress.push(p) };
    const first = await restore(engine, models({ cnn }), inpaint, yInpaint, opts);
    expectReport(first.report, 'silo-cnn', true);
    expect(progress.map((p) => [p.step, p.total, p.t])).toEqual([[1, STEPS, TIMESTEPS[0]], [2, STEPS, TIMESTEPS[1]]]);
    expect(first.report.residuals.map(([i]) => i)).toEqual([0, 1]);
    expect(first.report.residuals[1]![1]).toBe(first.report.finalResidual);
    expect(progress.map((p) => p.residual)).toEqual(first.report.residuals.map(([, r]) => r));
    const a = await imageOf(first);
    expect(live(), 'the results were the only tensors left').toBe(start);

    const again = await imageOf(await restore(engine, models({ cnn }), inpaint, yInpaint, { ...opts, onProgress: undefined }));
    expect(Array.from(again), 'same seed, same image').toEqual(Array.from(a));
    const other = await imageOf(await restore(engine, models({ cnn }), inpaint, yInpaint, { ...opts, seed: 2 }));
    expect(relL2(other, a), 'another seed, another image').toBeGreaterThan(1e-2);
    expect(live()).toBe(start);
  }, 300_000);

  it("silo-rg: no autoencoder in the loop either; forward 'recompute' restores the same image", async () => {
    const start = live();
    const r = await restore(engine, models({ readout }), inpaint, yInpaint, { method: 'silo-rg', steps: STEPS, seed: 4 });
    expectReport(r.report, 'silo-rg', true);
    const reused = await imageOf(r);
    expect(live()).toBe(start);
    const rc = await restore(engine, models({ readout }), inpaint, yInpaint, { method: 'silo-rg', steps: STEPS, seed: 4, forward: 'recompute' });
    expect(rc.report.forwardMode).toBe('recompute');
    expect(rc.report.loop.perStepDispatches, 'recompute runs the UNet forward twice').toBeGreaterThan(r.report.loop.perStepDispatches);
    expect(relL2(await imageOf(rc), reused)).toBeLessThan(1e-5);
    expect(live()).toBe(start);
  }, 300_000);

  it('silo-cnn: an AbortSignal fired after step 1 (or before the start) throws RestoreAbortedError and frees everything', async () => {
    const start = live();
    const ctl = new AbortController();
    const run = restore(engine, models({ cnn }), inpaint, yInpaint, { method: 'silo-cnn', steps: STEPS, seed: 1, signal: ctl.signal, onProgress: (p) => p.step === 1 && ctl.abort() });
    await expect(run).rejects.toThrow(RestoreAbortedError);
    await expect(run).rejects.toThrow(/stopped after 1 of 2 steps/);
    expect(live(), 'aborted after step 1: no tensor left').toBe(start);

    const pre = new AbortController();
    pre.abort();
    await expect(restore(engine, models({ cnn }), inpaint, yInpaint, { method: 'silo-cnn', steps: STEPS, seed: 1, signal: pre.signal })).rejects.toThrow(/stopped after 0 of 2 steps/);
    expect(live(), 'aborted before step 1: no tensor left').toBe(start);
  }, 300_000);

  it('latent-dps (sr4) and psld (inpainting), narrow VAE: the autoencoder runs inside the loop; nothing leaks', async () => {
    const sr = makeDegradation(engine, 'sr4', IMAGE, IMAGE).operator;
    try {
      const ySr = await measurement(sr, 32);
      const dps = await restore(engine, models({ vae: narrowVae }), sr, ySr, { method: 'latent-dps', steps: STEPS, seed: 3, imageSize: [IMAGE, IMAGE] });
      expectReport(dps.report, 'latent-dps', false);
      await imageOf(dps);
      // Constants the operators upload on first use (adjoints) are now resident: baseline after one run.
      const start = live();
      const psld = await restore(engine, models({ vae: narrowVae }), inpaint, yInpaint, { method: 'psld', steps: STEPS, seed: 3 });
      expectReport(psld.report, 'psld', false);
      // PSLD also encodes inside every step: more autoencoder work per step than Latent-DPS.
      expect(psld.report.loop.autoencoderDispatches).toBeGreaterThan(dps.report.loop.autoencoderDispatches);
      await imageOf(psld);
      expect(live()).toBe(start);
    } finally {
      sr.dispose();
    }
  }, 300_000);

  it('replayed steps restore every method bit for bit like recorded ones, with the same dispatches; nothing leaks', async () => {
    const sr = makeDegradation(engine, 'sr4', IMAGE, IMAGE).operator;
    try {
      const ySr = await measurement(sr, 33);
      const cases: [RestoreMethod, Partial<RestoreModels>, Degradation, Tensor, Partial<RestoreOptions>][] = [
        ['silo-cnn', { cnn }, inpaint, yInpaint, { residualEvery: 1 }],
        ['silo-rg', { readout }, inpaint, yInpaint, {}],
        ['latent-dps', { vae: narrowVae }, sr, ySr, { imageSize: [IMAGE, IMAGE] }],
        ['psld', { vae: narrowVae }, inpaint, yInpaint, {}],
      ];
      for (const [method, extra, A, y, o] of cases) {
        // Every step adds noise (the last timestep is 1, not 0): one captured, three replayed. The
        // previews after steps 2 and 3 copy x0 out of replays encoded while the step before ran.
        const previews: Record<string, number[][]> = { recorded: [], replayed: [] };
        const opts = (kind: string): RestoreOptions => ({ method, steps: 4, seed: 5, previewEvery: 1, onPreview: (p) => void previews[kind]!.push(Array.from(p.image)), ...o });
        const recorded = await restore(engine, models(extra), A, y, { ...opts('recorded'), replay: false });
        const recordedLatent = Array.from(await recorded.latent.read());
        const recordedImage = Array.from(await imageOf(recorded));
        // After one run: constants the operators upload on first use are resident.
        const start = live();
        const replayed = await restore(engine, models(extra), A, y, opts('replayed'));
        expect(recorded.report.loop.replayedSteps, method).toBe(0);
        expect(replayed.report.loop.replayedSteps, method).toBe(3);
        expect(replayed.report.loop.dispatches, method).toBe(recorded.report.loop.dispatches);
        expect(replayed.report.loop.autoencoderDispatches, method).toBe(recorded.report.loop.autoencoderDispatches);
        expect(replayed.report.residuals, method).toEqual(recorded.report.residuals);
        expect(replayed.report.finalResidual, method).toBe(recorded.report.finalResidual);
        expect(Array.from(await replayed.latent.read()), `${method}: the same latent`).toEqual(recordedLatent);
        expect(Array.from(await imageOf(replayed)), `${method}: the same image`).toEqual(recordedImage);
        expect(previews.replayed!.length, method).toBe(3);
        expect(previews.replayed, `${method}: the same previews`).toEqual(previews.recorded);
        expect(replayed.report.loop.perStepExposedEncodeMs).toBeLessThanOrEqual(replayed.report.loop.perStepEncodeMs);
        expect(live(), `${method}: the program's buffers went back`).toBe(start);
      }
    } finally {
      sr.dispose();
    }
  }, 600_000);

  it('rejects bad arguments with clear errors, leaving nothing allocated', async () => {
    const start = live();
    const base: RestoreOptions = { method: 'silo-cnn', steps: STEPS, seed: 1 };
    const fails = (m: RestoreModels, o: RestoreOptions, A: Degradation = inpaint) => restore(engine, m, A, yInpaint, o);
    await expect(fails(models({ cnn }), { ...base, steps: 0 })).rejects.toThrow(/steps must be a positive integer, got 0/);
    await expect(fails(models({ cnn }), { ...base, steps: 1.5 })).rejects.toThrow(/steps must be a positive integer, got 1.5/);
    await expect(fails(models({ cnn }), { ...base, method: 'dps' as RestoreMethod })).rejects.toThrow(/unknown method "dps" \(known: silo-cnn, silo-rg, latent-dps, psld\)/);
    await expect(fails(models(), base)).rejects.toThrow(/method silo-cnn needs a CNN operator \(models\.cnn or models\.preserve\)/);
    await expect(fails(models({ cnn }), { ...base, method: 'silo-rg' })).rejects.toThrow(/method silo-rg needs the readout operator \(models\.readout\)/);
    await expect(fails(models({ cnn }), { ...base, seed: -1 })).rejects.toThrow(/seed must be a non-negative integer/);
    await expect(fails(models({ cnn }), { ...base, sigma: -0.1 })).rejects.toThrow(/sigma must be >= 0/);
    await expect(fails(models(), { ...base, method: 'latent-dps' }, makeDegradationStub('sr4'))).rejects.toThrow(/sr4 changes the image size: pass imageSize/);
    expect(live()).toBe(start);
    // A sigma embedding of the wrong width is found after E(y) ran: the error names both widths, and the
    // encode phase's tensors are freed.
    const narrow = upload(new Float32Array(64), [1, 64], 'sigma_emb_64');
    const startNarrow = live();
    await expect(fails(models({ cnn, sigmaEmb: narrow }), base)).rejects.toThrow(/takes a 128-d embedding .* but got \[1, 64\]/);
    expect(live()).toBe(startNarrow);
    // A bad step option is found in the loop's first step, after E(y) and z_T exist.
    await expect(fails(models({ cnn }), { ...base, gradClamp: 0 })).rejects.toThrow(/gradClamp must be positive, got 0/);
    expect(live()).toBe(startNarrow);
  }, 300_000);
});

/** A size-changing operator that is never applied: restore() must refuse it before any GPU work. */
function makeDegradationStub(name: string): Degradation {
  const fail = () => {
    throw new Error('not to be called');
  };
  return { name, apply: fail, adjoint: fail, upsampleMeasurement: fail, dispose: () => {} };
}
