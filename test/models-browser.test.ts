// The browser's model sources resolved to ModelSpecs and loaded (resolveBrowserModels + loadModels), in
// Node on the memory weight store: the tiny models by URL with their CNN, a readout operator folder by
// URL (SILO-RG), the hub imitation's tiny SD with a CNN operator and e_sigma by URL, picked files
// (File objects as <input webkitdirectory> gives them); and the messages for sources that cannot work.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../src/engine/device.js';
import { openWeightStore, type WeightStore } from '../src/hub/weight-store.js';
import { loadModels } from '../src/restore/models.js';
import { resolveBrowserModels, type BrowserModelSource, type BrowserOperatorSource } from '../src/restore/models-browser.js';
import { getEngine } from './helpers/engine.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import { startHubServer, type HubServer } from './helpers/hub-server.js';
import { serveDir } from './helpers/static-server.js';

let engine: Engine;
let golden: { base: string; close: () => void };
let hub: HubServer;
beforeAll(async () => {
  engine = await getEngine();
  golden = await serveDir(GOLDEN_ROOT);
  hub = await startHubServer();
}, 60_000);
afterAll(async () => {
  golden?.close();
  await hub?.close();
});

async function resolveAndLoad(model: BrowserModelSource, operator: BrowserOperatorSource, store?: WeightStore) {
  const resolved = await resolveBrowserModels(model, operator, { store: store ?? (await openWeightStore('memory')) });
  try {
    const models = await loadModels(engine, resolved.spec);
    return { resolved, models };
  } finally {
    resolved.close();
  }
}

/** Files as a picked folder gives them: each with its path under the folder's own name. */
function pickedFiles(dir: string, root: string): File[] {
  const out: File[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else {
        const f = new File([readFileSync(join(dir, r))], e.name);
        Object.defineProperty(f, 'webkitRelativePath', { value: `${root}/${r}` });
        out.push(f);
      }
    }
  };
  walk('');
  return out;
}

describe('resolveBrowserModels', () => {
  it('the tiny models by URL with their SILO CNN (and its e_sigma), stored once', async () => {
    const store = await openWeightStore('memory');
    const { resolved, models } = await resolveAndLoad({ kind: 'tiny', url: `${golden.base}/` }, { kind: 'tiny' }, store);
    try {
      expect(models.base.cnn).toBeDefined();
      expect(models.base.sigmaEmb?.shape).toEqual([1, 1280]);
      expect(models.operatorLatentSize).toBe(64);
      expect(resolved.fetchedBytes()).toBeGreaterThan(30e6);
      expect((resolved.provenance.model as { url: string }).url).toBe(golden.base);
    } finally {
      models.dispose();
    }
    const again = await resolveAndLoad({ kind: 'tiny', url: `${golden.base}/` }, { kind: 'tiny' }, store);
    expect(again.resolved.fetchedBytes()).toBe(0);
    again.models.dispose();
  }, 120_000);

  it('a readout operator folder by URL makes SILO-RG available', async () => {
    const { models } = await resolveAndLoad({ kind: 'tiny', url: golden.base }, { kind: 'readout-url', url: `${golden.base}/silo_rg/` });
    try {
      expect(models.base.readout).toBeDefined();
      expect(models.base.cnn).toBeUndefined();
      expect(models.notes.join('\n')).toMatch(/readout operator .*silo_rg/);
    } finally {
      models.dispose();
    }
  }, 120_000);

  it("the hub's tiny SD (fp16 UNet) with a CNN operator and e_sigma by URL", async () => {
    const op: BrowserOperatorSource = { kind: 'url', url: `${golden.base}/silo_cnn/weights.safetensors`, sigmaUrl: `${golden.base}/silo_cnn/golden.safetensors`, sigmaTensor: 'input.sigma_emb' };
    const { resolved, models } = await resolveAndLoad({ kind: 'hub', repo: hub.repoId, endpoint: hub.endpoint }, op);
    try {
      expect(models.base.cnn).toBeDefined();
      expect(models.base.sigmaEmb?.shape).toEqual([1, 1280]);
      expect(resolved.provenance.model).toMatchObject({ repo: hub.repoId, commit: hub.commit });
      expect(models.notes.join('\n')).toMatch(/diffusers pipeline from silo-test\/tiny-sd@main/);
    } finally {
      models.dispose();
    }
  }, 120_000);

  it('"org/name@revision" in the repo field pins the revision', async () => {
    const store = await openWeightStore('memory');
    const r = await resolveBrowserModels({ kind: 'hub', repo: `${hub.repoId}@${hub.commit}`, endpoint: hub.endpoint }, { kind: 'none' }, { store });
    r.close();
    expect(r.provenance.model).toMatchObject({ revision: hub.commit, commit: hub.commit });
    expect(r.spec.pipeline?.variant).toBe('fp16');
  });

  it('a picked folder (files with their relative paths) and a picked operator file', async () => {
    const dir = join(GOLDEN_ROOT, 'silo_rg');
    const picked = await resolveBrowserModels(
      { kind: 'folder', files: [new File(['{}'], 'model_index.json')].map((f) => Object.defineProperty(f, 'webkitRelativePath', { value: 'sd/model_index.json' })) },
      { kind: 'readout-folder', files: pickedFiles(dir, 'silo_rg') },
      { store: await openWeightStore('memory') },
    );
    picked.close();
    expect(picked.spec.pipeline?.label).toBe('picked folder sd');
    expect(picked.spec.operator).toMatchObject({ kind: 'readout', label: 'picked folder silo_rg' });
    const op = picked.spec.operator as { folder: { exists(n: string): Promise<boolean>; text(n: string): Promise<string> } };
    expect(await op.folder.exists('weights.safetensors')).toBe(true);
    expect(JSON.parse(await op.folder.text('config.json'))).toMatchObject({ projection_dim: 384 });
  });

  it('sources that cannot work say why', async () => {
    const store = await openWeightStore('memory');
    const fail = (m: BrowserModelSource, o: BrowserOperatorSource) => resolveBrowserModels(m, o, { store }).then(() => 'resolved', (e: Error) => e.message);
    expect(await fail({ kind: 'hub', repo: ' ' }, { kind: 'none' })).toMatch(/give a Hugging Face repo id/);
    expect(await fail({ kind: 'url', url: `${golden.base}/unet_mini/` }, { kind: 'none' })).toMatch(/no model_index\.json there; give the base URL of a diffusers Stable Diffusion folder/);
    expect(await fail({ kind: 'folder' }, { kind: 'none' })).toMatch(/pick a folder first/);
    expect(await fail({ kind: 'folder', files: [new File(['x'], 'x.txt')] }, { kind: 'none' })).toMatch(/no model_index\.json in the picked folder/);
    expect(await fail({ kind: 'tiny', url: golden.base }, { kind: 'url', url: `${golden.base}/silo_cnn/` })).toMatch(/names a folder, not a \.safetensors file/);
    expect(await fail({ kind: 'tiny', url: golden.base }, { kind: 'url', url: `${golden.base}/silo_cnn/manifest.json` })).toMatch(/operators are read from \.safetensors files/);
    expect(await fail({ kind: 'tiny', url: golden.base }, { kind: 'readout-url', url: `${golden.base}/silo_cnn/` })).toMatch(/no config\.json there/);
    expect(await fail({ kind: 'tiny', url: golden.base }, { kind: 'readout-url', url: `${golden.base}/unet_mini/` })).toMatch(/no weights\.safetensors there/);
    expect(await fail({ kind: 'tiny', url: golden.base }, { kind: 'readout-folder' })).toMatch(/pick the readout operator folder first/);
    expect(await fail({ kind: 'hub', repo: hub.repoId, endpoint: hub.endpoint }, { kind: 'tiny' })).toMatch(/the tiny test operator goes with the tiny test models/);
  });
});
