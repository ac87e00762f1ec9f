// Training SILO's CNN operator end to end for the real TAEF2 autoencoder (../shared/golden/taef2) on the
// photos of ../shared/assets/images: the latent pairs against a composition done by hand (CPU noise,
// separate encodes), micro-batch accumulation against one large batch, the held-out metrics against
// host arithmetic, a diverging loss refused by step, resuming bit for bit (live crops and a cache),
// resumes with other settings refused, stopping with a checkpoint, and the short proof: the loss and the
// held-out latent L1 fall within a few steps (the full proof is scripts/train-proof.sh).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { clamp } from '../../src/engine/ops/elementwise.js';
import type { BlurKernel } from '../../src/solvers/degradations/kernel-file.js';
import { runProgram } from '../../src/engine/recorder.js';
import { normalCPU } from '../../src/engine/random.js';
import { scale } from '../../src/engine/ops/elementwise.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { f32Entry, parseSafetensors, serializeSafetensors } from '../../src/formats/safetensors.js';
import { readImageFile } from '../../src/io/image-node.js';
import { TinyAutoencoder } from '../../src/models/taesd/autoencoder.js';
import { makeDegradation } from '../../src/solvers/degradations/tasks.js';
import { taesdCodec, type LatentCodec } from '../../src/solvers/training/latent-codec.js';
import { sinusoidSigmaEmbedder } from '../../src/solvers/training/sigma-embedding.js';
import { newDegradationModel } from '../../src/solvers/training/init.js';
import { cnnOperator } from '../../src/solvers/training/operators.js';
import { OperatorTrainer, TrainingError, type LatentPairs } from '../../src/solvers/training/trainer.js';
import { CropSampler, packImages, validationCrop, type NamedImage } from '../../src/solvers/training/data.js';
import { CNN_DEFAULTS, TrainSession, cnnConfigFor, type TrainSettings } from '../../src/solvers/training/session.js';
import { LatentPairCache } from '../../src/solvers/training/sources.js';
import { getEngine } from '../helpers/engine.js';
import { GOLDEN_ROOT } from '../helpers/golden.js';

const IMAGES = new URL('../../../shared/assets/images', import.meta.url).pathname;
let engine: Engine;
let ae: TinyAutoencoder;
let codec: LatentCodec;
const embedder = sinusoidSigmaEmbedder(320);
let photos: NamedImage[];

beforeAll(async () => {
  engine = await getEngine();
  const dir = `${GOLDEN_ROOT}/taef2`;
  ae = TinyAutoencoder.load(engine, { encoder: await readSafetensorsFile(`${dir}/taef2_encoder.safetensors`), decoder: await readSafetensorsFile(`${dir}/taef2_decoder.safetensors`) });
  codec = taesdCodec(ae);
  photos = [];
  for (const f of ['natural/kodim03.png', 'natural/kodim05.png', 'faces256/ffhq_69037.png', 'photos/mate_LadyBird.png', 'natural/kodim01.png', 'faces/celebahq_00234.png']) {
    photos.push({ name: f, image: await readImageFile(`${IMAGES}/${f}`) });
  }
}, 120_000);

const settings = (o: Partial<TrainSettings> = {}): TrainSettings => ({ ...CNN_DEFAULTS, task: 'gaussian_blur', size: 32, batch: 2, lr: 1e-3, ...o });

async function makeTrainer(size: number, seed = 1): Promise<{ trainer: OperatorTrainer; dispose(): void }> {
  const loaded = await newDegradationModel(engine, cnnConfigFor(codec, embedder, size), seed);
  const deg = makeDegradation(engine, 'gaussian_blur', size, size, { blurSize: 13, blurStd: 1.5 });
  const trainer = new OperatorTrainer(engine, cnnOperator(loaded.model), { codec, embedder, degradation: deg.operator, sigmaRange: [0, 0.04], loss: 'l1', clamp: [-4, 4], seed: 7 }, { lr: 1e-3 });
  return { trainer, dispose: () => (trainer.dispose(), deg.operator.dispose(), loaded.dispose()) };
}

async function readAll(ts: { tensor: { read(): Promise<Float32Array> } }[]): Promise<Float32Array[]> {
  return Promise.all(ts.map((p) => p.tensor.read()));
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe('OperatorTrainer (TAEF2, Gaussian blur)', () => {
  it('pairs: z = E(x) and target = E(A(x) + sigma n) with the noise drawn from the seed', async () => {
    const { trainer, dispose } = await makeTrainer(32);
    try {
      const batch = new CropSampler(photos, { size: 32 }, 2).next(2);
      const pairs = await trainer.encode(batch, 0.03);
      // By hand: A(x) read back, the seed's normals added on the host, each encoded on its own.
      const { result } = await runProgram(engine, 'by hand', (rec) =>
        rec.engine.tidy(() => {
          const x = rec.engine.tensor(batch.data, batch.shape, 'f32');
          return { ax: trainer.setup.degradation.apply(rec, x), z: ae.encode(rec, scale(rec, x, 0.5, 0.5)) };
        }),
      );
      const ax = await result.ax.read();
      const n = normalCPU(ax.length, 7n << 32n);
      const y = ax.map((v, i) => v + 0.03 * n[i]!);
      const { result: t } = await runProgram(engine, 'by hand target', (rec) => rec.engine.tidy(() => ae.encode(rec, scale(rec, rec.engine.tensor(y, batch.shape, 'f32'), 0.5, 0.5))));
      expect(pairs.sigmas).toEqual([0.03, 0.03]);
      expect(pairs.z.shape).toEqual([2, 32, 4, 4]);
      expect(maxDiff(await pairs.z.read(), await result.z.read())).toBe(0);
      expect(maxDiff(await pairs.target.read(), await t.read())).toBeLessThan(1e-4);
      // The noise matters: a target without it differs.
      expect(maxDiff(await pairs.target.read(), await t.read())).toBeLessThan(maxDiff(await pairs.target.read(), await pairs.z.read()));
      for (const v of [pairs.z, pairs.target, result.ax, result.z, t]) v.dispose();
    } finally {
      dispose();
    }
  }, 120_000);

  it('two micro-batches of 2 take the same step as one batch of 4', async () => {
    const a = await makeTrainer(32, 3);
    const b = await makeTrainer(32, 3);
    try {
      const sampler = new CropSampler(photos, { size: 32 }, 5);
      const p1 = await a.trainer.encode(sampler.next(2), 0.01);
      const p2 = await a.trainer.encode(sampler.next(2), 0.02);
      const cat = async (a: { read(): Promise<Float32Array> }, b: { read(): Promise<Float32Array> }) => engine.tensor(Float32Array.from([...(await a.read()), ...(await b.read())]), [4, 32, 4, 4]);
      const big: LatentPairs = { z: await cat(p1.z, p2.z), target: await cat(p1.target, p2.target), sigmas: [...p1.sigmas, ...p2.sigmas] };
      const ra = await a.trainer.step([p1, p2]);
      const rb = await b.trainer.step([big]);
      expect(Math.abs(ra.loss - rb.loss)).toBeLessThan(1e-6);
      const [wa, wb] = [await readAll(a.trainer.params), await readAll(b.trainer.params)];
      let worst = 0;
      wa.forEach((v, i) => (worst = Math.max(worst, maxDiff(v, wb[i]!))));
      // Adam's first step moves each weight by ~lr; summation order leaves far less than that.
      expect(worst).toBeLessThan(2e-5);
      const w0 = await newDegradationModel(engine, cnnConfigFor(codec, embedder, 32), 3);
      const init = await readAll(w0.model.parameters());
      w0.dispose();
      expect(maxDiff(wa[0]!, init[0]!)).toBeGreaterThan(5e-4);
      for (const v of [p1.z, p1.target, p2.z, p2.target, big.z, big.target]) v.dispose();
    } finally {
      a.dispose();
      b.dispose();
    }
  }, 120_000);

  it('validation: latent L1 of H and of the identity, decoded PSNRs, against host arithmetic', async () => {
    const { trainer, dispose } = await makeTrainer(32);
    try {
      const img = { name: 'kodim03', ...packImages([validationCrop(photos[0]!.image, 32)]) };
      const r = await trainer.validate([img], 0);
      // Host: encode x and A(x) (sigma 0), H(z), the decodes, then the metrics.
      const { result } = await runProgram(engine, 'host check', (rec) =>
        rec.engine.tidy(() => {
          const x = rec.engine.tensor(img.data, img.shape, 'f32');
          const ax = trainer.setup.degradation.apply(rec, x);
          const z = codec.encode(rec, x, 0n);
          const t = codec.encode(rec, ax, 0n);
          const h = trainer.op.forward(rec, [z], embedder.embed(rec, [0]));
          const dz = codec.decode(rec, z);
          const trip = codec.encode(rec, trainer.setup.degradation.apply(rec, clamp(rec, dz, -1, 1)), 0n);
          return { ax, z, t, h, dh: codec.decode(rec, h), dz, trip };
        }),
      );
      const v = Object.fromEntries(await Promise.all(Object.entries(result).map(async ([k, t]) => [k, await t.read()] as const)));
      const l1 = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + Math.abs(x - b[i]!), 0) / a.length;
      const psnr = (a: Float32Array, b: Float32Array) => 10 * Math.log10(4 / (a.reduce((s, x, i) => s + (Math.max(-1, Math.min(1, x)) - b[i]!) ** 2, 0) / a.length));
      expect(r.identityL1).toBeCloseTo(l1(v['z']!, v['t']!), 5);
      expect(r.latentL1).toBeCloseTo(l1(v['h']!, v['t']!), 5);
      expect(r.psnr!).toBeCloseTo(psnr(v['dh']!, v['ax']!), 3);
      expect(r.identityPsnr!).toBeCloseTo(psnr(v['dz']!, v['ax']!), 3);
      // The round trip E(A(D(E(x)))) through the autoencoder, computed once per image and sigma.
      expect(r.roundTripL1!).toBeCloseTo(l1(v['trip']!, v['t']!), 5);
      expect(r.roundTripL1!).toBeLessThan(r.identityL1);
      expect((await trainer.validate([img], 0)).roundTripL1).toBe(r.roundTripL1);
      expect(r.images.map((i) => i.name)).toEqual(['kodim03']);
      for (const t of Object.values(result)) t.dispose();
    } finally {
      dispose();
    }
  }, 120_000);

  it('a loss that is not finite stops training, naming the step', async () => {
    const { trainer, dispose } = await makeTrainer(32);
    try {
      const z = engine.tensor(new Float32Array(2 * 32 * 16).fill(0.1), [2, 32, 4, 4]);
      const target = engine.tensor(new Float32Array(2 * 32 * 16).fill(NaN), [2, 32, 4, 4]);
      await expect(trainer.step([{ z, target, sigmas: [0, 0] }])).rejects.toThrow(TrainingError);
      await expect(trainer.step([{ z, target, sigmas: [0, 0] }])).rejects.toThrow(/loss at step \d+ is NaN/);
      z.dispose();
      target.dispose();
      expect(() => trainer.checkImages([1, 3, 40, 40], 'images')).toThrow(/needs \[N, 3, 32, 32\]/);
    } finally {
      dispose();
    }
  }, 120_000);
});

describe('TrainSession', () => {
  const train = () => photos.slice(0, 4);
  const held = () => photos.slice(4);

  async function run(s: TrainSettings, steps: number, resume?: Uint8Array): Promise<{ params: Float32Array[]; checkpoint: Uint8Array; losses: number[] }> {
    const session = await TrainSession.create(engine, { settings: s, codec, embedder, train: train(), validate: [], ...(resume ? { resume: parseSafetensors(resume, 'ckpt') } : {}) });
    try {
      let checkpoint: Uint8Array = new Uint8Array();
      const r = await session.run({ steps, saveCheckpoint: async (b) => void (checkpoint = b) });
      return { params: await readAll(session.trainer.params), checkpoint, losses: r.steps.map((x) => x.loss) };
    } finally {
      session.dispose();
    }
  }

  for (const cache of [0, 6]) {
    it(`resuming continues bit for bit (${cache ? 'cached crops' : 'live crops with jitter'})`, async () => {
      const s = settings({ cache, micro: 2 });
      const straight = await run(s, 4);
      const first = await run(s, 2);
      const resumed = await run(s, 4, first.checkpoint);
      expect([...first.losses, ...resumed.losses]).toEqual(straight.losses);
      resumed.params.forEach((p, i) => expect(p).toEqual(straight.params[i]));
    }, 300_000);
  }

  it('a resume with other settings or data is refused by name; so is a file that is not a checkpoint', async () => {
    const first = await run(settings(), 1);
    const file = () => parseSafetensors(first.checkpoint, 'ckpt.safetensors');
    await expect(TrainSession.create(engine, { settings: settings({ lr: 2e-3 }), codec, embedder, train: train(), validate: [], resume: file() })).rejects.toThrow(/ckpt.safetensors: the checkpoint was trained with train_settings/);
    // The same settings built in another key order (as the page does) resume.
    const reordered = Object.fromEntries(Object.entries(settings()).reverse()) as unknown as TrainSettings;
    const again = await TrainSession.create(engine, { settings: reordered, codec, embedder, train: train(), validate: [], resume: file() });
    expect(again.trainer.opt.step).toBe(1);
    again.dispose();
    // An explicit width 1 (the page always sends one) is SILO's module, as no width is.
    const explicit = await TrainSession.create(engine, { settings: { ...settings(), width: 1 }, codec, embedder, train: train(), validate: [], resume: file() });
    expect(explicit.trainer.opt.step).toBe(1);
    explicit.dispose();
    await expect(TrainSession.create(engine, { settings: settings(), codec, embedder, train: train().slice(1), validate: [], resume: file() })).rejects.toThrow(/trained with data/);
    const op = parseSafetensors(first.checkpoint, 'x');
    expect(op.names().some((n) => n.startsWith('optimizer.'))).toBe(true);
    await expect(TrainSession.create(engine, { settings: settings(), codec, embedder, train: train(), validate: [], resume: parseSafetensors(new Uint8Array(await (async () => {
      return serializeSafetensors({ a: f32Entry([1], [1]) });
    })()), 'other.safetensors') })).rejects.toThrow(/other.safetensors: not a training checkpoint/);
  }, 300_000);

  it('held-out images never train; a stop request ends with a checkpoint at the current step', async () => {
    const all = photos.slice();
    await expect(TrainSession.create(engine, { settings: settings(), codec, embedder, train: held(), validate: held() })).rejects.toThrow(/no training images left/);
    // motion_blur needs its kernel; the other tasks take none.
    await expect(TrainSession.create(engine, { settings: settings({ task: 'motion_blur' }), codec, embedder, train: train(), validate: [] })).rejects.toThrow(/motion_blur needs its blur kernel/);
    const streak = { size: 3, kernel: new Float64Array([0, 0, 0, 0.5, 0.5, 0, 0, 0, 0]), format: 'text', fileSize: 3, name: 'k.txt' } as unknown as BlurKernel;
    await expect(TrainSession.create(engine, { settings: settings(), codec, embedder, train: train(), validate: [], motionKernel: streak })).rejects.toThrow(/a blur kernel is only used by motion_blur \(the task is/);
    const session = await TrainSession.create(engine, { settings: settings(), codec, embedder, train: all, validate: held() });
    try {
      expect(JSON.parse(session.metadata['data']!)).toEqual(train().map((t) => t.name));
      let saved = -1;
      let polls = 0;
      const r = await session.run({ steps: 10, shouldStop: () => ++polls > 2, saveCheckpoint: async (_b, step) => void (saved = step) });
      expect(r.stopped).toBe(true);
      expect(r.steps.length).toBe(2);
      expect(saved).toBe(2);
      const exported = parseSafetensors(await session.exportOperator(), 'op');
      expect(exported.names().every((n) => !n.startsWith('optimizer.'))).toBe(true);
      expect(exported.metadata?.['step']).toBe('2');
    } finally {
      session.dispose();
    }
  }, 300_000);

  it('a saved latent cache is reused only by a run it was built for', async () => {
    const s = settings({ cache: 4 });
    const session = await TrainSession.create(engine, { settings: s, codec, embedder, train: train(), validate: [] });
    try {
      const c = session.cache!.toSafetensors();
      const file = parseSafetensors(serializeSafetensors(c.tensors, c.metadata), 'cache.safetensors');
      const key = JSON.parse(c.metadata['key']!) as Record<string, unknown>;
      const again = LatentPairCache.fromSafetensors(file, c.metadata['key']!, s.seed);
      expect(again.z).toEqual(session.cache!.z);
      expect(again.sigmas).toEqual(session.cache!.sigmas);
      expect(() => LatentPairCache.fromSafetensors(file, JSON.stringify({ ...key, seed: 5 }), 5)).toThrow(/cache.safetensors: the cache was built for other data or settings/);
      // The optimizer and the loss do not change the pairs: a run at another learning rate reuses the file.
      const other = await TrainSession.create(engine, { settings: { ...s, lr: s.lr * 3, loss: 'mse' }, codec, embedder, train: train(), validate: [], cacheFile: file });
      try {
        expect(other.cache!.z).toEqual(session.cache!.z);
      } finally {
        other.dispose();
      }
      // Other crops do.
      await expect(TrainSession.create(engine, { settings: { ...s, cropScale: [0.5, 1] }, codec, embedder, train: train(), validate: [], cacheFile: file })).rejects.toThrow(/cache.safetensors: the cache was built for other data or settings/);
    } finally {
      session.dispose();
    }
  }, 300_000);

  it('short proof: on real photos the training loss and the held-out latent L1 fall within 16 steps', async () => {
    const s = settings({ size: 64, batch: 4, cache: 16, lr: 2e-3 });
    const session = await TrainSession.create(engine, { settings: s, codec, embedder, train: photos.slice(0, 4), validate: photos.slice(4) });
    try {
      const r = await session.run({ steps: 16, validation: { sigma: 0, every: 16 } });
      const losses = r.steps.map((x) => x.loss);
      const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
      expect(mean(losses.slice(-4))).toBeLessThan(0.9 * mean(losses.slice(0, 4)));
      const [v0, v1] = [r.validations[0]!, r.validations[r.validations.length - 1]!];
      expect(v1.step).toBe(16);
      expect(v1.latentL1).toBeLessThan(v0.latentL1);
      expect(v1.identityL1).toBe(v0.identityL1);
    } finally {
      session.dispose();
    }
  }, 300_000);
});
