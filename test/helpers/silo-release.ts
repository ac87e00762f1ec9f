// SILO's release, imitated for tests: checkpoints in SILO's exact formats (a readout dict {step, config,
// aggregation_network, optimizer_state_dict} and bare CNN state dicts, written by torch-fixtures.ts
// independently of the code under test), trained_ckpt.zip laid out as the release is, and a local
// server that answers the GitHub release URL as GitHub does (302 to a CDN origin that serves the bytes
// with Content-Length and Range). Knobs: cut the connection mid-file once, send wrong bytes. Every
// request is logged; 404 for anything else. 127.0.0.1 only, closed after `lifetimeMs`.
//
// For end-to-end tests: goldenReleaseZip() serves the golden silo_rg weights as
// trained_ckpt/RG/<stem>_rg_ffhq_operator.pt (per task) and the golden silo_cnn weights as
// trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt, so `--golden`-sized restorations run with them.
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { buildZip, TensorStore, torchSave, type Spec, type ZipInput } from './torch-fixtures.js';
import { goldenDir } from './golden.js';
import { randomData } from './engine.js';

export interface Weight {
  data: Float32Array;
  shape: number[];
}
/** A state dict in checkpoint order. */
export type Weights = Map<string, Weight>;

export const RELEASE_PATH = '/ronraphaeli/SILO/releases/download/Checkpoints/trained_ckpt.zip';

/** F32 tensors of a safetensors file, parsed here by hand (independent of src/formats). */
export function readSafetensorsF32(path: string): Weights {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Weights = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (info.dtype !== 'F32') throw new Error(`${path}: ${name} is ${info.dtype}`);
    const [s, e] = info.data_offsets;
    const bytes = b.subarray(8 + n + s, 8 + n + e);
    out.set(name, { data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)), shape: info.shape });
  }
  return out;
}

export const goldenReadoutWeights = (): Weights => readSafetensorsF32(`${goldenDir('silo_rg')}/weights.safetensors`);
export const goldenCnnWeights = (): Weights => readSafetensorsF32(`${goldenDir('silo_cnn')}/weights.safetensors`);

/** A small AggregationNetwork state dict with SILO's names (latent n x n, sigma embedding of `emb`). */
export function tinyReadoutWeights(o: { featureDims?: number[]; projection?: number; latent?: number; emb?: number; condInpaint?: boolean; seed?: number } = {}): Weights {
  const dims = o.featureDims ?? [8, 8, 4];
  const p = o.projection ?? 128;
  const n = o.latent ?? 8;
  const emb = o.emb ?? 16;
  const b = Math.floor(p / 4);
  let seed = o.seed ?? 7;
  const w: Weights = new Map();
  const add = (name: string, shape: number[]) => w.set(name, { data: randomData(shape.reduce((a, x) => a * x, 1), seed++, -0.2, 0.2), shape });
  dims.forEach((d, l) => {
    const c = d + 1;
    const pre = `bottleneck_layers.${l}.`;
    add(`${pre}shortcut.weight`, [p, c, 1, 1]);
    add(`${pre}shortcut.norm.weight`, [p]);
    add(`${pre}shortcut.norm.bias`, [p]);
    add(`${pre}conv1.weight`, [b, c, 1, 1]);
    add(`${pre}conv1.norm.weight`, [b]);
    add(`${pre}conv1.norm.bias`, [b]);
    add(`${pre}conv2.weight`, [b, b, 3, 3]);
    add(`${pre}conv2.norm.weight`, [b]);
    add(`${pre}conv2.norm.bias`, [b]);
    add(`${pre}conv3.weight`, [p, b, 1, 1]);
    add(`${pre}conv3.norm.weight`, [p]);
    add(`${pre}conv3.norm.bias`, [p]);
    add(`${pre}emb_layers.weight`, [b, emb]);
    add(`${pre}emb_layers.bias`, [b]);
  });
  add('mixing_weights', [dims.length]);
  add('sigma_emb_norm.weight', [1, n, n]);
  add('sigma_emb_norm.bias', [1, n, n]);
  add('sigma_emb_linear.weight', [n * n, emb]);
  add('sigma_emb_linear.bias', [n * n]);
  add('output_head.0.weight', [128, p + 1 + (o.condInpaint ? 1 : 0), 3, 3]);
  add('output_head.0.bias', [128]);
  add('output_head.2.weight', [32, 128, 3, 3]);
  add('output_head.2.bias', [32]);
  add('output_head.4.weight', [4, 32, 1, 1]);
  add('output_head.4.bias', [4]);
  return w;
}

/** A small DegradationModel(4, layer_norm=True, sigma_condition=True) state dict (latent n x n). */
export function tinyCnnWeights(o: { latent?: number; emb?: number; seed?: number } = {}): Weights {
  const n = o.latent ?? 8;
  const emb = o.emb ?? 16;
  let seed = o.seed ?? 100;
  const w: Weights = new Map();
  const add = (name: string, shape: number[]) => w.set(name, { data: randomData(shape.reduce((a, x) => a * x, 1), seed++, -0.2, 0.2), shape });
  const conv = (name: string, shape: number[], out: number) => {
    add(`${name}.weight`, shape);
    add(`${name}.bias`, [out]);
  };
  const ln = (name: string, c: number) => {
    add(`${name}.weight`, [c, n, n]);
    add(`${name}.bias`, [c, n, n]);
  };
  conv('sigma_condition_precondition.0', [32, emb], 32);
  conv('sigma_condition_precondition.2', [n * n, 32], n * n);
  const enc = [5, 17, 33, 65, 128];
  for (let i = 0; i < 4; i++) {
    conv(`encoder.${3 * i}`, [enc[i + 1]!, enc[i]!, 3, 3], enc[i + 1]!);
    ln(`encoder.${3 * i + 1}`, enc[i + 1]!);
  }
  const dec = [128, 64, 32, 16];
  for (let i = 0; i < 3; i++) {
    conv(`decoder.${3 * i}`, [dec[i]!, dec[i + 1]!, 3, 3], dec[i + 1]!); // ConvTranspose2d: [in, out, k, k]
    ln(`decoder.${3 * i + 1}`, dec[i + 1]!);
  }
  conv('adjust_encoding.0', [16, 129, 1, 1], 16);
  ln('adjust_encoding.1', 16);
  conv('processing.0', [16, 16, 3, 3], 16);
  ln('processing.1', 16);
  conv('processing.3', [4, 16, 3, 3], 4);
  return w;
}

/** The `config` OmegaConf's to_container gives for training/train_rg_silo_config.yaml, plus what silo_rg_train.py adds. */
export function siloTrainConfig(featureDims: number[], projection: number, o: { condInpaint?: boolean; id?: string } = {}): Spec {
  return {
    ordered: false,
    dict: [
      ['model_id', 'stablediffusionapi/realistic-vision-v51'],
      ['diffusion_mode', 'generation'],
      ['num_timesteps', 1000],
      ['save_timestep', [0]],
      ['prompt', ''],
      ['negative_prompt', ''],
      ['guidance_scale', -1],
      ['dtype', 'torch.float32'],
      ['projection_dim', projection],
      ['aggregation_kwargs', { ordered: false, dict: [
        ['use_output_head', true], ['output_head_channels', 4], ['bottleneck_sequential', false], ['output_head_act', false],
        ['learnable_kernel', false], ['sigma_condition', true], ['sigma_condition_2', false], ['cond_inpaint', o.condInpaint ?? false],
      ] }],
      ['weight_decay', 0],
      ['max_steps', 200000],
      ['val_every_n_steps', 1000],
      ['log_max', 10],
      ['lr', 0.0002],
      ['low_memory', false],
      ['dataset_args', { ordered: false, dict: [['control_type', 'pose'], ['sparse_loss', false], ['control_range', { tuple: [{ float: -1 }, { float: 1 }] }]] }],
      ['wandb_kwargs', { ordered: false, dict: [['entity', null], ['project', 'silo'], ['name', o.id ?? 'rg']] }],
      ['results_folder', 'runs'],
      ['save_model_steps', 5000],
      ['clamp', true],
      ['id', o.id ?? 'rg'],
      ['dims', featureDims],
      ['output_resolution', 64],
      ['load_resolution', 512],
    ],
  };
}

/** Feature dims and projection of a readout state dict, read off its shapes (conv1 in-channels minus the sigma map). */
export function readoutDims(w: Weights): { featureDims: number[]; projection: number; condInpaint: boolean } {
  const featureDims: number[] = [];
  for (let l = 0; w.has(`bottleneck_layers.${l}.conv1.weight`); l++) featureDims.push(w.get(`bottleneck_layers.${l}.conv1.weight`)!.shape[1]! - 1);
  const projection = w.get('bottleneck_layers.0.conv3.weight')!.shape[0]!;
  return { featureDims, projection, condInpaint: w.get('output_head.0.weight')!.shape[1]! === projection + 2 };
}

/** torch.save of a bare state dict (an OrderedDict with torch's `_metadata`), as silo_cnn_train.py saves. */
export function stateDictCheckpoint(w: Weights): Uint8Array {
  const store = new TensorStore();
  return torchSave(stateDictSpec(w, store), store);
}

function stateDictSpec(w: Weights, store: TensorStore): Spec {
  return { dict: [...w].map(([k, t]) => [k, store.f32(t.data, t.shape)] as [string, Spec]), attributes: [['_metadata', { dict: [['', { ordered: false, dict: [['version', 1]] }]] }]] };
}

/**
 * torch.save of SILO's readout dict (train_helpers.save_model): {step, config, aggregation_network,
 * optimizer_state_dict}. The AdamW state covers the first `optimizerParams` tensors (all by default).
 */
export function readoutCheckpoint(w: Weights, o: { step?: number; config?: Spec; optimizerParams?: number } = {}): Uint8Array {
  const store = new TensorStore();
  const params = [...w.values()].slice(0, o.optimizerParams ?? w.size);
  const state: [number, Spec][] = params.map((t, i) => [
    i,
    { ordered: false, dict: [['step', store.f32(new Float32Array([o.step ?? 12000]), [])], ['exp_avg', store.f32(t.data.map((x) => x * 0.01), t.shape)], ['exp_avg_sq', store.f32(t.data.map((x) => x * x), t.shape)]] },
  ]);
  const group: Spec = {
    ordered: false,
    dict: [
      ['lr', 0.0002], ['betas', { tuple: [0.9, 0.999] }], ['eps', 1e-8], ['weight_decay', 0], ['amsgrad', false], ['foreach', null],
      ['maximize', false], ['capturable', false], ['differentiable', false], ['fused', null], ['params', [...w.keys()].map((_, i) => i)],
    ],
  };
  const spec: Spec = {
    ordered: false,
    dict: [
      ['step', o.step ?? 12000],
      ['config', o.config ?? defaultConfig(w)],
      ['aggregation_network', stateDictSpec(w, store)],
      ['optimizer_state_dict', { ordered: false, dict: [['state', { ordered: false, dict: state }], ['param_groups', [group]]] }],
    ],
  };
  return torchSave(spec, store);
}

function defaultConfig(w: Weights): Spec {
  const d = readoutDims(w);
  return siloTrainConfig(d.featureDims, d.projection, { condInpaint: d.condInpaint });
}

/** trained_ckpt.zip: the given entries (path -> bytes) under their folders, with the folder entries zip writes; deflated unless `stored`. */
export function releaseZip(entries: Record<string, Uint8Array>, o: { stored?: (path: string) => boolean } = {}): Uint8Array {
  const dirs = new Set<string>();
  for (const p of Object.keys(entries)) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(`${parts.slice(0, i).join('/')}/`);
  }
  const list: ZipInput[] = [...dirs].sort().map((d) => ({ name: d, data: new Uint8Array(0) }));
  for (const [name, data] of Object.entries(entries)) list.push({ name, data, method: o.stored?.(name) ? 0 : 8 });
  return buildZip(list).bytes;
}

/** Our task name -> the stem SILO's RG checkpoints use. */
export const RG_STEMS: Record<string, string> = { gaussian_blur: 'gb', inpaint_center: 'ip', inpaint_random: 'rand_ip', jpeg10: 'jpeg', sr4: 'sr_4', sr8: 'sr_8' };

/**
 * A release zip with the golden silo_rg weights as trained_ckpt/RG/<stem>_rg_ffhq_operator.pt for each
 * task and the golden silo_cnn weights as trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt (stored entries,
 * quick to build; the optimizer state covers a few tensors so the zip stays ~50 MB).
 */
export function goldenReleaseZip(tasks: string[] = ['sr4']): Uint8Array {
  const rg = readoutCheckpoint(goldenReadoutWeights(), { optimizerParams: 4 });
  const entries: Record<string, Uint8Array> = {};
  for (const t of tasks) entries[`trained_ckpt/RG/${RG_STEMS[t]}_rg_ffhq_operator.pt`] = rg;
  entries['trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt'] = stateDictCheckpoint(goldenCnnWeights());
  return releaseZip(entries, { stored: () => true });
}

export interface ReleaseRequest {
  origin: 'github' | 'cdn';
  method: string;
  path: string;
  range?: string;
}

export interface ReleaseServer {
  /** The asset's URL (set SILO_RELEASE_URL to it). */
  url: string;
  origin: string;
  cdn: string;
  zip: Uint8Array;
  sha256: string;
  requests: ReleaseRequest[];
  /** The next GET of the bytes is cut after half of what it sends (once). */
  cutOnce: boolean;
  /** GETs send one flipped byte. */
  corrupt: boolean;
  close(): Promise<void>;
}

export async function startReleaseServer(zip: Uint8Array, o: { lifetimeMs?: number } = {}): Promise<ReleaseServer> {
  const requests: ReleaseRequest[] = [];
  let cdn = '';
  const assetPath = `/github-production-release-asset/123456/${createHash('sha1').update(zip).digest('hex').slice(0, 12)}`;
  const srv: ReleaseServer = {
    url: '',
    origin: '',
    cdn: '',
    zip,
    sha256: createHash('sha256').update(zip).digest('hex'),
    requests,
    cutOnce: false,
    corrupt: false,
    close: async () => {},
  };
  const handler = (origin: 'github' | 'cdn') => (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '';
    requests.push({ origin, method: req.method ?? '', path: url, range: req.headers.range });
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405).end();
    if (origin === 'github') {
      if (url !== RELEASE_PATH) return void res.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found');
      // GitHub: a 302 to a signed, expiring CDN URL; no hash header anywhere.
      return void res.writeHead(302, { location: `${cdn}${assetPath}?sp=r&sig=${Date.now()}`, 'content-length': '0' }).end();
    }
    if (url.split('?')[0] !== assetPath) return void res.writeHead(404).end();
    let data = srv.zip;
    if (srv.corrupt) {
      data = data.slice();
      data[data.byteLength >> 1]! ^= 0xff;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (start >= data.byteLength) return void res.writeHead(416, { 'content-range': `bytes */${data.byteLength}` }).end();
    }
    const part = data.subarray(start);
    res.writeHead(range ? 206 : 200, {
      'content-type': 'application/octet-stream',
      'content-length': String(part.byteLength),
      'accept-ranges': 'bytes',
      ...(range ? { 'content-range': `bytes ${start}-${data.byteLength - 1}/${data.byteLength}` } : {}),
    });
    if (req.method === 'HEAD') return void res.end();
    if (srv.cutOnce) {
      srv.cutOnce = false;
      res.write(part.subarray(0, part.byteLength >> 1), () => res.socket?.destroy());
      return;
    }
    res.end(part);
  };
  const listen = async (s: Server) => {
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    s.unref();
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };
  const gh = createServer(handler('github'));
  const cd = createServer(handler('cdn'));
  srv.origin = await listen(gh);
  cdn = await listen(cd);
  srv.cdn = cdn;
  srv.url = `${srv.origin}${RELEASE_PATH}`;
  const timer = setTimeout(() => void srv.close(), o.lifetimeMs ?? 120_000);
  timer.unref();
  srv.close = async () => {
    clearTimeout(timer);
    for (const s of [gh, cd]) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  };
  return srv;
}
