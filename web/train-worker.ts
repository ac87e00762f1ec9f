// The training page's worker: owns the WebGPU engine and the training session (src/solvers/training:
// all the logic is there, shared with `silo train`); this file decodes the picked images, fetches or
// parses the autoencoder's weights, runs the loop and translates its reports into messages. A Stop
// request ends the run after the current step with a checkpoint, like Ctrl-C in the CLI.

import { Engine } from '../src/engine/device.js';
import { DeviceLostError, LimitError, SiloError } from '../src/engine/errors.js';
import { ImageError } from '../src/io/types.js';
import { parseSafetensors, type SafetensorsFile } from '../src/formats/safetensors.js';
import { TinyAutoencoder } from '../src/models/taesd/autoencoder.js';
import { taesdCodec } from '../src/solvers/training/latent-codec.js';
import { sinusoidSigmaEmbedder } from '../src/solvers/training/sigma-embedding.js';
import { CNN_DEFAULTS, TrainSession } from '../src/solvers/training/session.js';
import { curveSvg, lossCsv } from '../src/solvers/training/curve.js';
import type { StepReport, ValidationReport } from '../src/solvers/training/trainer.js';
import type { NamedImage } from '../src/solvers/training/data.js';
import { DEGRADATION_TASKS } from '../src/solvers/degradations/tasks.js';
import { decode } from './image-decode.js';
import type { ErrorKind, FromTrainWorker, NamedBytes, ToTrainWorker, WeightInput } from './train-protocol.js';

const scope = self as unknown as Worker;
const post = (m: FromTrainWorker, transfer: Transferable[] = []) => scope.postMessage(m, transfer);
const log = (line: string) => post({ type: 'log', line });

let engine: Engine | null = null;
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

async function train(m: Extract<ToTrainWorker, { type: 'train' }>): Promise<void> {
  const e = await ensureEngine();
  const s = m.settings;
  const [train, heldOut] = [await images(m.images), await images(m.heldOut)];
  const [enc, dec] = [await weights(m.encoder, 'encoder'), m.decoder ? await weights(m.decoder, 'decoder') : undefined];
  const resume = m.resume ? parseSafetensors(m.resume.bytes, m.resume.name) : undefined;
  const ae = TinyAutoencoder.load(e, { encoder: enc, decoder: dec });
  let session: TrainSession | undefined;
  try {
    const codec = taesdCodec(ae);
    session = await TrainSession.create(e, {
      settings: { ...CNN_DEFAULTS, task: s.task, size: s.size, batch: s.batch, lr: s.lr, cache: s.cache, seed: s.seed, width: s.width },
      codec,
      embedder: sinusoidSigmaEmbedder(320),
      train,
      validate: heldOut,
      resume,
      onCacheProgress: (done, total) => post({ type: 'cache', done, total }),
    });
    log(`training the CNN operator for ${codec.name}, task ${s.task}: ${train.length} images (${heldOut.length} held out), ${s.size}x${s.size} crops, ${session.source.label}`);
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
    post({ type: 'done', step: session.trainer.opt.step, stopped: result.stopped, operator: op.buffer, svg: curveSvg(history, validations, title), csv: lossCsv(history) }, [op.buffer]);
  } finally {
    session?.dispose();
    ae.dispose();
  }
}

scope.onmessage = async (ev: MessageEvent<ToTrainWorker>) => {
  const m = ev.data;
  try {
    if (m.type === 'init') {
      const e = await ensureEngine();
      post({ type: 'ready', adapter: e.summary(), software: e.info.software, tasks: DEGRADATION_TASKS.filter((t) => t !== 'motion_blur') });
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
