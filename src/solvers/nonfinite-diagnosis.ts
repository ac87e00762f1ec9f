// The diagnostic pass run after a sampling step (or the final decode) produced NaN/Inf: it re-runs the
// work from the tensors the step started with, module by module and, for the UNet and the VAE decoder,
// stage by stage (the stage lists the VJPs use), counting the non-finite values of every output, and
// names the first one that is non-finite ("unet: up_blocks.1.resnets.0 output has 4096 non-finite
// values"). It runs only on failure, so it favours clarity over speed (one read-back per probe).

import type { Engine } from '../engine/device.js';
import type { Recorder } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { runProgram } from '../engine/recorder.js';
import { nonFiniteCount } from '../engine/ops/reduce.js';
import { concatChannels } from '../engine/ops/layout.js';
import { scale, silu } from '../engine/ops/elementwise.js';
import type { Stage } from '../models/vjp-stages.js';
import type { UNet2DConditionModel } from '../models/unet/unet.js';
import { unetStages } from '../models/unet/stages.js';
import type { AutoencoderKL } from '../models/vae/autoencoder.js';
import { vaeDecodeStages } from '../models/vae/vjp.js';
import type { GuidedStep } from './samplers/guided.js';
import { concatBatch } from './samplers/batch.js';

/** Tensors to count, in the order they are computed; the first non-finite one is the answer. */
class Probe {
  readonly labels: string[] = [];
  readonly counts: Tensor[] = [];
  constructor(private rec: Recorder) {}
  add(label: string, t: Tensor | undefined): void {
    if (!t) return;
    this.labels.push(label);
    this.counts.push(nonFiniteCount(this.rec, t));
  }
}

/**
 * Runs `record` as one program and returns "label output has N non-finite values" for the first bad
 * probe, plus the tensors `record` returned (kept for a later pass; the caller frees them).
 */
async function firstBad(engine: Engine, name: string, record: (rec: Recorder, probe: Probe) => Tensor[] | void): Promise<{ found?: string; kept: Tensor[] }> {
  let probe: Probe | undefined;
  // tidy: everything the re-run allocates is freed once recorded, except the counts and `kept`.
  const { result } = await runProgram(engine, `diagnose/${name}`, (rec) =>
    engine.tidy(() => {
      probe = new Probe(rec);
      const kept = record(rec, probe) ?? [];
      return { counts: probe.counts, kept };
    }),
  { wait: true });
  let found: string | undefined;
  try {
    for (let i = 0; i < result.counts.length && !found; i++) {
      const n = (await result.counts[i]!.read())[0]!;
      if (n !== 0) found = `${probe!.labels[i]} has ${n} non-finite value${n === 1 ? '' : 's'}`;
    }
  } catch (e) {
    result.kept.forEach((t) => t.dispose());
    throw e;
  } finally {
    result.counts.forEach((t) => t.dispose());
  }
  return { found, kept: result.kept };
}

/**
 * Walks a stage chain forward (skips as chainForward: pushSkip outputs are concatenated onto the input of
 * the next popSkip stage), probing each stage's output as "<prefix><stage> output". Frees as it goes.
 */
function probeChain(rec: Recorder, probe: Probe, prefix: string, stages: Stage[], x: Tensor): Tensor {
  const skips: Tensor[] = [];
  let h = x;
  for (const s of stages) {
    const skip = s.popSkip ? skips.pop()! : undefined;
    const input = skip ? concatChannels(rec, [h, skip]) : h;
    const out = s.forward(rec, input);
    probe.add(`${prefix}${s.name} output`, out);
    if (input !== h) input.dispose();
    if (skip && skip !== h && skip !== x) skip.dispose();
    if (h !== x && !skips.includes(h)) h.dispose();
    if (s.pushSkip) skips.push(out);
    h = out;
  }
  for (const t of skips) if (t !== h && t !== x) t.dispose();
  return h;
}

/** The VAE decoder stage by stage on a latent already divided by the scaling factor. */
function probeDecoder(rec: Recorder, probe: Probe, vae: AutoencoderKL, u: Tensor): Tensor {
  return probeChain(rec, probe, 'vae decoder: ', vaeDecodeStages(vae), u);
}

/** The UNet stage by stage (time embedding first) on the step's batch. */
function probeUNet(rec: Recorder, probe: Probe, unet: UNet2DConditionModel, sample: Tensor, t: number, context: Tensor): Tensor {
  const tembSilu = silu(rec, unet.timeEmbedding(rec, t));
  probe.add('unet: time_embedding output', tembSilu);
  const x = unet.config.centerInputSample ? scale(rec, sample, 2, -1) : sample;
  return probeChain(rec, probe, 'unet: ', unetStages(unet, { tembSilu, context }), x);
}

export interface StepContext {
  method: string;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  /** The latent at the start of the bad step (kept until the step was verified). */
  zt: Tensor;
  t: number;
  text: Tensor;
  uncond?: Tensor;
  /** SILO's measurement latent E(y) * s. */
  w?: Tensor;
  y: Tensor;
  sigmaEmb?: Tensor;
  /** Records the same step again from zt (the loop's own recording, noise included). */
  replay: (rec: Recorder) => GuidedStep;
}

const OPERATOR_LABEL: Record<string, string> = {
  'silo-cnn': 'silo-cnn operator',
  'silo-rg': 'silo-rg readout operator',
  'latent-dps': 'vae decoder + degradation A(D(x0))',
  psld: 'vae decoder + degradation A(D(x0))',
};

/** Names the first module/stage of a sampling step whose output is non-finite. */
export async function diagnoseStep(engine: Engine, c: StepContext): Promise<string> {
  // 1. What the step read.
  const inputs = await firstBad(engine, 'step_inputs', (_rec, p) => {
    p.add('the latent z_t at the start of the step', c.zt);
    p.add('the measurement y', c.y);
    p.add('vae encoder: the measurement latent w = E(y)', c.w);
    p.add('the text embedding (clip text encoder)', c.text);
    p.add('the unconditional text embedding (clip text encoder)', c.uncond);
    p.add('the sigma embedding', c.sigmaEmb);
  });
  if (inputs.found) return inputs.found;
  // 2. The UNet, stage by stage (the batch of two under classifier-free guidance).
  const unet = await firstBad(engine, 'unet', (rec, p) => {
    const cfg = c.uncond !== undefined;
    const sample = cfg ? concatBatch(rec, [c.zt, c.zt]) : c.zt;
    const context = cfg ? concatBatch(rec, [c.uncond!, c.text]) : c.text;
    probeUNet(rec, p, c.unet, sample, c.t, context);
  });
  if (unet.found) return unet.found;
  // 3. The rest of the step in the order it is computed; x0 is kept for a decoder pass.
  const pixel = c.method === 'latent-dps' || c.method === 'psld';
  const estimateLabel = `${OPERATOR_LABEL[c.method] ?? 'measurement operator'}: the estimate`;
  const step = await firstBad(engine, 'step', (rec, p) => {
    const s = c.replay(rec);
    p.add('unet output eps', s.eps);
    p.add('scheduler: the x0 prediction', s.x0);
    p.add('scheduler: the DDPM prev sample', s.prev);
    p.add(estimateLabel, s.estimate);
    p.add('the residual norm', s.residualNorm);
    p.add('guidance gradient (the VJP through the operator and the UNet)', s.grad);
    p.add('the guided update z_{t-1}', s.zPrev);
    return pixel ? [s.x0] : [];
  });
  const [x0] = step.kept;
  try {
    // 4. A pixel-space estimate: which stage of the decoder.
    if (x0 && step.found?.startsWith(estimateLabel)) {
      const dec = await firstBad(engine, 'decoder', (rec, p) => {
        probeDecoder(rec, p, c.vae, scale(rec, x0, 1 / c.vae.scalingFactor));
      });
      if (dec.found) return dec.found;
    }
  } finally {
    x0?.dispose();
  }
  return step.found ?? 'no module output was non-finite when the step was re-run (a non-deterministic fault?)';
}

/** Names the first stage of the VAE decoder whose output is non-finite for latent z (unscaled). */
export async function diagnoseDecode(engine: Engine, vae: AutoencoderKL, z: Tensor): Promise<string> {
  const { found } = await firstBad(engine, 'decode', (rec, p) => {
    p.add('the final latent z_0', z);
    probeDecoder(rec, p, vae, scale(rec, z, 1 / vae.scalingFactor));
  });
  return found ?? 'no decoder stage was non-finite when re-run (a non-deterministic fault?)';
}
