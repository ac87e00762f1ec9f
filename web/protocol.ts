// The messages between the page (main.ts) and its worker (worker.ts), which owns the GPU, the weight
// store and the restoration session, so the page stays responsive while models load and run.

import type { BrowserModelSource, BrowserOperatorSource } from '../src/restore/models-browser.js';
import type { StoreKind } from '../src/hub/weight-store.js';
import type { RestoreMethod } from '../src/restore/registry.js';
import type { DegradationTask } from '../src/solvers/degradations/tasks.js';

/** Pixels as the canvas takes them (RGBA, 8 bits). */
export interface Rgba {
  width: number;
  height: number;
  data: Uint8ClampedArray;
}

export interface RunSettings {
  task: DegradationTask;
  method: RestoreMethod;
  steps: number;
  seed: number;
  /** The restored image's side (a multiple of 8). */
  size: number;
  /** Decode the x0 estimate every k steps (0: never). */
  previewEvery: number;
  prompt?: string;
}

/** Where an error happened and what kind it is, so the page can say what to do. */
export type ErrorKind = 'no-webgpu' | 'limit' | 'device-lost' | 'image' | 'quota' | 'network' | 'input' | 'other';

/** What the page offers, from the restoration layer's registry and defaults (so the page imports no engine code). */
export interface Catalog {
  methods: { name: RestoreMethod; label: string; operator: 'cnn' | 'readout' | null }[];
  tasks: DegradationTask[];
  defaults: { steps: number; seed: number; prompt: string };
  /** Tasks SILO released an operator for (the release-zip operator source). */
  releasedTasks: DegradationTask[];
}

export type ToWorker =
  | { type: 'init'; cache: StoreKind | 'auto'; limits?: Record<string, number> }
  | { type: 'load'; model: BrowserModelSource; operator: BrowserOperatorSource }
  | { type: 'run'; image: ArrayBuffer; imageName: string; role: 'ground-truth' | 'measurement'; settings: RunSettings }
  | { type: 'cancel' }
  | { type: 'cache-info' }
  | { type: 'clear-cache' };

export type FromWorker =
  | { type: 'ready'; adapter: string; software: boolean; cache: StoreKind; limits: Record<string, number>; catalog: Catalog }
  | { type: 'log'; line: string }
  | { type: 'download'; file: string; bytes: number; total: number | null; rate: number; etaSeconds: number | null }
  | {
      type: 'loaded'; notes: string[]; fetchedBytes: number; operatorSize?: number; operator: 'cnn' | 'readout' | null; loadMs: number;
      /** A released SILO operator: the task it was trained for and SILO's settings for it. */
      released?: { task: DegradationTask; method: RestoreMethod; prompt: string; eta: number };
    }
  | { type: 'started'; size: number; input: Rgba }
  | { type: 'progress'; step: number; total: number; elapsedMs: number; residual?: number }
  | { type: 'preview'; step: number; total: number; image: Rgba }
  | { type: 'done'; image: Rgba; measurement: Rgba; metrics: Record<string, number | null>; report: string }
  | { type: 'cancelled'; message: string }
  | { type: 'cache'; kind: StoreKind; entries: number; bytes: number }
  | { type: 'error'; during: 'init' | 'load' | 'run' | 'cache'; kind: ErrorKind; message: string };
