// The browser's model sources, resolved to a ModelSpec for loadModels: a Hugging Face repo or a URL
// (both streamed into the weight store and read from it tensor by tensor), a folder the user picked,
// or the tiny test models served beside the page. The counterpart of models-node.ts; browser-safe.

import { SiloError } from '../engine/errors.js';
import type { FolderAccess } from '../formats/folder.js';
import { directoryHandleFolder, pickedFilesFolder } from '../formats/picked-folder.js';
import { openHubModelInBrowser, openUrlFolderInBrowser, type BrowserSourceOptions, type StoredFolder } from '../hub/hub-browser.js';
import { subFolder } from '../formats/folder.js';
import type { ModelSpec } from './models.js';
import { blobSource } from '../formats/zip.js';
import { operatorFromReleaseZip } from '../hub/silo-release-browser.js';
import { SILO_RELEASE } from '../hub/silo-operators.js';

export type BrowserModelSource =
  | { kind: 'hub'; repo: string; revision?: string; endpoint?: string; token?: string }
  /** The base URL of a diffusers folder. */
  | { kind: 'url'; url: string }
  | { kind: 'folder'; files?: File[]; handle?: FileSystemDirectoryHandle }
  /** The base URL of ../shared/golden (unet_mini, vae_mini, clip_text_mini, silo_cnn). */
  | { kind: 'tiny'; url: string };

export type BrowserOperatorSource =
  | { kind: 'none' }
  /** A CNN operator's .safetensors (SILO's DegradationModel or its preserve network), optionally with e_sigma's file. */
  | { kind: 'url'; url: string; sigmaUrl?: string; sigmaTensor?: string }
  | { kind: 'file'; file: File }
  /** A readout operator's folder (config.json + weights.safetensors) at a base URL, or picked (SILO-RG). */
  | { kind: 'readout-url'; url: string }
  | { kind: 'readout-folder'; files?: File[]; handle?: FileSystemDirectoryHandle }
  /** SILO's released operator for `task`, out of its trained_ckpt.zip the user picked (converted in memory). */
  | { kind: 'release-zip'; file: Blob & { name?: string }; task: string; method?: string; dataset?: 'ffhq' | 'coco' }
  /** The tiny test models' SILO CNN (with the tiny source only). */
  | { kind: 'tiny' };

export interface ResolvedBrowserModels {
  spec: ModelSpec;
  provenance: { model?: unknown; operator?: unknown };
  /**
   * SILO's settings for a released operator (RestoreRequest.operatorDefaults) and the one task it was
   * trained for; undefined for other operators.
   */
  released?: { task: string; method: string; defaults: { eta: number; prompt: string; clampW: boolean; source: string } };
  /** Bytes downloaded while resolving (0 on a visit that found everything in the store). */
  fetchedBytes(): number;
  /** Releases the stored files (call once loadModels has built the models). */
  close(): void;
}

/** A file URL split into its folder and name. */
function splitUrl(url: string): { base: string; name: string } {
  const u = new URL(url, globalThis.location?.href);
  const i = u.pathname.lastIndexOf('/');
  const name = decodeURIComponent(u.pathname.slice(i + 1));
  if (!name) throw new SiloError(`operator URL ${url}: names a folder, not a .safetensors file`);
  return { base: `${u.origin}${u.pathname.slice(0, i)}`, name };
}

const absolute = (url: string) => new URL(url, globalThis.location?.href).href;

export async function resolveBrowserModels(model: BrowserModelSource, operator: BrowserOperatorSource, opts: BrowserSourceOptions): Promise<ResolvedBrowserModels> {
  const sources: StoredFolder[] = [];
  const track = (s: StoredFolder) => (sources.push(s), s);
  let closed = false;
  const close = () => {
    if (!closed) sources.forEach((s) => s.close());
    closed = true;
  };
  try {
    const spec: ModelSpec = {};
    const provenance: ResolvedBrowserModels['provenance'] = {};
    let released: ResolvedBrowserModels['released'];
    let tinyRoot: FolderAccess | undefined;
    switch (model.kind) {
      case 'hub': {
        if (!model.repo.trim()) throw new SiloError('model: give a Hugging Face repo id such as "org/name"');
        const at = model.repo.indexOf('@');
        const repo = at < 0 ? model.repo.trim() : model.repo.slice(0, at).trim();
        const revision = model.revision || (at < 0 ? undefined : model.repo.slice(at + 1).trim());
        const s = track(await openHubModelInBrowser(repo, { ...opts, revision, endpoint: model.endpoint, token: model.token }));
        spec.pipeline = { folder: s.folder, variant: s.variant, label: `${repo}@${revision ?? 'main'}` };
        provenance.model = s.provenance;
        break;
      }
      case 'url': {
        const s = track(openUrlFolderInBrowser(absolute(model.url), opts));
        if (!(await s.folder.exists('model_index.json'))) throw new SiloError(`${s.folder.location}: no model_index.json there; give the base URL of a diffusers Stable Diffusion folder`);
        spec.pipeline = { folder: s.folder, label: s.folder.location };
        provenance.model = s.provenance;
        break;
      }
      case 'folder': {
        const folder = model.handle ? directoryHandleFolder(model.handle) : model.files?.length ? pickedFilesFolder(model.files) : null;
        if (!folder) throw new SiloError('model: pick a folder first (a diffusers Stable Diffusion folder with model_index.json)');
        if (!(await folder.exists('model_index.json'))) throw new SiloError(`${folder.location}: no model_index.json in the picked folder; pick a diffusers Stable Diffusion folder (with unet/, vae/, text_encoder/, tokenizer/)`);
        spec.pipeline = { folder, label: `picked folder ${folder.location}` };
        provenance.model = { folder: folder.location };
        break;
      }
      case 'tiny': {
        const s = track(openUrlFolderInBrowser(absolute(model.url), opts));
        spec.golden = tinyRoot = s.folder;
        provenance.model = s.provenance;
        break;
      }
    }
    switch (operator.kind) {
      case 'none':
        break;
      case 'url': {
        const { base, name } = splitUrl(absolute(operator.url));
        if (!name.endsWith('.safetensors')) throw new SiloError(`operator URL ${operator.url}: operators are read from .safetensors files (convert a PyTorch checkpoint with \`silo convert\`)`);
        const s = track(openUrlFolderInBrowser(base, opts));
        spec.operator = { kind: 'cnn', file: { folder: s.folder, name, label: `${base}/${name}` } };
        provenance.operator = s.provenance;
        if (operator.sigmaUrl) {
          const sg = splitUrl(absolute(operator.sigmaUrl));
          const ss = track(openUrlFolderInBrowser(sg.base, opts));
          spec.sigmaEmb = { folder: ss.folder, name: sg.name, label: `${sg.base}/${sg.name}`, ...(operator.sigmaTensor ? { tensor: operator.sigmaTensor } : {}) };
        }
        break;
      }
      case 'file': {
        const folder = pickedFilesFolder([operator.file], 'picked operator');
        spec.operator = { kind: 'cnn', file: { folder, name: operator.file.name, label: operator.file.name } };
        provenance.operator = { file: operator.file.name, size: operator.file.size };
        break;
      }
      case 'readout-url': {
        const s = track(openUrlFolderInBrowser(absolute(operator.url), opts));
        for (const f of ['config.json', 'weights.safetensors']) {
          if (!(await s.folder.exists(f))) throw new SiloError(`${s.folder.location}: no ${f} there; give the base URL of a readout operator folder (config.json + weights.safetensors, as \`silo convert\` writes it)`);
        }
        spec.operator = { kind: 'readout', folder: s.folder, label: s.folder.location };
        provenance.operator = s.provenance;
        break;
      }
      case 'readout-folder': {
        const folder = operator.handle ? directoryHandleFolder(operator.handle) : operator.files?.length ? pickedFilesFolder(operator.files) : null;
        if (!folder) throw new SiloError('operator: pick the readout operator folder first (config.json + weights.safetensors)');
        for (const f of ['config.json', 'weights.safetensors']) {
          if (!(await folder.exists(f))) throw new SiloError(`${folder.location}: no ${f} in the picked folder; a readout operator folder holds config.json and weights.safetensors`);
        }
        spec.operator = { kind: 'readout', folder, label: `picked folder ${folder.location}` };
        provenance.operator = { folder: folder.location };
        break;
      }
      case 'release-zip': {
        const name = operator.file.name ?? SILO_RELEASE.asset;
        const z = await operatorFromReleaseZip(blobSource(operator.file, name), operator.task, { method: operator.method, dataset: operator.dataset });
        spec.operator = z.operator;
        provenance.operator = z.provenance;
        released = { task: z.row.task, method: z.row.method, defaults: z.defaults };
        opts.log?.(`SILO's ${z.row.method} operator for ${z.row.task} (${z.row.dataset}) from ${name}:${z.row.path}, converted in memory; SILO trained it with the prior ${z.row.prior}`);
        for (const n of z.notes) opts.log?.(n);
        break;
      }
      case 'tiny': {
        if (!tinyRoot) throw new SiloError('operator: the tiny test operator goes with the tiny test models; pick those as the model source, or give an operator URL or file');
        spec.operator = { kind: 'cnn', file: { folder: subFolder(tinyRoot, 'silo_cnn'), name: 'weights.safetensors', label: `${tinyRoot.location}/silo_cnn/weights.safetensors` } };
        break;
      }
    }
    return { spec, provenance, ...(released ? { released } : {}), fetchedBytes: () => sources.reduce((n, s) => n + s.fetchedBytes, 0), close };
  } catch (e) {
    close();
    throw e;
  }
}
