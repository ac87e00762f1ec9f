// Where each training step's latent pairs come from:
// - liveSource: new crops every step, encoded on the GPU (sigma per batch, as SILO's trainer);
// - LatentPairCache: a fixed set of crops encoded once (each encoded batch with its own sigma), then
//   batches drawn from it in epoch-shuffled order. Far cheaper when the encoder dominates; it can be saved
//   as safetensors and reused by a run with the same data, crops and encoder (checked by a key).
// Both report their position (`state`) so a checkpoint resumes the same stream.

import type { Engine } from '../../engine/device.js';
import { assertArg, SiloError } from '../../engine/errors.js';
import { f32Entry, type SafetensorsEntry, type TensorSource } from '../../formats/safetensors.js';
import { AugmentRng } from './augment.js';
import { EpochOrder, type CropSampler, type SamplerState } from './data.js';
import type { LatentPairs, OperatorTrainer } from './trainer.js';

export interface PairSource {
  /** A label for logs ("live crops", "cache of 256 crops"). */
  readonly label: string;
  /** The micro-batches of the next step (the caller frees their tensors). */
  next(): Promise<LatentPairs[]>;
  state(): unknown;
  restore(state: unknown): void;
}

export function liveSource(trainer: OperatorTrainer, sampler: CropSampler, batch: number, micro = 1): PairSource {
  assertArg(Number.isInteger(batch) && batch >= 1 && Number.isInteger(micro) && micro >= 1, `train: batch ${batch} and micro-batches ${micro} must be integers >= 1`);
  return {
    label: `live crops (${micro} x ${batch} per step)`,
    async next() {
      const out: LatentPairs[] = [];
      for (let i = 0; i < micro; i++) out.push(await trainer.encodeBatch(sampler.next(batch)));
      return out;
    },
    state: () => ({ sampler: sampler.state, sigmaRng: trainer.sigmaRng.state, encoded: trainer.encoded }),
    restore(s) {
      const st = s as { sampler: SamplerState; sigmaRng: number; encoded: number };
      assertArg(st && st.sampler && Number.isInteger(st.encoded), 'train: the checkpoint has no live-crop state to resume');
      sampler.restore(st.sampler);
      trainer.sigmaRng.state = st.sigmaRng;
      trainer.encoded = st.encoded;
    },
  };
}

export class LatentPairCache {
  private readonly rng: AugmentRng;
  private readonly order: EpochOrder;

  private constructor(
    /** Per crop: E(x), E(A(x) + sigma n) and sigma. */
    readonly z: Float32Array[],
    readonly target: Float32Array[],
    readonly sigmas: number[],
    /** [C, h, w] of one latent. */
    readonly latentShape: number[],
    /** What the cache was built from (data, crops, encoder, degradation); a reuse must match it. */
    readonly key: string,
    seed: number,
  ) {
    this.rng = new AugmentRng((seed ^ 0x27d4eb2f) >>> 0);
    this.order = new EpochOrder(z.length, this.rng);
  }

  get size(): number {
    return this.z.length;
  }

  /** Encodes `count` crops from `sampler` in batches of `batch`, each batch with a freshly drawn sigma. */
  static async build(trainer: OperatorTrainer, sampler: CropSampler, count: number, batch: number, key: string, onProgress?: (done: number, total: number) => void): Promise<LatentPairCache> {
    assertArg(Number.isInteger(count) && count >= 1, `train: cache size ${count} must be an integer >= 1`);
    const z: Float32Array[] = [];
    const target: Float32Array[] = [];
    const sigmas: number[] = [];
    let shape: number[] = [];
    while (z.length < count) {
      const n = Math.min(batch, count - z.length);
      const pairs = await trainer.encodeBatch(sampler.next(n));
      try {
        shape = pairs.z.shape.slice(1);
        const per = pairs.z.size / n;
        const [a, b] = [await pairs.z.read(), await pairs.target.read()];
        for (let i = 0; i < n; i++) {
          z.push(a.slice(i * per, (i + 1) * per));
          target.push(b.slice(i * per, (i + 1) * per));
          sigmas.push(Math.fround(pairs.sigmas[i]!)); // as the saved f32 cache holds it, so both train alike
        }
      } finally {
        pairs.z.dispose();
        pairs.target.dispose();
      }
      onProgress?.(z.length, count);
    }
    return new LatentPairCache(z, target, sigmas, shape, key, trainer.setup.seed);
  }

  /** The cache as safetensors (z, target: [N, C, h, w]; sigma: [N]; the key in the metadata). */
  toSafetensors(): { tensors: Record<string, SafetensorsEntry>; metadata: Record<string, string> } {
    const n = this.size;
    const per = this.z[0]!.length;
    const pack = (list: Float32Array[]) => {
      const all = new Float32Array(n * per);
      list.forEach((v, i) => all.set(v, i * per));
      return f32Entry(all, [n, ...this.latentShape]);
    };
    return { tensors: { z: pack(this.z), target: pack(this.target), sigma: f32Entry(this.sigmas, [n]) }, metadata: { format: 'silo-webgpu-latent-cache/1', key: this.key } };
  }

  /** A saved cache, refused by name when it was built from anything else than `key` describes. */
  static fromSafetensors(file: TensorSource & { metadata?: Record<string, string> }, key: string, seed: number): LatentPairCache {
    const meta = file.metadata ?? {};
    if (meta['format'] !== 'silo-webgpu-latent-cache/1') throw new SiloError(`${file.source}: not a latent cache (metadata format ${JSON.stringify(meta['format'])})`);
    if (meta['key'] !== key) throw new SiloError(`${file.source}: the cache was built for other data or settings (${meta['key']}); this run needs ${key}. Delete it or pass another cache path`);
    for (const n of ['z', 'target', 'sigma']) if (!file.has(n)) throw new SiloError(`${file.source}: missing tensor "${n}"`);
    const zs = file.info('z').shape;
    const n = zs[0]!;
    const ts = file.info('target').shape;
    if (zs.length !== 4 || ts.length !== 4 || ts.some((d, i) => d !== zs[i]) || file.info('sigma').shape.join() !== String(n)) {
      throw new SiloError(`${file.source}: z ${JSON.stringify(zs)}, target ${JSON.stringify(ts)} and sigma ${JSON.stringify(file.info('sigma').shape)} do not describe one set of pairs`);
    }
    const per = zs[1]! * zs[2]! * zs[3]!;
    const [a, b] = [file.getF32('z'), file.getF32('target')];
    const split = (v: Float32Array) => Array.from({ length: n }, (_, i) => v.slice(i * per, (i + 1) * per));
    return new LatentPairCache(split(a), split(b), Array.from(file.getF32('sigma')), zs.slice(1), key, seed);
  }

  /** `n` pairs in the cache's shuffled order, uploaded. */
  batch(engine: Engine, n: number): LatentPairs {
    const idx = Array.from({ length: n }, () => this.order.next());
    const per = this.z[0]!.length;
    const pack = (list: Float32Array[]) => {
      const all = new Float32Array(n * per);
      idx.forEach((k, i) => all.set(list[k]!, i * per));
      return all;
    };
    const shape = [n, ...this.latentShape];
    return { z: engine.tensor(pack(this.z), shape, 'f32', 'cached_z'), target: engine.tensor(pack(this.target), shape, 'f32', 'cached_target'), sigmas: idx.map((k) => this.sigmas[k]!) };
  }

  source(engine: Engine, batch: number, micro = 1): PairSource {
    assertArg(Number.isInteger(batch) && batch >= 1 && Number.isInteger(micro) && micro >= 1, `train: batch ${batch} and micro-batches ${micro} must be integers >= 1`);
    return {
      label: `cache of ${this.size} crops (${micro} x ${batch} per step)`,
      next: async () => Array.from({ length: micro }, () => this.batch(engine, batch)),
      state: () => ({ rng: this.rng.state, ...this.order.state }),
      restore: (s) => {
        const st = s as { rng: number; order: number[]; pos: number; epoch?: number };
        this.order.restore(st, `train: the cache of ${this.size} crops`);
        this.rng.state = st.rng;
      },
    };
  }
}
