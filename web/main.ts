// The restoration page: form, progress, plot, before/after and downloads. All work happens in the
// worker (worker.ts); this file only shows what it reports. Settings can be preset from the address
// (?model=hub&repo=org/name&endpoint=...&operator=url&operatorUrl=...&task=sr4&steps=20&size=256&cache=opfs;
// maxBufferSize / maxStorageBufferBindingSize cap the engine's limits to see how a smaller GPU fares).
// document.body.dataset.state and window.siloDemo say where the page is (for people and tests).

import type { Catalog, FromWorker, Rgba, RunSettings, ToWorker } from './protocol.js';
import { formatDownloadProgress } from '../src/hub/progress-text.js';
import type { BrowserModelSource, BrowserOperatorSource } from '../src/restore/models-browser.js';

type State = 'starting' | 'no-webgpu' | 'idle' | 'loading' | 'ready' | 'running' | 'done' | 'cancelled' | 'error';

const $ = <T extends HTMLElement = HTMLInputElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const MB = 1e6;

const demo = {
  state: 'starting' as State,
  errors: [] as { during: string; kind: string; message: string }[],
  log: [] as string[],
  report: null as string | null,
  metrics: null as Record<string, number | null> | null,
  fetchedBytes: null as number | null,
  progressEvents: 0,
  previews: 0,
};
(window as unknown as { siloDemo: typeof demo }).siloDemo = demo;

function setState(s: State) {
  demo.state = s;
  document.body.dataset.state = s;
  const busy = s === 'loading' || s === 'running';
  $('load').toggleAttribute('disabled', busy || s === 'starting' || s === 'no-webgpu');
  $('run').toggleAttribute('disabled', !(s === 'ready' || s === 'done' || s === 'cancelled' || (s === 'error' && modelsLoaded)) || !image);
  $('cancel').toggleAttribute('disabled', !busy);
}

function showError(during: string, kind: string, message: string) {
  demo.errors.push({ during, kind, message });
  const titles: Record<string, string> = {
    'no-webgpu': 'WebGPU is not available',
    limit: 'This GPU’s limits are too small',
    'device-lost': 'The GPU device was lost',
    image: 'This image cannot be used',
    quota: 'Not enough storage for the weight cache',
    network: 'The model could not be downloaded',
    input: 'Cannot do that',
    other: 'Something failed',
  };
  const el = $('error');
  el.textContent = `${titles[kind] ?? 'Error'} (${during}): ${message}`;
  el.dataset.kind = kind;
  el.hidden = false;
}
const clearError = () => ($('error').hidden = true);

function fmtSeconds(s: number) {
  if (!Number.isFinite(s)) return '?';
  return s < 60 ? `${Math.ceil(s)} s` : s < 3600 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${(s / 3600).toFixed(1)} h`;
}

function draw(canvasId: string, img: Rgba) {
  const c = $<HTMLCanvasElement>(canvasId);
  c.width = img.width;
  c.height = img.height;
  c.getContext('2d')!.putImageData(new ImageData(img.data as Uint8ClampedArray<ArrayBuffer>, img.width, img.height), 0, 0);
}

// ---- the worker
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const send = (m: ToWorker) => worker.postMessage(m);
let catalog: Catalog | null = null;
let modelsLoaded: { operator: 'cnn' | 'readout' | null; operatorSize?: number } | null = null;
let image: { bytes: ArrayBuffer; name: string } | null = null;
let residuals: { step: number; r: number }[] = [];
let downloading = false;

worker.onerror = (e) => {
  showError('worker', 'other', `the worker failed to start: ${e.message}`);
  setState('error');
};

worker.onmessage = (ev: MessageEvent<FromWorker>) => {
  const m = ev.data;
  switch (m.type) {
    case 'ready': {
      catalog = m.catalog;
      $('webgpu-status').textContent = `${m.adapter} · weight cache: ${m.cache === 'opfs' ? 'Origin Private File System' : m.cache === 'cache-api' ? 'Cache API (fallback)' : 'memory only (not kept)'}`;
      $('webgpu-status').classList.toggle('bad', m.software);
      fillSettings(m.catalog);
      setState('idle');
      if (params.get('autoload') === '1') load();
      break;
    }
    case 'log':
      demo.log.push(m.line);
      $('log').textContent += `${m.line}\n`;
      // While loading, the latest line says what is happening between downloads (building, uploading).
      if (demo.state === 'loading' && !downloading) $('download-text').textContent = m.line;
      break;
    case 'download': {
      downloading = m.total === null || m.bytes < m.total;
      const p = $<HTMLProgressElement>('download-progress');
      p.max = m.total ?? 1;
      p.value = m.total ? m.bytes : 0;
      $('download-text').textContent = formatDownloadProgress(m);
      break;
    }
    case 'loaded': {
      modelsLoaded = { operator: m.operator, ...(m.operatorSize ? { operatorSize: m.operatorSize } : {}) };
      demo.fetchedBytes = m.fetchedBytes;
      $('download-text').textContent = `loaded in ${(m.loadMs / 1000).toFixed(1)} s (${m.fetchedBytes ? `${(m.fetchedBytes / MB).toFixed(1)} MB downloaded` : 'all weights from the cache'})`;
      for (const n of m.notes) $('log').textContent += `${n}\n`;
      if (m.operatorSize) $('size').value = String(m.operatorSize);
      if (m.released) {
        // SILO's own settings for its operator: the task it imitates, its method and prompt.
        $<HTMLSelectElement>('task').value = m.released.task;
        $('prompt').value = m.released.prompt;
        $('log').textContent += `SILO's settings for this operator: task ${m.released.task}, ${m.released.method}, eta ${m.released.eta}, prompt "${m.released.prompt}"\n`;
      }
      updateMethods();
      setState('ready');
      break;
    }
    case 'started':
      draw('before', m.input);
      draw('groundtruth', m.input);
      break;
    case 'progress': {
      demo.progressEvents++;
      const p = $<HTMLProgressElement>('step-progress');
      p.max = m.total;
      p.value = m.step;
      const left = (m.elapsedMs / m.step) * (m.total - m.step) / 1000;
      $('step-text').textContent = `step ${m.step} / ${m.total}, ${(m.elapsedMs / m.step).toFixed(0)} ms/step, about ${fmtSeconds(left)} left`;
      if (m.residual !== undefined) {
        residuals.push({ step: m.step, r: m.residual });
        plotResiduals(m.total);
      }
      break;
    }
    case 'preview':
      demo.previews++;
      draw('preview', m.image);
      break;
    case 'done': {
      draw('before', m.measurement);
      draw('after', m.image);
      demo.report = m.report;
      demo.metrics = m.metrics;
      showMetrics(m.metrics);
      offerDownloads(m.report);
      $('step-text').textContent += ' · done';
      setState('done');
      break;
    }
    case 'cancelled':
      $('step-text').textContent = `cancelled: ${m.message}`;
      setState(modelsLoaded ? 'cancelled' : 'idle');
      break;
    case 'cache':
      $('cache-info').textContent = `${m.entries} files, ${(m.bytes / MB).toFixed(1)} MB (${m.kind})`;
      break;
    case 'error':
      showError(m.during, m.kind, m.message);
      if (m.kind === 'no-webgpu' || (m.during === 'init' && m.kind !== 'quota')) {
        $('webgpu-status').textContent = m.message;
        $('webgpu-status').classList.add('bad');
        setState('no-webgpu');
      } else {
        if (m.during === 'load' || m.kind === 'device-lost') modelsLoaded = null;
        setState('error');
      }
      break;
  }
};

// ---- settings
function option(sel: HTMLSelectElement, value: string, label = value) {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = label;
  sel.append(o);
}

function fillSettings(c: Catalog) {
  const task = $<HTMLSelectElement>('task');
  task.replaceChildren();
  for (const t of c.tasks) option(task, t);
  task.value = params.get('task') ?? 'sr4';
  const zipTask = $<HTMLSelectElement>('operator-zip-task');
  zipTask.replaceChildren();
  for (const t of c.releasedTasks) option(zipTask, t);
  zipTask.value = c.releasedTasks.includes(task.value as never) ? task.value : c.releasedTasks[0]!;
  $('steps').value = params.get('steps') ?? String(c.defaults.steps);
  $('seed').value = params.get('seed') ?? String(c.defaults.seed);
  $('prompt').value = params.get('prompt') ?? c.defaults.prompt;
  if (params.get('size')) $('size').value = params.get('size')!;
  if (params.get('previewEvery')) $('preview-every').value = params.get('previewEvery')!;
  updateMethods();
}

/** Methods whose operator is loaded; SILO's first when an operator is there. */
function updateMethods() {
  if (!catalog) return;
  const sel = $<HTMLSelectElement>('method');
  const before = sel.value;
  sel.replaceChildren();
  for (const m of catalog.methods) {
    const ok = m.operator === null || modelsLoaded?.operator === m.operator;
    option(sel, m.name, ok ? m.label : `${m.label} (needs a ${m.operator} operator)`);
    sel.lastElementChild!.toggleAttribute('disabled', !ok);
  }
  const wanted = params.get('method') ?? (modelsLoaded?.operator === 'cnn' ? 'silo-cnn' : modelsLoaded?.operator === 'readout' ? 'silo-rg' : before || 'latent-dps');
  const usable = Array.from(sel.options).filter((o) => !o.disabled).map((o) => o.value);
  sel.value = usable.includes(wanted) ? wanted : (usable[0] ?? '');
}

function showSourceFields() {
  const kind = $<HTMLSelectElement>('model-kind').value;
  for (const el of Array.from(document.querySelectorAll<HTMLElement>('[data-for]'))) el.hidden = el.dataset.for !== kind;
  const op = $<HTMLSelectElement>('operator-kind').value;
  for (const el of Array.from(document.querySelectorAll<HTMLElement>('[data-op]'))) el.hidden = el.dataset.op !== op;
}

let pickedHandle: FileSystemDirectoryHandle | undefined;

function modelSource(): BrowserModelSource {
  switch ($<HTMLSelectElement>('model-kind').value) {
    case 'hub':
      return { kind: 'hub', repo: $('hub-repo').value.trim(), revision: $('hub-revision').value.trim() || 'main', endpoint: $('hub-endpoint').value.trim(), ...($('hub-token').value ? { token: $('hub-token').value } : {}) };
    case 'url':
      return { kind: 'url', url: $('model-url').value.trim() };
    case 'folder':
      return { kind: 'folder', ...(pickedHandle ? { handle: pickedHandle } : { files: Array.from($('model-folder').files ?? []) }) };
    default:
      return { kind: 'tiny', url: $('tiny-url').value.trim() };
  }
}

function operatorSource(): BrowserOperatorSource {
  switch ($<HTMLSelectElement>('operator-kind').value) {
    case 'url':
      return { kind: 'url', url: $('operator-url').value.trim(), ...($('operator-sigma-url').value.trim() ? { sigmaUrl: $('operator-sigma-url').value.trim() } : {}) };
    case 'file': {
      const f = $('operator-file').files?.[0];
      if (!f) throw new Error('pick an operator .safetensors file first');
      return { kind: 'file', file: f };
    }
    case 'release-zip': {
      const f = $('operator-zip').files?.[0];
      if (!f) throw new Error("pick SILO's trained_ckpt.zip first");
      return { kind: 'release-zip', file: f, task: $<HTMLSelectElement>('operator-zip-task').value };
    }
    case 'readout-url':
      return { kind: 'readout-url', url: $('operator-folder-url').value.trim() };
    case 'readout-folder':
      return { kind: 'readout-folder', files: Array.from($('operator-folder').files ?? []) };
    case 'tiny':
      return { kind: 'tiny' };
    default:
      return { kind: 'none' };
  }
}

function load() {
  clearError();
  let operator: BrowserOperatorSource;
  try {
    operator = operatorSource();
  } catch (e) {
    showError('load', 'input', (e as Error).message);
    return;
  }
  modelsLoaded = null;
  demo.fetchedBytes = null;
  $('download-text').textContent = 'resolving…';
  setState('loading');
  send({ type: 'load', model: modelSource(), operator });
}

function run() {
  if (!image) return showError('run', 'input', 'choose an image first');
  clearError();
  residuals = [];
  plotResiduals(1);
  demo.report = null;
  demo.metrics = null;
  $('download-png').hidden = true;
  $('download-report').hidden = true;
  const settings: RunSettings = {
    task: $<HTMLSelectElement>('task').value as RunSettings['task'],
    method: $<HTMLSelectElement>('method').value as RunSettings['method'],
    steps: Number($('steps').value),
    seed: Number($('seed').value),
    size: Number($('size').value),
    previewEvery: Number($('preview-every').value) || 0,
    prompt: $('prompt').value,
  };
  const bad = !Number.isInteger(settings.steps) || settings.steps < 1 ? 'steps must be a whole number >= 1' : !Number.isInteger(settings.size) || settings.size < 8 || settings.size % 8 ? `size ${$('size').value} must be a multiple of 8` : null;
  if (bad) return showError('run', 'input', bad);
  $('step-text').textContent = 'encoding…';
  setState('running');
  // A copy: the original stays for the next run.
  const bytes = image.bytes.slice(0);
  send({ type: 'run', image: bytes, imageName: image.name, role: $<HTMLSelectElement>('image-role').value as 'ground-truth' | 'measurement', settings });
}

// ---- image input
async function takeImage(file: File) {
  image = { bytes: await file.arrayBuffer(), name: file.name };
  $('image-info').textContent = `${file.name} (${(file.size / 1e3).toFixed(0)} kB)`;
  const thumb = $<HTMLImageElement>('image-thumb');
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  thumb.src = URL.createObjectURL(file);
  thumb.hidden = false;
  setState(demo.state);
}

// ---- plot, metrics, downloads
function plotResiduals(total: number) {
  const c = $<HTMLCanvasElement>('residual-plot');
  const g = c.getContext('2d')!;
  g.clearRect(0, 0, c.width, c.height);
  if (residuals.length === 0) return;
  const logs = residuals.map((p) => Math.log10(Math.max(p.r, 1e-12)));
  const lo = Math.min(...logs);
  const hi = Math.max(...logs, lo + 1e-6);
  const pad = 24;
  g.strokeStyle = '#ccc';
  g.strokeRect(pad, 4, c.width - pad - 4, c.height - pad - 4);
  g.fillStyle = '#666';
  g.font = '10px sans-serif';
  g.fillText(hi.toFixed(1), 0, 12);
  g.fillText(lo.toFixed(1), 0, c.height - pad);
  g.fillText(`step ${total}`, c.width - 50, c.height - 6);
  g.strokeStyle = '#3366dd';
  g.beginPath();
  residuals.forEach((p, i) => {
    const x = pad + ((c.width - pad - 4) * p.step) / Math.max(1, total);
    const y = 4 + ((c.height - pad - 4) * (hi - logs[i]!)) / (hi - lo);
    if (i === 0) g.moveTo(x, y);
    else g.lineTo(x, y);
  });
  g.stroke();
}

function showMetrics(metrics: Record<string, number | null>) {
  const t = $<HTMLTableElement>('metrics');
  t.replaceChildren();
  for (const [k, v] of Object.entries(metrics)) {
    const row = t.insertRow();
    row.insertCell().textContent = k;
    row.insertCell().textContent = v === null ? 'n/a (image too small)' : v.toFixed(3);
  }
}

function offerDownloads(report: string) {
  const png = $<HTMLAnchorElement>('download-png');
  $<HTMLCanvasElement>('after').toBlob((b) => {
    if (!b) return;
    if (png.href) URL.revokeObjectURL(png.href);
    png.href = URL.createObjectURL(b);
    png.hidden = false;
  }, 'image/png');
  const rep = $<HTMLAnchorElement>('download-report');
  if (rep.href) URL.revokeObjectURL(rep.href);
  rep.href = URL.createObjectURL(new Blob([report], { type: 'application/json' }));
  rep.hidden = false;
}

// ---- wiring
for (const [id, key] of [['hub-repo', 'repo'], ['hub-revision', 'revision'], ['hub-endpoint', 'endpoint'], ['model-url', 'url'], ['tiny-url', 'tinyUrl'], ['operator-url', 'operatorUrl'], ['operator-sigma-url', 'sigmaUrl'], ['operator-folder-url', 'operatorFolderUrl']] as const) {
  const v = params.get(key);
  if (v !== null) $(id).value = v;
}
if (params.get('model')) $<HTMLSelectElement>('model-kind').value = params.get('model')!;
if (params.get('operator')) $<HTMLSelectElement>('operator-kind').value = params.get('operator')!;
$('model-kind').addEventListener('change', showSourceFields);
$('operator-kind').addEventListener('change', showSourceFields);
showSourceFields();

$('pick-folder').hidden = !('showDirectoryPicker' in window);
$('pick-folder').addEventListener('click', async () => {
  try {
    pickedHandle = await (window as unknown as { showDirectoryPicker: () => Promise<FileSystemDirectoryHandle> }).showDirectoryPicker();
    $('folder-name').textContent = pickedHandle.name;
  } catch {
    /* the user closed the picker */
  }
});
$('model-folder').addEventListener('change', () => (pickedHandle = undefined));
$('load').addEventListener('click', load);
$('run').addEventListener('click', run);
$('cancel').addEventListener('click', () => {
  $('step-text').textContent += ' · cancelling…';
  send({ type: 'cancel' });
});
$('clear-cache').addEventListener('click', () => {
  if (demo.state === 'loading') return showError('cache', 'input', 'wait for the models to finish loading before clearing the cache');
  send({ type: 'clear-cache' });
});
$('slider').addEventListener('input', () => ($('after').style.clipPath = `inset(0 0 0 ${$('slider').value}%)`));
$('image-file').addEventListener('change', () => {
  const f = $('image-file').files?.[0];
  if (f) void takeImage(f);
});
const drop = $<HTMLDivElement>('image-drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = e.dataTransfer?.files[0];
  if (f) void takeImage(f);
});

const limits: Record<string, number> = {};
for (const k of ['maxBufferSize', 'maxStorageBufferBindingSize']) if (params.get(k)) limits[k] = Number(params.get(k));
if (!('gpu' in navigator)) {
  $('webgpu-status').textContent = 'This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome or Edge, or Firefox/Safari with WebGPU enabled, on a page served over https or from localhost.';
  $('webgpu-status').classList.add('bad');
  showError('init', 'no-webgpu', $('webgpu-status').textContent);
  setState('no-webgpu');
} else {
  const cache = (params.get('cache') ?? 'auto') as 'auto' | 'opfs' | 'cache-api' | 'memory';
  // Ask that the browser not evict gigabytes of weights under storage pressure (window-only API).
  if (cache !== 'memory') void navigator.storage?.persist?.().catch(() => false);
  send({ type: 'init', cache, ...(Object.keys(limits).length ? { limits } : {}) });
}
