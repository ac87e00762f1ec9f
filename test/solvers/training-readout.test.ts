// Training SILO's readout operator on the golden mini Stable Diffusion (unet_mini, vae_mini,
// clip_text_mini): the operator's input is the frozen UNet's readout features of E(x) at t = 0 under the
// empty prompt, a step's loss and update against host arithmetic, the mixing softmax following its
// logits, the loss falling, resume bit for bit, the exported folder loading as restore loads it, and
// what is refused.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { dirFolder } from '../../src/formats/folder-node.js';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import { loadDiffusersPipeline, type DiffusersPipeline } from '../../src/models/pipeline.js';
import { AggregationNetwork } from '../../src/models/silo/readout.js';
import { aggregationConfig } from '../../src/models/silo/config.js';
import { aggregationGrads } from '../../src/models/silo/readout-vjp.js';
import { WeightLoader } from '../../src/models/weights.js';
import { readImageFile } from '../../src/io/image-node.js';
import { sdVaeCodec, type LatentCodec } from '../../src/solvers/training/latent-codec.js';
import { unetSigmaEmbedder, type SigmaEmbedder } from '../../src/solvers/training/sigma-embedding.js';
import { readoutPrior } from '../../src/solvers/training/readout-prior.js';
import type { ReadoutPrior } from '../../src/solvers/training/operators.js';
import { CropSampler, type NamedImage } from '../../src/solvers/training/data.js';
import { READOUT_DEFAULTS, TrainSession, type TrainSettings } from '../../src/solvers/training/session.js';
import { getEngine } from '../helpers/engine.js';
import { miniSdFolder } from '../helpers/sd-folder.js';

const IMAGES = new URL('../../../shared/assets/images', import.meta.url).pathname;
let engine: Engine;
let tmp: string;
let pipe: DiffusersPipeline;
let codec: LatentCodec;
let embedder: SigmaEmbedder;
let prior: ReadoutPrior;
let photos: NamedImage[];

beforeAll(async () => {
  engine = await getEngine();
  tmp = mkdtempSync(join(tmpdir(), 'silo-readout-train-'));
  const sd = dirFolder(miniSdFolder(tmp));
  pipe = await loadDiffusersPipeline(engine, sd, { components: ['unet', 'vae', 'text_encoder', 'tokenizer'], dtype: 'f32' });
  codec = sdVaeCodec(pipe.vae!);
  embedder = unetSigmaEmbedder(pipe.unet!);
  prior = await readoutPrior(engine, pipe.unet!, pipe.tokenizer!, pipe.textEncoder!);
  photos = [];
  for (const f of ['natural/kodim03.png', 'natural/kodim05.png', 'faces256/ffhq_69037.png']) photos.push({ name: f, image: await readImageFile(`${IMAGES}/${f}`) });
}, 180_000);
afterAll(() => {
  pipe?.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

// 64x64 crops: an 8x8 latent, the mini UNet's size multiple.
const settings = (o: Partial<TrainSettings> = {}): TrainSettings => ({ ...READOUT_DEFAULTS, task: 'sr4', size: 64, batch: 2, cache: 4, lr: 1e-3, ...o });
const create = (s: TrainSettings, extra: { resume?: Uint8Array } = {}) =>
  TrainSession.create(engine, { settings: s, codec, embedder, prior, train: photos, validate: [], ...(extra.resume ? { resume: parseSafetensors(extra.resume, 'ckpt.safetensors') } : {}) });

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

async function readAll(ts: { tensor: { read(): Promise<Float32Array> } }[]): Promise<Float32Array[]> {
  return Promise.all(ts.map((p) => p.tensor.read()));
}

describe('readout operator training (mini SD)', () => {
  it('a step: the loss of R(UNet features of z at t = 0, empty prompt) and an AdamW update by its gradients, against host arithmetic', async () => {
    const lr = 1e-3;
    const session = await create(settings({ lr }));
    try {
      const { trainer } = session;
      const net = session.model as AggregationNetwork;
      // Uniform mixing at the start (dhf's torch.ones logits).
      expect(Array.from(net.mixing)).toEqual(new Array(12).fill(net.mixing[0]));
      expect(net.mixing[0]).toBeCloseTo(1 / 12, 7);
      const sigma = 0.05;
      const pairs = await trainer.encode(new CropSampler(photos, { size: 64 }, 3).next(2), sigma);
      // By hand: the text encoder on the empty prompt for both samples, the UNet's readout at t = 0, R.
      const ids = pipe.tokenizer!.call('').inputIds;
      const { result } = await runProgram(engine, 'by hand', (rec) =>
        rec.engine.tidy(() => {
          const ctx = pipe.textEncoder!.forward(rec, [...ids, ...ids], [2, ids.length]).lastHiddenState;
          const feats = pipe.unet!.forward(rec, pairs.z, 0, ctx, { readout: true }).readout!;
          const emb = embedder.embed(rec, [sigma, sigma]);
          return { feats, emb, out: net.forward(rec, feats, emb) };
        }),
      );
      expect(result.feats).toHaveLength(12);
      const out = await result.out.read();
      const target = await pairs.target.read();
      const diff = out.map((v, i) => v - Math.min(4, Math.max(-4, target[i]!)));
      const hostLoss = diff.reduce((a, d) => a + Math.abs(d), 0) / diff.length;
      // d mean|d| / d out = sign(d) / N; the parameter gradients through R alone (the UNet is frozen).
      const cot = engine.tensor(diff.map((d) => Math.sign(d) / diff.length), result.out.shape, 'f32');
      const { result: g } = await runProgram(engine, 'grads by hand', (rec) => aggregationGrads(rec, net, result.feats, result.emb, cot).params);
      const before = await readAll(trainer.params);
      const r = await trainer.step([pairs]);
      const after = await readAll(trainer.params);
      expect(Math.abs(r.loss - hostLoss)).toBeLessThan(1e-5 * hostLoss);
      // AdamW's first step (weight decay 0): -lr g / (|g| + eps) after bias correction.
      // Checked on every element, asserted once per tensor on its worst element (a per-element expect costs
      // seconds over hundreds of thousands of parameters).
      let checked = 0;
      for (const [k, p] of trainer.params.entries()) {
        const gv = await g[p.name]!.read();
        const moved = after[k]!.map((v, i) => v - before[k]![i]!);
        let worstStep = 0;
        let worstExcess = -Infinity;
        let worstAt = -1;
        for (let i = 0; i < gv.length; i++) {
          worstStep = Math.max(worstStep, Math.abs(moved[i]!));
          if (Math.abs(gv[i]!) > 1e-6) {
            // Within f32 rounding of the parameter (one ulp) and of the update.
            const expected = (-lr * gv[i]!) / (Math.abs(gv[i]!) + 1e-8);
            const excess = Math.abs(moved[i]! - expected) - (1e-4 * lr + 1.2e-7 * Math.abs(before[k]![i]!));
            if (excess > worstExcess) [worstExcess, worstAt] = [excess, i];
            checked++;
          }
        }
        expect(worstStep, `${p.name}: largest step`).toBeLessThanOrEqual(lr * 1.0001);
        if (worstAt >= 0) expect(worstExcess, `${p.name}[${worstAt}]: moved ${moved[worstAt]} for gradient ${gv[worstAt]}`).toBeLessThan(0);
      }
      expect(checked).toBeGreaterThan(1000);
      expect(trainer.params.map((p) => p.name)).toContain('mixing_weights');
      expect(trainer.params.some((p) => p.name.includes('emb_layers'))).toBe(false);
      // The softmax the next forward folds in follows the updated logits.
      const logits = await net.mixingLogits!.read();
      const e = Array.from(logits, (v) => Math.exp(v));
      expect(maxDiff(net.mixing, e.map((v) => v / e.reduce((a, b) => a + b)))).toBeLessThan(1e-7);
      expect(Math.max(...net.mixing) - Math.min(...net.mixing)).toBeGreaterThan(1e-5);
      for (const t of [...result.feats, result.emb, result.out, cot, pairs.z, pairs.target, ...Object.values(g)]) t.dispose();
    } finally {
      session.dispose();
    }
  }, 300_000);

  it('the loss falls on a cache of 4 crops', async () => {
    const session = await create(settings({ lr: 2e-3 }));
    try {
      const l = (await session.run({ steps: 12 })).steps.map((s) => s.loss);
      const mean = (v: number[]) => v.reduce((a, b) => a + b) / v.length;
      expect(mean(l.slice(-3))).toBeLessThan(0.9 * mean(l.slice(0, 3)));
    } finally {
      session.dispose();
    }
  }, 600_000);

  it('resumes bit for bit, and exports the folder restore --operator loads (config.json + weights.safetensors)', async () => {
    const run = async (steps: number, resume?: Uint8Array) => {
      const session = await create(settings(), { resume });
      try {
        let checkpoint: Uint8Array = new Uint8Array();
        const r = await session.run({ steps, saveCheckpoint: async (b) => void (checkpoint = b) });
        return { session, params: await readAll(session.trainer.params), checkpoint, losses: r.steps.map((x) => x.loss) };
      } catch (e) {
        session.dispose();
        throw e;
      }
    };
    const straight = await run(4);
    const first = await run(2);
    first.session.dispose();
    const resumed = await run(4, first.checkpoint);
    try {
      expect([...first.losses, ...resumed.losses]).toEqual(straight.losses);
      resumed.params.forEach((p, i) => expect(p).toEqual(straight.params[i]));
      expect(Array.from((resumed.session.model as AggregationNetwork).mixing)).toEqual(Array.from((straight.session.model as AggregationNetwork).mixing));

      // The export, loaded as restore loads a readout folder, computes what the trained network does.
      const cfg = aggregationConfig(JSON.parse(resumed.session.operatorFolderConfig()!) as Record<string, unknown>);
      expect(cfg).toEqual(resumed.session.operatorConfig);
      expect(cfg).toMatchObject({ latentSize: 8, outputHeadChannels: 4, sigmaEmbDim: 128, projectionDim: 384, featureDims: [64, 64, 64, 64, 64, 64, 64, 64, 64, 32, 32, 32] });
      const file = parseSafetensors(await resumed.session.exportOperator(), 'weights.safetensors');
      expect(file.metadata?.['step']).toBe('4');
      const loaded = WeightLoader.load(engine, file, { dtype: 'f32' }, (w) => new AggregationNetwork(w, cfg));
      try {
        const z = engine.tensor(new Float32Array(2 * 4 * 8 * 8).map((_, i) => Math.sin(i)), [2, 4, 8, 8], 'f32');
        const op = resumed.session.trainer.op;
        const { result } = await runProgram(engine, 'export check', (rec) =>
          rec.engine.tidy(() => {
            const feats = op.input(rec, z);
            const emb = embedder.embed(rec, [0.02, 0.07]);
            return { a: op.forward(rec, feats, emb), b: loaded.model.forward(rec, feats, emb) };
          }),
        );
        expect(maxDiff(await result.a.read(), await result.b.read())).toBeLessThan(1e-6);
        for (const t of [z, result.a, result.b]) t.dispose();
      } finally {
        loaded.dispose();
      }
    } finally {
      straight.session.dispose();
      resumed.session.dispose();
    }
  }, 600_000);

  it('refuses a readout run without the prior, a widened readout, a crop the UNet cannot take, and a CNN checkpoint', async () => {
    await expect(TrainSession.create(engine, { settings: settings(), codec, embedder, train: photos, validate: [] })).rejects.toThrow(/the readout operator reads the prior UNet's features: give the prior/);
    await expect(create(settings({ width: 2 }))).rejects.toThrow(/width 2 widens the CNN operator only/);
    await expect(create(settings({ size: 32 }))).rejects.toThrow(/crop size 32 gives a 4x4 latent; the prior UNet needs a multiple of 8 \(crops a multiple of 64\)/);
    const cnn = await TrainSession.create(engine, { settings: { ...settings(), operator: 'cnn', sigmaRange: [0, 0.04] }, codec, embedder, train: photos, validate: [] });
    let ckpt: Uint8Array = new Uint8Array();
    try {
      await cnn.run({ steps: 1, saveCheckpoint: async (b) => void (ckpt = b) });
    } finally {
      cnn.dispose();
    }
    await expect(create(settings(), { resume: ckpt })).rejects.toThrow(/ckpt.safetensors: the checkpoint was trained with train_settings/);
  }, 300_000);
});
