// The page's worker: owns the WebGPU engine, the weight store and the restoration session. Loading
// streams weights through the store tensor by tensor; a run reports steps, residuals and previews, and
// stops within a step on Cancel. Every failure comes back as an 'error' message of a kind the page can
// explain. All the logic is in src/ (restore, hub); this file only translates messages.

import { Engine } from '../src/engine/device.js';
import { browserTuningStore } from '../src/engine/tuning.js';
import { DeviceLostError, LimitError, SiloError } from '../src/engine/errors.js';
import { decode } from './image-decode.js';
import { resizeAndCenterCrop } from '../src/io/image.js';
import { ImageError, type Image8 } from '../src/io/types.js';
import { HubUnreachableError } from '../src/hub/model-ref.js';
import { openWeightStore, StoreError, type WeightStore } from '../src/hub/weight-store.js';
import { loadModels } from '../src/restore/models.js';
import { resolveBrowserModels } from '../src/restore/models-browser.js';
import { RestorationSession } from '../src/restore/session.js';
import { RestoreAbortedError } from '../src/restore/loop.js';
import { RESTORE_METHODS, samplerFor } from '../src/restore/registry.js';
import { RESTORE_DEFAULTS } from '../src/restore/defaults.js';
import { DEGRADATION_TASKS, type DegradationTask } from '../src/solvers/degradations/tasks.js';
import { RELEASED_OPERATORS } from '../src/hub/silo-operators.js';
import type { ResolvedBrowserModels } from '../src/restore/models-browser.js';
import type { Catalog, ErrorKind, FromWorker, Rgba, ToWorker, RunSettings } from './protocol.js';

const CATALOG: Catalog = {
  methods: RESTORE_METHODS.map((name) => ({ name, label: samplerFor(name).label, operator: samplerFor(name).operator ?? null })),
  // motion_blur needs a kernel file, which the page does not take.
  tasks: DEGRADATION_TASKS.filter((t) => t !== 'motion_blur'),
  defaults: { steps: RESTORE_DEFAULTS.steps, seed: RESTORE_DEFAULTS.seed, prompt: RESTORE_DEFAULTS.prompt },
  releasedTasks: [...new Set(RELEASED_OPERATORS.map((r) => r.task))],
};


const post = (m: FromWorker) => (self as unknown as Worker).postMessage(m);
const log = (line: string) => post({ type: 'log', line });

let engine: Engine | null = null;
let store: WeightStore | null = null;
let session: RestorationSession | null = null;
/** The released SILO operator the session holds, if any: its task and SILO's settings for it. */
let released: ResolvedBrowserModels['released'];
let engineOptions: { limits?: Record<string, number> } = {};
let loadAbort: AbortController | null = null;
let runAbort: AbortController | null = null;

function rgba(img: Image8): Rgba {
  const { width, height, channels, data } = img;
  const out = new Uint8ClampedArray(width * height * 4);
  for (let i = 0, j = 0; i < width * height; i++, j += channels) {
    const gray = channels < 3;
    out[i * 4] = data[j]!;
    out[i * 4 + 1] = data[gray ? j : j + 1]!;
    out[i * 4 + 2] = data[gray ? j : j + 2]!;
    out[i * 4 + 3] = 255;
  }
  return { width, height, data: out };
}

function classify(e: unknown, run?: RunSettings): { kind: ErrorKind; message: string } {
  const message = (e as Error)?.message ?? String(e);
  if (e instanceof DeviceLostError || engine?.isLost) {
    return { kind: 'device-lost', message: `${message}. The GPU was lost (driver reset, out of memory, or the tab was in the background too long): press Load again to start a new device.` };
  }
  if (e instanceof LimitError) {
    if (/WebGPU is not available|no WebGPU adapter/.test(message)) return { kind: 'no-webgpu', message };
    return { kind: 'limit', message: run && session ? session.limitAdvice(e, run.size, run.method) : message };
  }
  if (e instanceof ImageError) return { kind: 'image', message };
  if (e instanceof StoreError && e.code === 'quota') return { kind: 'quota', message };
  if (e instanceof HubUnreachableError) return { kind: 'network', message };
  if (e instanceof SiloError) return { kind: 'input', message };
  return { kind: 'other', message };
}

async function ensureEngine(): Promise<Engine> {
  if (engine && !engine.isLost) return engine;
  session?.dispose();
  session = null;
  // Kernel choices measured on this adapter earlier (tuning.ts), if the origin keeps a table.
  engine = await Engine.create({ log, tuning: browserTuningStore(), ...(engineOptions.limits ? { limits: engineOptions.limits } : {}) });
  return engine;
}


async function load(m: Extract<ToWorker, { type: 'load' }>) {
  loadAbort?.abort();
  const abort = (loadAbort = new AbortController());
  const t0 = performance.now();
  const e = await ensureEngine();
  if (!store) throw new StoreError('the weight store is not open (init first)');
  session?.dispose();
  session = null;
  released = undefined;
  const resolved = await resolveBrowserModels(m.model, m.operator, {
    store,
    signal: abort.signal,
    log,
    onProgress: (p) => post({ type: 'download', ...p }),
  });
  try {
    const models = await loadModels(e, { ...resolved.spec, weights: RESTORE_DEFAULTS.weights, log });
    session = new RestorationSession(e, models, resolved.provenance);
    released = resolved.released;
    const op = models.base.cnn || models.base.preserve ? 'cnn' : models.base.readout ? 'readout' : null;
    post({
      type: 'loaded', notes: models.notes, fetchedBytes: resolved.fetchedBytes(), operator: op, loadMs: performance.now() - t0,
      ...(models.operatorLatentSize ? { operatorSize: models.operatorLatentSize * models.base.vae.downFactor } : {}),
      ...(released ? { released: { task: released.task as DegradationTask, method: released.method as RunSettings['method'], prompt: released.defaults.prompt, eta: released.defaults.eta } } : {}),
    });
  } finally {
    resolved.close();
  }
}

async function run(m: Extract<ToWorker, { type: 'run' }>) {
  if (!session) throw new SiloError('no models loaded: press Load first');
  const s: RunSettings = m.settings;
  // A released operator imitates one degradation: running it on another would guide towards the wrong measurement.
  if (released && samplerFor(s.method).space === 'latent' && s.task !== released.task) {
    throw new SiloError(`the loaded operator is SILO's for ${released.task}, not ${s.task}: choose task ${released.task}, or load the release's operator for ${s.task}`);
  }
  const img = await decode(new Uint8Array(m.image), m.imageName);
  const abort = (runAbort = new AbortController());
  const gt = m.role === 'ground-truth';
  if (gt) post({ type: 'started', size: s.size, input: rgba(resizeAndCenterCrop(img, s.size, s.size)) });
  try {
    const result = await session.run(
      {
        task: s.task, method: s.method, steps: s.steps, seed: s.seed, size: s.size,
        ...(released ? { operatorDefaults: released.defaults } : {}),
        ...(s.prompt ? { prompt: s.prompt } : {}),
        ...(gt ? { groundTruth: img, groundTruthName: m.imageName } : { measurement: img, measurementName: m.imageName }),
      },
      {
        signal: abort.signal,
        log,
        onProgress: (p) => post({ type: 'progress', step: p.step, total: p.total, elapsedMs: p.elapsedMs, ...(p.residual !== undefined ? { residual: p.residual } : {}) }),
        ...(s.previewEvery > 0 ? { previewEvery: s.previewEvery, onPreview: (p) => post({ type: 'preview', step: p.step, total: p.total, image: rgba(p.image) }) } : {}),
      },
    );
    post({ type: 'done', image: rgba(result.image), measurement: rgba(result.measurement), metrics: result.metrics, report: JSON.stringify(result.report, null, 2) });
  } finally {
    if (runAbort === abort) runAbort = null;
  }
}

async function cacheInfo() {
  if (!store) return;
  const list = await store.list();
  post({ type: 'cache', kind: store.kind, entries: list.length, bytes: list.reduce((n, f) => n + f.size, 0) });
}

self.onmessage = async (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  try {
    switch (m.type) {
      case 'init': {
        engineOptions = { limits: m.limits };
        store = await openWeightStore(m.cache);
        const e = await ensureEngine();
        post({ type: 'ready', adapter: e.summary(), software: e.info.software, cache: store.kind, limits: { ...e.limits }, catalog: CATALOG });
        await cacheInfo();
        break;
      }
      case 'load':
        await load(m);
        await cacheInfo();
        break;
      case 'run':
        await run(m);
        break;
      case 'cancel':
        runAbort?.abort();
        loadAbort?.abort();
        break;
      case 'cache-info':
        await cacheInfo();
        break;
      case 'clear-cache':
        await store?.clear();
        await cacheInfo();
        break;
    }
  } catch (e) {
    if (e instanceof RestoreAbortedError || (e as Error)?.name === 'AbortError' || (e instanceof StoreError && e.code === 'aborted')) {
      post({ type: 'cancelled', message: (e as Error).message || 'cancelled' });
      return;
    }
    const during = m.type === 'init' ? 'init' : m.type === 'load' ? 'load' : m.type === 'run' ? 'run' : 'cache';
    post({ type: 'error', during, ...classify(e, m.type === 'run' ? m.settings : undefined) });
  }
};
