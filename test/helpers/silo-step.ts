// silo_step's first guided step (the golden case's step0, t = 500) built from given weight sources, for
// tests that compare two ways of holding the same weights (f16 storage, Linear layouts); optionally on a
// crop of its latents (SiloStep0Options.crop).
import type { Engine } from '../../src/engine/device.js';
import type { DType } from '../../src/engine/dtype.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { runProgram, type ProgramReport } from '../../src/engine/recorder.js';
import type { TensorSource } from '../../src/formats/safetensors.js';
import { WeightLoader, type LinearLayout } from '../../src/models/weights.js';
import { UNet2DConditionModel } from '../../src/models/unet/unet.js';
import { parseUNetConfig } from '../../src/models/unet/config.js';
import { DegradationModel } from '../../src/models/silo/cnn.js';
import { inferDegradationConfig } from '../../src/models/silo/config.js';
import { DDPMScheduler } from '../../src/solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../../src/solvers/schedulers/config.js';
import { siloStep } from '../../src/solvers/samplers/silo.js';
import { unetEpsModel } from '../../src/solvers/samplers/eps-model.js';
import { readJson, readSafetensors, subFolder } from '../../src/check/files.js';
import { goldenFiles } from './golden.js';

export interface SiloStep0Options {
  /** Weight storage dtype (activations are f32). */
  dtype: DType;
  linearLayout?: LinearLayout;
  /** Receives the step program's report (dispatch counts). */
  onReport?: (r: ProgramReport) => void;
  /**
   * Run on the top-left crop x crop of the 64x64 latents instead (a multiple of 8): the inputs and the
   * operator's per-position parameters (LayerNorms' [C, 64, 64] affines, the sigma map's Linear) are cut
   * to it. Not the golden step any more, but the same kernels on real weights at 1/16 of the cost (16):
   * for tests that compare two ways of holding the same weights.
   */
  crop?: number;
}

/** [..., 64, 64] values cut to their top-left [..., c, c]. */
function cropPlanes(v: Float32Array, c: number): Float32Array {
  const planes = v.length / (64 * 64);
  const out = new Float32Array(planes * c * c);
  for (let p = 0; p < planes; p++) for (let y = 0; y < c; y++) out.set(v.subarray(p * 4096 + y * 64, p * 4096 + y * 64 + c), (p * c + y) * c);
  return out;
}

/** A SILO CNN operator's weights for a c x c latent: per-position parameters cut to the top-left crop. */
function croppedOperator(src: TensorSource, c: number): TensorSource {
  const map = 'sigma_condition_precondition.2.';
  const cut = (n: string): { shape: number[]; values: () => Float32Array } => {
    const shape = src.info(n).shape;
    if (shape.length >= 2 && shape[shape.length - 1] === 64 && shape[shape.length - 2] === 64) {
      return { shape: [...shape.slice(0, -2), c, c], values: () => cropPlanes(src.getF32(n), c) };
    }
    // The sigma map's Linear(hidden, 64 * 64): its output rows are the map's positions, row-major.
    if (n.startsWith(map) && shape[0] === 4096) {
      return {
        shape: [c * c, ...shape.slice(1)],
        values: () => {
          const v = src.getF32(n);
          const per = v.length / 4096;
          const out = new Float32Array(c * c * per);
          for (let y = 0; y < c; y++) out.set(v.subarray(y * 64 * per, (y * 64 + c) * per), y * c * per);
          return out;
        },
      };
    }
    return { shape, values: () => src.getF32(n) };
  };
  return {
    source: `${src.source} (cut to a ${c}x${c} latent)`,
    names: () => src.names(),
    has: (n) => src.has(n),
    info: (n) => {
      const i = src.info(n);
      const shape = cut(n).shape;
      return { ...i, shape, byteLength: (i.byteLength / i.shape.reduce((a, b) => a * b, 1)) * shape.reduce((a, b) => a * b, 1) };
    },
    getRaw: () => {
      throw new Error('croppedOperator: raw bytes are not cut');
    },
    getF32: (n) => cut(n).values(),
    getIntegers: (n) => src.getIntegers(n),
    toTensor: (e: Engine, n: string, dtype: DType = 'f32') => {
      const k = cut(n);
      return e.tensor(k.values(), k.shape, dtype, n);
    },
  };
}

/** silo_step's step0 (t = 500) with the weights in `dtype` (f32 tensors of `source` otherwise). */
export async function goldenSiloStep0(engine: Engine, weights: { unet: TensorSource; op: TensorSource }, opts: SiloStep0Options): Promise<Record<string, Float32Array>> {
  const files = goldenFiles('silo_step');
  const golden = await readSafetensors(files, 'golden.safetensors');
  const unetDir = subFolder(files, '../unet_mini');
  const config = parseUNetConfig(await readJson(unetDir, 'config.json'), 'unet_mini/config.json');
  const loaders: WeightLoader[] = [];
  const owned: Tensor[] = [];
  try {
    const build = <T>(src: TensorSource, make: (w: WeightLoader) => T) =>
      WeightLoader.build(engine, src, { dtype: opts.dtype, activations: 'f32', linearLayout: opts.linearLayout }, (w) => (loaders.push(w), make(w)));
    const unet = build(weights.unet, (w) => new UNet2DConditionModel(w, config));
    const crop = opts.crop;
    const opSource = crop ? croppedOperator(weights.op, crop) : weights.op;
    const op = build(opSource, (w) => new DegradationModel(w, inferDegradationConfig(opSource)));
    await WeightLoader.verify(engine);
    const input = (n: string) => {
      let shape = golden.info(n).shape;
      let values = golden.getF32(n);
      if (crop && shape.length === 4 && shape[2] === 64 && shape[3] === 64) {
        values = cropPlanes(values, crop);
        shape = [shape[0]!, shape[1]!, crop, crop];
      }
      const t = engine.tensor(values, shape, 'f32', n);
      owned.push(t);
      return t;
    };
    const scheduler = new DDPMScheduler({ ...SD15_SCHEDULER_CONFIG });
    scheduler.setTimesteps(999);
    const prior = { model: unetEpsModel(unet), scheduler, text: input('input.prompt_embeds') };
    const t = golden.getIntegers('step0.input.t')[0]!;
    const { result, report } = await runProgram(engine, 'silo_step', (rec) =>
      siloStep(rec, prior, { kind: 'cnn', model: op, sigmaEmb: input('input.sigma_emb') }, input('step0.input.w'), input('step0.input.z_t'), t, input('step0.input.ddpm_noise'), { eta: 0.5 }),
    );
    opts.onReport?.(report);
    const out: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries({ eps: result.eps, x0_hat: result.x0, w_hat: result.estimate, residual_norm: result.residualNorm, grad: result.grad, z_prev: result.zPrev })) {
      out[k] = await v!.read();
      v!.dispose();
    }
    for (const v of [result.prev, ...Object.values(result.extras)]) v?.dispose();
    return out;
  } finally {
    owned.forEach((t) => t.dispose());
    loaders.forEach((l) => l.disposeAll());
  }
}
