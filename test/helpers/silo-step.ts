// silo_step's first guided step (the golden case's step0, t = 500) built from given weight sources, for
// tests that compare two ways of holding the same weights (f16 storage, Linear layouts).
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
    const op = build(weights.op, (w) => new DegradationModel(w, inferDegradationConfig(weights.op)));
    await WeightLoader.verify(engine);
    const input = (n: string) => {
      const t = engine.tensor(golden.getF32(n), golden.info(n).shape, 'f32', n);
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
