// Messages between the training page (train-main.ts) and its worker (train-worker.ts), which owns the
// GPU and the training session, so the page stays responsive during long runs.

import type { DegradationTask } from '../src/solvers/degradations/tasks.js';
import type { ValidationReport } from '../src/solvers/training/trainer.js';
import type { BrowserModelSource } from '../src/restore/models-browser.js';

/** A picked file's name and bytes (transferred, not copied). */
export interface NamedBytes {
  name: string;
  bytes: ArrayBuffer;
}

/** Weights from a URL (fetched by the worker) or from a picked file. */
export type WeightInput = { url: string } | NamedBytes;

/**
 * The frozen models: a TAESD-family autoencoder (CNN only), or a Stable Diffusion model (a Hugging Face
 * repo, the base URL of a diffusers folder, or a picked folder) whose VAE encodes and whose UNet gives
 * e_sigma (and the readout operator's features).
 */
export type PriorInput = { kind: 'taesd'; encoder: WeightInput; decoder?: WeightInput } | { kind: 'sd'; model: Exclude<BrowserModelSource, { kind: 'tiny' }> };

export interface TrainPageSettings {
  operator: 'cnn' | 'readout';
  task: DegradationTask;
  size: number;
  steps: number;
  batch: number;
  lr: number;
  /** Fixed crops encoded once (0: new crops every step). */
  cache: number;
  seed: number;
  /** The operator's hidden widths times this (1: SILO's module; 2 for 32-channel latents such as TAEF2's). */
  width: number;
  valEvery: number;
  checkpointEvery: number;
}

export type ErrorKind = 'no-webgpu' | 'limit' | 'device-lost' | 'image' | 'input' | 'network' | 'other';

export type ToTrainWorker =
  | { type: 'init' }
  | { type: 'train'; images: NamedBytes[]; heldOut: NamedBytes[]; prior: PriorInput; resume?: NamedBytes; kernel?: NamedBytes; settings: TrainPageSettings }
  | { type: 'stop' };

export type FromTrainWorker =
  | { type: 'ready'; adapter: string; software: boolean; tasks: DegradationTask[] }
  | { type: 'log'; line: string }
  | { type: 'cache'; done: number; total: number }
  | { type: 'step'; step: number; total: number; loss: number; elapsedMs: number }
  | { type: 'validation'; report: ValidationReport }
  | { type: 'checkpoint'; step: number; bytes: ArrayBuffer; svg: string; csv: string }
  /** operator: the CNN's .safetensors, or the readout operator's weights.safetensors with its config.json in `config`. */
  | { type: 'done'; step: number; stopped: boolean; operator: ArrayBuffer; config?: string; svg: string; csv: string }
  | { type: 'error'; kind: ErrorKind; message: string };
