// Kernel choices measured on the adapter in use. An op with several correct kernels (conv 3x3: Winograd,
// eight pixels per thread, the general kernel) asks the engine's Tuning for the variant measured fastest
// for its shape; without an entry it keeps its built-in default for the adapter class. The table is
// keyed by the adapter (vendor, architecture, device, description, driver features): a table measured on
// another adapter is ignored, never applied. tune.ts fills it; a store keeps it between runs (Node: a
// JSON file in the cache directory, the browser: localStorage).

import { SiloError } from './errors.js';

export const TUNING_VERSION = 1;

export interface TuningTable {
  version: number;
  /** The adapter the choices were measured on (adapterKey). */
  adapter: string;
  /** op -> shape key -> variant. */
  choices: Record<string, Record<string, string>>;
}

/** Where a table lives between runs. */
export interface TuningStore {
  /** Where it is kept, for messages. */
  readonly where: string;
  /** The stored table's text, or undefined when there is none. */
  read(): Promise<string | undefined>;
  write(text: string): Promise<void>;
}

export class Tuning {
  private choices = new Map<string, Map<string, string>>();

  constructor(readonly adapter: string) {}

  /** The variant chosen for `op` at `shape`, if one was measured. */
  get(op: string, shape: string): string | undefined {
    return this.choices.get(op)?.get(shape);
  }

  set(op: string, shape: string, variant: string): void {
    let m = this.choices.get(op);
    if (!m) this.choices.set(op, (m = new Map()));
    m.set(shape, variant);
  }

  delete(op: string, shape: string): void {
    this.choices.get(op)?.delete(shape);
  }

  get size(): number {
    let n = 0;
    for (const m of this.choices.values()) n += m.size;
    return n;
  }

  toJSON(): TuningTable {
    const choices: Record<string, Record<string, string>> = {};
    for (const [op, m] of this.choices) choices[op] = Object.fromEntries([...m].sort(([a], [b]) => a.localeCompare(b)));
    return { version: TUNING_VERSION, adapter: this.adapter, choices };
  }

  /**
   * Takes the choices of a stored table. Returns why it was not used (another adapter, another version),
   * or undefined when it was; throws SiloError naming `where` when the text is not a tuning table.
   */
  load(text: string, where: string): string | undefined {
    let t: TuningTable;
    try {
      t = JSON.parse(text) as TuningTable;
    } catch (e) {
      throw new SiloError(`tuning table ${where}: not JSON (${(e as Error).message})`);
    }
    const ok =
      t && typeof t === 'object' && typeof t.version === 'number' && typeof t.adapter === 'string' && t.choices && typeof t.choices === 'object' &&
      Object.values(t.choices).every((m) => m && typeof m === 'object' && Object.values(m).every((v) => typeof v === 'string'));
    if (!ok) throw new SiloError(`tuning table ${where}: not a tuning table (expected { version, adapter, choices: { op: { shape: variant } } })`);
    if (t.version !== TUNING_VERSION) return `it is version ${t.version}, this engine reads version ${TUNING_VERSION}`;
    if (t.adapter !== this.adapter) return `it was measured on another adapter (${t.adapter})`;
    for (const [op, m] of Object.entries(t.choices)) for (const [shape, v] of Object.entries(m)) this.set(op, shape, v);
    return undefined;
  }
}

/** What identifies an adapter for tuning: the same GPU and driver give the same table. */
export function adapterKey(info: { vendor: string; architecture: string; device: string; description: string; features: readonly string[] }): string {
  return [info.vendor, info.architecture, info.device, info.description, [...info.features].sort().join('+')].join(' | ');
}

/**
 * Loads the store's table into `tuning`. A missing table is normal; one for another adapter or version
 * is skipped; a damaged one is reported and skipped (the engine runs on its defaults either way).
 */
export async function loadTuning(tuning: Tuning, store: TuningStore, log: (line: string) => void): Promise<boolean> {
  let text: string | undefined;
  try {
    text = await store.read();
  } catch (e) {
    log(`tuning: cannot read ${store.where} (${(e as Error).message}); using the default kernel choices`);
    return false;
  }
  if (text === undefined) return false;
  try {
    const skipped = tuning.load(text, store.where);
    if (skipped) {
      log(`tuning: ${store.where} not used: ${skipped}; using the default kernel choices (run \`silo tune\` for this adapter)`);
      return false;
    }
    log(`tuning: ${tuning.size} kernel choice(s) from ${store.where}`);
    return true;
  } catch (e) {
    log(`tuning: ${(e as Error).message}; using the default kernel choices`);
    return false;
  }
}

/** A store in the origin-private file system (browsers; also in workers, which have no localStorage). */
export function opfsTuningStore(name = 'silo-webgpu-tuning.json'): TuningStore | undefined {
  const storage = (globalThis as { navigator?: { storage?: { getDirectory?: () => Promise<FileSystemDirectoryHandle> } } }).navigator?.storage;
  if (!storage?.getDirectory) return undefined;
  const dir = () => storage.getDirectory!();
  return {
    where: `OPFS ${name}`,
    read: async () => {
      let handle: FileSystemFileHandle;
      try {
        handle = await (await dir()).getFileHandle(name);
      } catch (e) {
        if ((e as DOMException).name === 'NotFoundError') return undefined;
        throw e;
      }
      return (await handle.getFile()).text();
    },
    write: async (text) => {
      const w = await (await (await dir()).getFileHandle(name, { create: true })).createWritable();
      await w.write(text);
      await w.close();
    },
  };
}

/** The browser's store: OPFS where it exists, else localStorage, else none. */
export function browserTuningStore(): TuningStore | undefined {
  return opfsTuningStore() ?? localStorageTuningStore();
}

/** A store in the browser's localStorage (undefined where there is none). */
export function localStorageTuningStore(key = 'silo-webgpu:tuning'): TuningStore | undefined {
  const ls = (globalThis as { localStorage?: Storage }).localStorage;
  if (!ls) return undefined;
  return {
    where: `localStorage["${key}"]`,
    read: async () => ls.getItem(key) ?? undefined,
    write: async (text) => ls.setItem(key, text),
  };
}
