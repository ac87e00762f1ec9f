// Training a SILO operator for one autoencoder and one degradation, as SILO's trainer does: the CNN's
// H(E(x), e_sigma), or the readout operator's R(UNet features of E(x), e_sigma) (operators.ts), is
// fitted to E(A(x) + sigma n) with sigma drawn once per batch (U(0, 0.04) for the CNN, U(0, 0.1) for the
// readout), an L1 (or MSE) loss against the target optionally clamped to [-4, 4], and Adam (AdamW). The
// latents come from the frozen encoder on the GPU (or from a cache of fixed crops, sources.ts); one
// optimizer step may sum several micro-batches. Validation compares H with the identity operator (E(x) as the guess for
// E(A(x))) on held-out images, in the latent and, with a decoder, after decoding against A(x).

import type { Engine } from '../../engine/device.js';
import type { Tensor } from '../../engine/tensor.js';
import { runProgram } from '../../engine/recorder.js';
import { SiloError, assertArg } from '../../engine/errors.js';
import { regressionLoss, type LossKind } from '../../engine/ops/loss.js';
import { clamp } from '../../engine/ops/elementwise.js';
import type { Degradation } from '../degradations/types.js';
import { addMeasurementNoise } from '../degradations/noise.js';
import type { TrainableOperator } from './operators.js';
import { psnr } from '../metrics.js';
import { Adam, type AdamOptions, type NamedParameter } from './adam.js';
import { GradAccumulator } from './accumulate.js';
import { AugmentRng } from './augment.js';
import type { LatentCodec } from './latent-codec.js';
import type { SigmaEmbedder } from './sigma-embedding.js';
import type { ImageBatch } from './data.js';

/** A batch of training pairs on the GPU: z = E(x), target = E(A(x) + sigma n), one sigma per sample. */
export interface LatentPairs {
  z: Tensor;
  target: Tensor;
  sigmas: number[];
}

export interface TrainerSetup {
  codec: LatentCodec;
  /** e_sigma for the operator's sigma map; required when the operator is sigma-conditioned. */
  embedder?: SigmaEmbedder;
  degradation: Degradation;
  /** sigma ~ U(lo, hi), once per batch, in [-1, 1] image units (SILO's CNN: [0, 0.04]). */
  sigmaRange: [number, number];
  loss: LossKind;
  clamp?: [number, number];
  /** Seeds the sigma draws, the measurement noise and the encoder's posterior samples. */
  seed: number;
}

export interface StepReport {
  step: number;
  /** Mean loss over the step's micro-batches (before the update). */
  loss: number;
  lr: number;
  sigmas: number[];
}

export interface ValidationImageReport {
  name: string;
  latentL1: number;
  identityL1: number;
  /** PSNR (dB) of D(H(E(x))) and of D(E(x)) against A(x); only with a decoder. */
  psnr?: number;
  identityPsnr?: number;
  /**
   * Latent L1 of the round trip E(A(D(E(x))) + sigma n) (same noise): the degradation applied through the
   * autoencoder, the reference a good operator approaches without running it. Only with a decoder.
   */
  roundTripL1?: number;
}

export interface ValidationReport {
  step: number;
  sigma: number;
  latentL1: number;
  identityL1: number;
  psnr?: number;
  identityPsnr?: number;
  roundTripL1?: number;
  images: ValidationImageReport[];
}

/** Training diverged or was given something it cannot learn from: says which step and what. */
export class TrainingError extends SiloError {}

const mean = (v: readonly number[]) => v.reduce((a, b) => a + b, 0) / v.length;

export class OperatorTrainer {
  readonly params: NamedParameter[];
  readonly opt: Adam;
  /** Draws sigma per batch; its state goes into checkpoints. */
  readonly sigmaRng: AugmentRng;
  /** Batches encoded so far (the noise and posterior seeds count on from it). */
  encoded = 0;
  /** Round-trip L1 per held-out image and sigma (it does not depend on the operator: computed once). */
  private readonly roundTrips = new Map<string, number>();

  constructor(
    readonly engine: Engine,
    readonly op: TrainableOperator,
    readonly setup: TrainerSetup,
    adam: AdamOptions,
  ) {
    const [lo, hi] = setup.sigmaRange;
    assertArg(Number.isFinite(lo) && Number.isFinite(hi) && lo >= 0 && lo <= hi, `train: sigma range [${lo}, ${hi}] must satisfy 0 <= lo <= hi`);
    assertArg(op.inChannels === setup.codec.channels && op.outChannels === setup.codec.channels, `train: the ${op.kind} operator maps ${op.inChannels} -> ${op.outChannels} channels, the encoder ${setup.codec.name} makes ${setup.codec.channels}`);
    if (op.sigmaCondition) {
      assertArg(setup.embedder, 'train: the operator is sigma-conditioned, so it needs a sigma embedding');
      assertArg(setup.embedder.dim === op.sigmaEmbDim, `train: the operator takes a ${op.sigmaEmbDim}-wide sigma embedding, the embedder makes ${setup.embedder.dim}`);
    }
    this.params = op.parameters();
    this.opt = new Adam(engine, this.params, adam);
    this.sigmaRng = new AugmentRng((setup.seed ^ 0x5bd1e995) >>> 0);
  }

  /** The image side the operator's latent size needs. */
  get imageSize(): number {
    return this.op.latentSize * this.setup.codec.factor;
  }

  checkImages(shape: readonly number[], what: string): void {
    const s = this.imageSize;
    assertArg(shape.length === 4 && shape[1] === 3 && shape[2] === s && shape[3] === s, `train: ${what} are ${JSON.stringify(shape)}, the operator's ${this.op.latentSize}x${this.op.latentSize} latent needs [N, 3, ${s}, ${s}] (latent side x ${this.setup.codec.factor})`);
  }

  /** The next batch's sigma (U(lo, hi)). */
  drawSigma(): number {
    const [lo, hi] = this.setup.sigmaRange;
    return this.sigmaRng.uniform(lo, hi);
  }

  private seeds(counter: number): [bigint, bigint, bigint] {
    const base = (BigInt(this.setup.seed) << 32n) + BigInt(counter) * 3n;
    return [base, base + 1n, base + 2n];
  }

  /** E(x) and E(A(x) + sigma n) (the measurement brought to the encoder's size where A changes it), on the GPU. */
  async encode(batch: { data: Float32Array; shape: readonly number[] }, sigma: number): Promise<LatentPairs> {
    this.checkImages(batch.shape, 'the images');
    const [noiseSeed, seedZ, seedT] = this.seeds(this.encoded++);
    const { codec, degradation } = this.setup;
    const { result } = await runProgram(this.engine, 'train: encode', (rec) =>
      rec.engine.tidy(() => {
        const x = rec.engine.tensor(batch.data, batch.shape, 'f32', 'train_images');
        let y = addMeasurementNoise(rec, degradation.apply(rec, x), sigma, noiseSeed);
        if (degradation.upsampleMeasurement) y = degradation.upsampleMeasurement(rec, y);
        return { z: codec.encode(rec, x, seedZ), target: codec.encode(rec, y, seedT) };
      }),
    );
    return { ...result, sigmas: new Array<number>(batch.shape[0]!).fill(sigma) };
  }

  /** Encodes a batch of crops with a freshly drawn sigma. */
  encodeBatch(batch: ImageBatch): Promise<LatentPairs> {
    return this.encode(batch, this.drawSigma());
  }

  /**
   * One optimizer step on the given micro-batches (their gradients summed, the mean taken): the loss of
   * each at the current weights, then the update. A loss that is not finite stops training by name.
   */
  async step(micro: readonly LatentPairs[]): Promise<StepReport> {
    assertArg(micro.length >= 1, 'train: a step needs at least one micro-batch');
    const { op, params, opt, setup } = this;
    const step = opt.step + 1;
    const { result } = await runProgram(this.engine, `train: step ${step}`, (rec) =>
      rec.engine.tidy(() => {
        const acc = micro.length > 1 ? new GradAccumulator(params.map((p) => p.name)) : null;
        const losses: Tensor[] = [];
        let single: Tensor[] | null = null;
        for (const m of micro) {
          const emb = op.sigmaCondition ? setup.embedder!.embed(rec, m.sigmas) : undefined;
          const input = op.input(rec, m.z);
          const pass = op.trainingPass(rec, input, emb);
          const l = regressionLoss(rec, pass.output, m.target, { kind: setup.loss, clamp: setup.clamp });
          losses.push(l.loss);
          const g = pass.grads(l.grad);
          if (acc) acc.add(rec, g);
          else single = params.map((p) => g[p.name]!);
        }
        if (acc) {
          const { grads, gradScale } = acc.take();
          opt.update(rec, grads, { gradScale });
          for (const g of grads) g.dispose();
        } else opt.update(rec, single!);
        return { losses };
      }),
    );
    await op.sync();
    const values: number[] = [];
    for (const l of result.losses) {
      values.push((await l.read())[0]!);
      l.dispose();
    }
    const loss = mean(values);
    if (!Number.isFinite(loss)) {
      throw new TrainingError(`train: the loss at step ${step} is ${loss} (micro-batch losses ${values.join(', ')}): training diverged; lower the learning rate or set a gradient clip, and resume from the last checkpoint`);
    }
    return { step, loss, lr: opt.lrAt(step), sigmas: micro.flatMap((m) => m.sigmas) };
  }

  /**
   * Held-out metrics at one sigma: the mean latent L1 of H(E(x), e_sigma) and of E(x) against
   * E(A(x) + sigma n), and with a decoder the PSNR of D(H(E(x))) and D(E(x)) against A(x) (range [-1, 1];
   * brought to the image size first where A shrinks it).
   */
  async validate(images: { name: string; data: Float32Array; shape: readonly number[] }[], sigma: number): Promise<ValidationReport> {
    assertArg(images.length > 0, 'validate: no held-out images');
    const { op, setup } = this;
    const decode = setup.codec.canDecode;
    const reports: ValidationImageReport[] = [];
    for (const [i, img] of images.entries()) {
      this.checkImages(img.shape, `held-out image "${img.name}"`);
      assertArg(img.shape[0] === 1, `validate: "${img.name}" must be one image`);
      // Fixed seeds per image, so every validation sees the same noise and posterior samples.
      const base = (BigInt(setup.seed) << 32n) + 0xffff0000n + BigInt(i) * 3n;
      const tripKey = `${i} ${img.name} ${sigma}`;
      const trip = decode && !this.roundTrips.has(tripKey);
      const { result } = await runProgram(this.engine, `validate ${img.name}`, (rec) =>
        rec.engine.tidy(() => {
          const x = rec.engine.tensor(img.data, img.shape, 'f32', 'held_out');
          const ax = setup.degradation.apply(rec, x);
          const up = setup.degradation.upsampleMeasurement?.bind(setup.degradation);
          let y = addMeasurementNoise(rec, ax, sigma, base);
          if (up) y = up(rec, y);
          const z = setup.codec.encode(rec, x, base + 1n);
          const target = setup.codec.encode(rec, y, base + 2n);
          const emb = op.sigmaCondition ? setup.embedder!.embed(rec, [sigma]) : undefined;
          const h = op.forward(rec, op.input(rec, z), emb);
          const out: Record<string, Tensor> = {
            trained: regressionLoss(rec, h, target, { kind: 'l1' }).loss,
            identity: regressionLoss(rec, z, target, { kind: 'l1' }).loss,
          };
          if (decode) {
            // The operator imitates the encoded measurement at the encoder's size: compare at that size.
            out['ax'] = up ? up(rec, ax) : ax;
            out['dh'] = clamp(rec, setup.codec.decode(rec, h), -1, 1);
            out['dz'] = clamp(rec, setup.codec.decode(rec, z), -1, 1);
          }
          if (trip) {
            let yz = addMeasurementNoise(rec, setup.degradation.apply(rec, out['dz']!), sigma, base);
            if (up) yz = up(rec, yz);
            out['trip'] = regressionLoss(rec, setup.codec.encode(rec, yz, base + 2n), target, { kind: 'l1' }).loss;
          }
          return out;
        }),
      );
      const v: Record<string, Float32Array> = {};
      for (const [k, t] of Object.entries(result)) {
        v[k] = await t.read();
        t.dispose();
      }
      const r: ValidationImageReport = { name: img.name, latentL1: v['trained']![0]!, identityL1: v['identity']![0]! };
      if (decode) {
        r.psnr = psnr(v['dh']!, v['ax']!, 2);
        r.identityPsnr = psnr(v['dz']!, v['ax']!, 2);
        if (trip) this.roundTrips.set(tripKey, v['trip']![0]!);
        r.roundTripL1 = this.roundTrips.get(tripKey)!;
      }
      reports.push(r);
    }
    const report: ValidationReport = {
      step: this.opt.step,
      sigma,
      latentL1: mean(reports.map((r) => r.latentL1)),
      identityL1: mean(reports.map((r) => r.identityL1)),
      images: reports,
    };
    if (decode) {
      report.psnr = mean(reports.map((r) => r.psnr!));
      report.identityPsnr = mean(reports.map((r) => r.identityPsnr!));
      report.roundTripL1 = mean(reports.map((r) => r.roundTripL1!));
    }
    return report;
  }

  dispose(): void {
    this.opt.dispose();
  }
}
