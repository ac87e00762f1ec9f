// The training page: collects the autoencoder, the images and the settings, hands them to the worker
// (train-worker.ts) and shows what it reports: cache and step progress, the loss curve, validation
// against the identity operator, and downloads of the operator, the last checkpoint and the loss history.
// Query parameters preset the fields (operator, prior = taesd | sd-url | sd-hub | sd-folder, encoder,
// decoder, sdUrl, sdRepo, task, size, steps, batch, lr, cache, seed, width, valEvery, checkpointEvery).
// window.siloTrain exposes the state for automated tests.

import type { FromTrainWorker, NamedBytes, PriorInput, ToTrainWorker, TrainPageSettings, WeightInput } from './train-protocol.js';
import type { ValidationReport } from '../src/solvers/training/trainer.js';
import type { DegradationTask } from '../src/solvers/degradations/tasks.js';

const $ = <T extends HTMLElement = HTMLInputElement>(id: string) => document.getElementById(id) as T;

interface TrainState {
  state: 'starting' | 'idle' | 'no-webgpu' | 'training' | 'done' | 'stopped' | 'error';
  steps: number;
  lastLoss: number | null;
  validations: ValidationReport[];
  checkpoints: number;
  cacheDone: number;
  errors: { kind: string; message: string }[];
  operatorBytes: number | null;
  /** A readout operator's config.json (its folder's other file). */
  operatorConfig: string | null;
}

const st: TrainState = { state: 'starting', steps: 0, lastLoss: null, validations: [], checkpoints: 0, cacheDone: 0, errors: [], operatorBytes: null, operatorConfig: null };
(window as unknown as { siloTrain: TrainState }).siloTrain = st;

function setState(s: TrainState['state']) {
  st.state = s;
  document.body.dataset.state = s;
  $<HTMLButtonElement>('train').disabled = s === 'starting' || s === 'no-webgpu' || s === 'training';
  $<HTMLButtonElement>('stop').disabled = s !== 'training';
}

function logLine(line: string) {
  const pre = $<HTMLPreElement>('log');
  pre.textContent += `${line}\n`;
  pre.scrollTop = pre.scrollHeight;
}

function showError(message: string) {
  const p = $<HTMLParagraphElement>('error');
  p.textContent = message;
  p.hidden = false;
}

function download(id: string, bytes: ArrayBuffer | string, type: string, name?: string) {
  const a = $<HTMLAnchorElement>(id);
  if (name) a.download = name;
  if (a.href.startsWith('blob:')) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.hidden = false;
}

function showValidation() {
  const rows = st.validations.map((v) => {
    const ratio = (v.latentL1 / v.identityL1).toFixed(3);
    const dec = v.psnr !== undefined ? `<td>${v.psnr.toFixed(2)} dB</td><td>${v.identityPsnr!.toFixed(2)} dB</td><td>${v.roundTripL1!.toPrecision(4)}</td>` : '<td>–</td><td>–</td><td>–</td>';
    return `<tr><td>${v.step}</td><td>${v.latentL1.toPrecision(4)}</td><td>${v.identityL1.toPrecision(4)}</td><td>${ratio}</td>${dec}</tr>`;
  });
  $<HTMLTableElement>('validation').innerHTML = `<tr><th>step</th><th>latent L1 (H)</th><th>identity</th><th>ratio</th><th>PSNR D(H) vs A(x)</th><th>identity</th><th title="latent L1 of E(A(D(E(x)))): the degradation through the autoencoder">round trip</th></tr>${rows.join('')}`;
}

const worker = new Worker(new URL('./train-worker.js', import.meta.url), { type: 'module' });
const send = (m: ToTrainWorker, transfer: Transferable[] = []) => worker.postMessage(m, transfer);
let t0 = 0;

worker.onmessage = (ev: MessageEvent<FromTrainWorker>) => {
  const m = ev.data;
  switch (m.type) {
    case 'ready': {
      $('webgpu-status').textContent = `WebGPU: ${m.adapter}${m.software ? ' (software adapter: training is slow)' : ''}`;
      const task = $<HTMLSelectElement>('task');
      task.innerHTML = m.tasks.map((t) => `<option>${t}</option>`).join('');
      task.value = new URLSearchParams(location.search).get('task') ?? 'gaussian_blur';
      showChoices();
      setState('idle');
      break;
    }
    case 'log':
      logLine(m.line);
      break;
    case 'cache':
      st.cacheDone = m.done;
      $('step-text').textContent = `encoding the crop cache: ${m.done}/${m.total}`;
      break;
    case 'step': {
      st.steps++;
      st.lastLoss = m.loss;
      const p = $<HTMLProgressElement>('step-progress');
      p.max = m.total;
      p.value = m.step;
      const eta = ((m.elapsedMs / st.steps) * (m.total - m.step)) / 1000;
      $('step-text').textContent = `step ${m.step}/${m.total}, loss ${m.loss.toPrecision(4)}, ETA ${eta.toFixed(0)} s`;
      break;
    }
    case 'validation':
      st.validations.push(m.report);
      showValidation();
      break;
    case 'checkpoint':
      st.checkpoints++;
      download('download-checkpoint', m.bytes, 'application/octet-stream');
      download('download-csv', m.csv, 'text/csv');
      $('curve').innerHTML = m.svg;
      break;
    case 'done':
      st.operatorBytes = m.operator.byteLength;
      st.operatorConfig = m.config ?? null;
      // A readout operator is a folder: weights.safetensors beside config.json (what restore --operator reads).
      download('download-operator', m.operator, 'application/octet-stream', m.config ? 'weights.safetensors' : 'operator.safetensors');
      if (m.config) download('download-config', m.config, 'application/json');
      else $('download-config').hidden = true;
      download('download-csv', m.csv, 'text/csv');
      $('curve').innerHTML = m.svg;
      logLine(`${m.stopped ? 'stopped' : 'finished'} at step ${m.step} after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      setState(m.stopped ? 'stopped' : 'done');
      break;
    case 'error':
      st.errors.push({ kind: m.kind, message: m.message });
      showError(m.message);
      logLine(`error (${m.kind}): ${m.message}`);
      setState(m.kind === 'no-webgpu' ? 'no-webgpu' : st.state === 'starting' ? 'no-webgpu' : 'error');
      if (m.kind === 'no-webgpu') $('webgpu-status').classList.add('bad');
      break;
  }
};

async function files(id: string): Promise<NamedBytes[]> {
  const list = Array.from($(id).files ?? []);
  return Promise.all(list.map(async (f) => ({ name: f.name, bytes: await f.arrayBuffer() })));
}

async function weightInput(fileId: string, urlId: string): Promise<WeightInput | undefined> {
  const [f] = await files(fileId);
  if (f) return f;
  const url = $(urlId).value.trim();
  return url ? { url: new URL(url, location.href).href } : undefined;
}

/** The frozen models the page's choice names (the worker fetches or opens them). */
async function priorInput(operator: TrainPageSettings['operator']): Promise<PriorInput> {
  const kind = $<HTMLSelectElement>('prior-kind').value;
  if (kind === 'taesd') {
    if (operator === 'readout') throw new Error('The readout operator reads a Stable Diffusion UNet\'s features: choose a Stable Diffusion model under Models');
    const encoder = await weightInput('encoder-file', 'encoder-url');
    if (!encoder) throw new Error('Choose the encoder: a URL or a .safetensors file');
    const decoder = await weightInput('decoder-file', 'decoder-url');
    return { kind: 'taesd', encoder, ...(decoder ? { decoder } : {}) };
  }
  if (kind === 'sd-url') {
    const url = $('sd-url').value.trim();
    if (!url) throw new Error('Give the base URL of a diffusers Stable Diffusion folder (the one holding model_index.json)');
    return { kind: 'sd', model: { kind: 'url', url: new URL(url, location.href).href } };
  }
  if (kind === 'sd-hub') {
    const repo = $('sd-repo').value.trim();
    if (!repo) throw new Error('Give a Hugging Face repo id such as "org/name"');
    return { kind: 'sd', model: { kind: 'hub', repo } };
  }
  const picked = Array.from($('sd-folder').files ?? []);
  if (!picked.length) throw new Error('Pick the diffusers Stable Diffusion folder');
  return { kind: 'sd', model: { kind: 'folder', files: picked } };
}

function showChoices() {
  const kind = $<HTMLSelectElement>('prior-kind').value;
  document.querySelectorAll<HTMLElement>('[data-prior]').forEach((el) => (el.hidden = el.dataset.prior !== kind));
  $('kernel-label').hidden = $<HTMLSelectElement>('task').value !== 'motion_blur';
  $('width').closest('label')!.hidden = $<HTMLSelectElement>('operator').value !== 'cnn';
}

function intField(id: string, min: number): number {
  const v = Number($(id).value);
  if (!Number.isInteger(v) || v < min) throw new Error(`${$(id).closest('label')?.textContent?.trim() ?? id}: ${$(id).value} must be an integer >= ${min}`);
  return v;
}

$('train').addEventListener('click', async () => {
  $<HTMLParagraphElement>('error').hidden = true;
  try {
    const lr = Number($('lr').value);
    if (!(lr > 0) || !Number.isFinite(lr)) throw new Error(`Learning rate: ${$('lr').value} must be a number > 0`);
    const operator = $<HTMLSelectElement>('operator').value as TrainPageSettings['operator'];
    const settings: TrainPageSettings = {
      operator,
      task: $<HTMLSelectElement>('task').value as DegradationTask,
      size: intField('size', 8),
      steps: intField('steps', 1),
      batch: intField('batch', 1),
      lr,
      cache: intField('cache', 0),
      seed: intField('seed', 0),
      width: intField('width', 1),
      valEvery: intField('val-every', 1),
      checkpointEvery: intField('checkpoint-every', 0),
    };
    const prior = await priorInput(operator);
    let kernel: NamedBytes | undefined;
    if (settings.task === 'motion_blur') {
      [kernel] = await files('kernel-file');
      if (!kernel) throw new Error('motion_blur: choose its blur kernel file (.npy, text, .safetensors or PNG)');
    }
    const images = await files('train-files');
    if (!images.length) throw new Error('Choose the training images');
    const heldOut = await files('heldout-files');
    const [resume] = await files('resume-file');
    st.steps = 0;
    st.validations = [];
    st.checkpoints = 0;
    st.operatorBytes = null;
    st.operatorConfig = null;
    showValidation();
    setState('training');
    t0 = performance.now();
    const weights = prior.kind === 'taesd' ? [prior.encoder, prior.decoder].filter((w): w is NamedBytes => !!w && 'bytes' in w) : [];
    const transfer = [...images, ...heldOut, ...(resume ? [resume] : []), ...(kernel ? [kernel] : []), ...weights].map((f) => f.bytes);
    send({ type: 'train', images, heldOut, prior, ...(resume ? { resume } : {}), ...(kernel ? { kernel } : {}), settings }, transfer);
  } catch (e) {
    st.errors.push({ kind: 'input', message: (e as Error).message });
    showError((e as Error).message);
  }
});

$('stop').addEventListener('click', () => send({ type: 'stop' }));

for (const id of ['train-files', 'heldout-files']) {
  $(id).addEventListener('change', () => {
    const n = (i: string) => $(i).files?.length ?? 0;
    $('data-info').textContent = `${n('train-files')} training image(s), ${n('heldout-files')} held out`;
  });
}

// Presets from the query string.
const q = new URLSearchParams(location.search);
const fields: Record<string, string> = { operator: 'operator', prior: 'prior-kind', encoder: 'encoder-url', decoder: 'decoder-url', sdUrl: 'sd-url', sdRepo: 'sd-repo', size: 'size', steps: 'steps', batch: 'batch', lr: 'lr', cache: 'cache', seed: 'seed', width: 'width', valEvery: 'val-every', checkpointEvery: 'checkpoint-every' };
for (const [k, id] of Object.entries(fields)) {
  const v = q.get(k);
  if (v !== null) $(id).value = v;
}

for (const id of ['prior-kind', 'task', 'operator']) $(id).addEventListener('change', showChoices);
// SILO's readout operator trains at lr 2e-4 (the CNN here at 1e-3): follow the operator unless the query set one.
$('operator').addEventListener('change', () => {
  if (!q.has('lr')) $('lr').value = $<HTMLSelectElement>('operator').value === 'readout' ? '2e-4' : '1e-3';
});
if (q.get('operator') === 'readout' && !q.has('lr')) $('lr').value = '2e-4';
showChoices();

if (!('gpu' in navigator)) {
  $('webgpu-status').textContent = 'This browser has no WebGPU (navigator.gpu): use a recent Chrome or Edge, over https or localhost.';
  $('webgpu-status').classList.add('bad');
  setState('no-webgpu');
} else send({ type: 'init' });
