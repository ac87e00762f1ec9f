// Messages between the fuzz harness (main thread) and its worker.
/** 'selftest' is the harness's own check: its cases succeed, throw, hang or allocate on purpose. */
export type FuzzFormat = 'safetensors' | 'pth' | 'png' | 'jpeg' | 'selftest';

/** A valid file; torch checkpoints also carry their parts, so the pickle can be mutated and re-zipped with valid CRCs. */
export interface BaseFile {
  name: string;
  bytes: Uint8Array;
  pth?: { pickle: Uint8Array; storages: Record<string, Uint8Array> };
}

export interface WorkerIn {
  format: FuzzFormat;
  bases: BaseFile[];
  seeds: number[];
  /** An allocation above this (bytes) fails the case; default 512 MiB. */
  hugeBytes?: number;
  /** Also report each SiloError's message (FUZZ_VERBOSE: which checks the cases stop at). */
  verbose?: boolean;
}

export type WorkerOut =
  | { t: 'start'; seed: number; what: string }
  | { t: 'done'; seed: number; outcome: string; failure: boolean; detail?: string }
  | { t: 'end' };
