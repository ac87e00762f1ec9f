// The contract between `silo check` and the per-module case runners. A runner reads a case folder in
// ../shared/golden's format (manifest.json, config, weights, golden.safetensors), builds the module
// from the folder's own config (never from constants matching one fixture), runs it on the folder's
// inputs and returns each output beside its golden tensor and tolerance. It takes every input.* tensor
// and every choice the manifest names, and refuses (CaseError, contract.ts) any it does not understand.

import type { Engine } from '../engine/device.js';
import type { CaseFiles } from './files.js';
import type { CheckItem } from './compare.js';

export interface CaseOptions {
  /** Storage dtype for weights/activations where the module supports f16 (tolerances loosen). */
  dtype?: 'f32' | 'f16';
  log?: (line: string) => void;
  /**
   * Multi-step cases (silo_step): run only the first N stored steps (slow adapters). The case is still
   * validated whole; the skipped steps' tensors are logged as not compared, never counted as passing.
   */
  maxSteps?: number;
}

export type CaseRunner = (engine: Engine, files: CaseFiles, manifest: Record<string, unknown>, opts: CaseOptions) => Promise<CheckItem[]>;
