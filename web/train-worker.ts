// The training page's worker: owns the WebGPU engine and the training session (src/solvers/training:
// all the logic is there, shared with `silo train`); this file decodes the picked images, fetches or
// parses the autoencoder's weights or opens the Stable Diffusion model (through the weight store, as the
// restoration page does), runs the loop and translates its reports into messages. A Stop
// request ends the run after the current step with a checkpoint, like Ctrl-C in the CLI.

import { Engine } from '../src/engine/device.js';
import { DeviceLostError, LimitError, SiloError } from '../src/engine/errors.js';
import { ImageError } from '../src/io/types.js';
import { parseSafetensors, type SafetensorsFile } from '../src/formats/safetensors.js';
import { CNN_DEFAULTS, READOUT_DEFAULTS, TrainSession } from '../src/solvers/training/session.js';
import { loadTrainModels, type TrainModels } from '../src/solvers/training/models.js';
import { loadBlurKernel } from '../src/solvers/degradations/kernel-file.js';
import { resolveBrowserModels } from '../src/restore/models-browser.js';
import { openWeightStore, type WeightStore } from '../src/hub/weight-store.js';
import { curveSvg, lossCsv } from '../src/solvers/training/curve.js';
import type { StepReport, ValidationReport } from '../src/solvers/training/trainer.js';
import type { NamedImage } from '../src/solvers/training/data.js';
import { DEGRADATION_TASKS } from '../src/solvers/degradations/tasks.js';
import { decode } from './image-decode.js';
import type { ErrorKind, FromTrainWorker, NamedBytes, PriorInput, ToTrainWorker, WeightInput } from './train-protocol.js';

const scope = self as unknown as Worker;
const post = (m: FromTrainWorker, transfer: Transferable[] = []) => scope.postMessage(m, transfer);
const log = (line: string) => post({ type: 'log', line });

let engine: Engine | null = null;
let store: WeightStore | null = null;
let stopRequested = false;
let running = false;

function classify(e: unknown): { kind: ErrorKind; message: string } {
  const message = (e as Error)?.message ?? String(e);
  if (e instanceof DeviceLostError || engine?.isLost) return { kind: 'device-lost', message: `${message}. The GPU was lost: press Train again (resume from the last checkpoint you downloaded).` };
  if (e instanceof LimitError) return { kind: /WebGPU is not available|no WebGPU adapter/.test(message) ? 'no-webgpu' : 'limit', message };
  if (e instanceof ImageError) return { kind: 'image', message };
  if (e instanceof TypeError && /fetch/i.test(message)) return { kind: 'network', message };
  if (e instanceof SiloError) return { kind: 'input', message };
  return { kind: 'other', message };
}

async function ensureEngine(): Promise<Engine> {
  if (engine && !engine.isLost) return engine;
  engine = await Engine.create({ log });
  return engine;
}

async function weights(w: WeightInput, what: string): Promise<SafetensorsFile> {
  if ('url' in w) {
    const r = await fetch(w.url);
    if (!r.ok) throw new SiloError(`${what} ${w.url}: HTTP ${r.status} ${r.statusText}`);
    return parseSafetensors(await r.arrayBuffer(), w.url);
  }
  return parseSafetensors(w.bytes, w.name);
}

async function images(list: NamedBytes[]): Promise<NamedImage[]> {
  const out: NamedImage[] = [];
  for (const f of list) out.push({ name: f.name, image: await decode(new Uint8Array(f.bytes), f.name) });
  return out;
}

/** The frozen models from the page's choice (an SD model is streamed through the weight store). */
async function models(e: Engine, prior: PriorInput, operator: 'cnn' | 'readout'): Promise<TrainModels> {
  if (prior.kind === 'taesd') {
    const [enc, dec] = [await weights(prior.encoder, 'encoder'), prior.decoder ? await weights(prior.decoder, 'decoder') : undefined];
    return loadTrainModels(e, { kind: 'taesd', encoder: enc, decoder: dec }, operator);
  }
  store ??= await openWeightStore('auto');
  const resolved = await resolveBrowserModels(prior.model, { kind: 'none' }, { store, log });
  try {
    const p = resolved.spec.pipeline!;
    log(`Stable Diffusion from ${p.label}`);
    return await loadTrainModels(e, { kind: 'sd', folder: p.folder, variant: p.variant }, operator);
  } finally {
    resolved.close();
  }
}

async function train(m: Extract<ToTrainWorker, { type: 'train' }>): Promise<void> {
  const e = await ensureEngine();
  const s = m.settings;
  const [train, heldOut] = [await images(m.images), await images(m.heldOut)];
  const resume = m.resume ? parseSafetensors(m.resume.bytes, m.resume.name) : undefined;
  const motionKernel = m.kernel ? await loadBlurKernel(m.kernel.bytes, m.kernel.name) : undefined;
  const frozen = await models(e, m.prior, s.operator);
  let session: TrainSession | undefined;
  try {
    const { codec, embedder, prior } = frozen;
    const defaults = s.operator === 'readout' ? READOUT_DEFAULTS : CNN_DEFAULTS;
    session = await TrainSession.create(e, {
      settings: { ...defaults, task: s.task, size: s.size, batch: s.batch, lr: s.lr, cache: s.cache, seed: s.seed, ...(s.operator === 'cnn' ? { width: s.width } : {}) },
      codec,
      embedder,
      train,
      validate: heldOut,
      resume,
      ...(prior ? { prior } : {}),
      ...(motionKernel ? { motionKernel } : {}),
      onCacheProgress: (done, total) => post({ type: 'cache', done, total }),
    });
    log(`training the ${s.operator} operator for ${codec.name}, task ${s.task}: ${train.length} images (${heldOut.length} held out), ${s.size}x${s.size} crops, ${session.source.label}`);
    const history: StepReport[] = [];
    const validations: ValidationReport[] = [];
    const title = `${s.task}, ${codec.name}`;
    const t0 = performance.now();
    const result = await session.run({
      steps: s.steps,
      checkpointEvery: s.checkpointEvery,
      validation: heldOut.length ? { sigma: 0, every: s.valEvery } : undefined,
      shouldStop: () => stopRequested,
      saveCheckpoint: async (bytes, step) => post({ type: 'checkpoint', step, bytes: bytes.buffer, svg: curveSvg(history, validations, title), csv: lossCsv(history) }, [bytes.buffer]),
      onStep: (r) => {
        history.push(r);
        post({ type: 'step', step: r.step, total: s.steps, loss: r.loss, elapsedMs: performance.now() - t0 });
      },
      onValidation: (v) => {
        validations.push(v);
        post({ type: 'validation', report: v });
      },
    });
    const op = await session.exportOperator();
    const config = session.operatorFolderConfig();
    post({ type: 'done', step: session.trainer.opt.step, stopped: result.stopped, operator: op.buffer, ...(config ? { config } : {}), svg: curveSvg(history, validations, title), csv: lossCsv(history) }, [op.buffer]);
  } finally {
    session?.dispose();
    frozen.dispose();
  }
}

scope.onmessage = async (ev: MessageEvent<ToTrainWorker>) => {
  const m = ev.data;
  try {
    if (m.type === 'init') {
      const e = await ensureEngine();
      post({ type: 'ready', adapter: e.summary(), software: e.info.software, tasks: [...DEGRADATION_TASKS] });
    } else if (m.type === 'stop') {
      if (running) stopRequested = true;
    } else if (m.type === 'train') {
      if (running) throw new SiloError('a training run is already going: stop it first');
      running = true;
      stopRequested = false;
      try {
        await train(m);
      } finally {
        running = false;
      }
    }
  } catch (e) {
    post({ type: 'error', ...classify(e) });
  }
};
