// A PyTorch checkpoint (.pt/.pth/.ckpt, torch.save zip format) to .safetensors (`silo convert`, `silo
// pull`), read with the restricted unpickler (nothing in the checkpoint is executed). Node only.
//
// The output is streamed tensor by tensor (writeSafetensorsFile), so memory stays around one tensor
// and outputs beyond 4 GiB work; it appears only once complete. Nothing is changed silently: NaN/Inf
// in the source and values that overflow a narrower --dtype are refused by default, naming each tensor.

import { SiloError } from '../engine/errors.js';
import { writeSafetensorsFile } from './safetensors-node.js';
import { SAFETENSORS_DTYPES, type SafetensorsDType, type SafetensorsStreamEntry } from './safetensors.js';
import { castChunks, emptyStats, FLOAT_DTYPES, FLOAT_MAX, type CastStats, type FloatDType, type OverflowPolicy } from './float-cast.js';
import { readTorchCheckpointFile } from './torch-checkpoint-node.js';
import { TorchCheckpointError, type TorchCheckpoint, type TorchTensor } from './torch-checkpoint.js';

export type FloatTarget = 'F32' | 'F16' | 'BF16';
export type { OverflowPolicy };

export interface ConvertOptions {
  /** Where the state dict sits in the checkpoint ('/'-separated, e.g. 'state_dict'); found automatically if omitted. */
  keyPath?: string;
  /** Cast floating-point tensors (F64/F32/F16/BF16) to this dtype; integer and bool tensors are kept. */
  dtype?: FloatTarget;
  /** Finite values too large for `dtype`: refuse (default), clamp to the largest finite value, or write ±inf. */
  overflow?: OverflowPolicy;
  /** Convert tensors that already hold NaN/Inf (default: refuse, naming them). */
  allowNonfinite?: boolean;
  /** __metadata__ of the output (none by default, as safetensors' save_file). */
  metadata?: Record<string, string>;
  /** Check the CRC-32 of every zip entry read (default true). */
  verifyCrc?: boolean;
  /** Bytes the tensors may declare in all (default: 4x the file size, see TorchCheckpointOptions). */
  maxTensorBytes?: number;
  /** Materialise expanded (stride-0) views, repeating their data (default: refuse). */
  allowExpanded?: boolean;
}

/** A tensor whose values a cast changed or that held NaN/Inf. */
export interface ValueNote {
  name: string;
  /** The output dtype. */
  dtype: SafetensorsDType;
  /** Values that overflowed (clamped with 'saturate', infinite with 'inf') and the largest magnitude among them. */
  overflow: number;
  maxOverflow: number;
  nan: number;
  inf: number;
}

export interface ConvertReport {
  input: string;
  output: string;
  /** The zip's root folder. */
  root: string;
  keyPath: string[];
  tensors: number;
  /** Bytes of tensor data written. */
  dataBytes: number;
  /** Tensor count per output dtype. */
  dtypes: Partial<Record<SafetensorsDType, number>>;
  /** Non-tensor entries of the state dict that were left out. */
  skipped: string[];
  /** Tensors with overflowing values (only with overflow 'saturate' or 'inf') or NaN/Inf (only with allowNonfinite). */
  notes: ValueNote[];
}

/** Refused conversions (overflow, NaN/Inf): the message names the input and every tensor concerned. */
export class ConvertError extends SiloError {}

const fmt = (x: number) => (x >= 1e6 || x < 1e-3 ? x.toExponential(3) : String(Math.round(x * 1000) / 1000));

/** One line per tensor, at most `max` of them. */
function listTensors(notes: ValueNote[], what: (n: ValueNote) => string, max = 20): string {
  const lines = notes.slice(0, max).map((n) => `  "${n.name}": ${what(n)}`);
  if (notes.length > max) lines.push(`  ... and ${notes.length - max} more`);
  return lines.join('\n');
}

/** Opens `inPath` with the options convert applies (CRC checks on by default). */
export async function openCheckpointForConvert(inPath: string, options: ConvertOptions = {}): Promise<TorchCheckpoint> {
  return readTorchCheckpointFile(inPath, {
    verifyCrc: options.verifyCrc ?? true,
    maxTensorBytes: options.maxTensorBytes,
    allowExpandedTensors: options.allowExpanded,
  });
}

/** Converts `inPath` to `outPath`; the output appears only once complete (written beside it, then renamed). */
export async function convertCheckpoint(inPath: string, outPath: string, options: ConvertOptions = {}): Promise<ConvertReport> {
  const { resolve } = await import('node:path');
  if (resolve(inPath) === resolve(outPath)) throw new TorchCheckpointError(inPath, 'output path is the input path');
  const ckpt = await openCheckpointForConvert(inPath, options);
  try {
    return await convertOpenCheckpoint(ckpt, inPath, outPath, options);
  } finally {
    await ckpt.close();
  }
}

/** Writes the state dict of an open checkpoint (named `inPath` in messages) to `outPath`; the caller closes it. */
export async function convertOpenCheckpoint(ckpt: TorchCheckpoint, inPath: string, outPath: string, options: ConvertOptions = {}): Promise<ConvertReport> {
  const policy = options.overflow ?? 'error';
  const target = options.dtype;
  const sd = ckpt.stateDict(options.keyPath);
  const stats = new Map<string, CastStats>();
  const entries: Record<string, SafetensorsStreamEntry> = {};
  const dtypes: Partial<Record<SafetensorsDType, number>> = {};
  let dataBytes = 0;
  for (const [name, t] of sd.tensors) {
    const isFloat = FLOAT_DTYPES.has(t.dtype);
    const dtype: SafetensorsDType = isFloat && target ? target : t.dtype;
    const s = emptyStats();
    if (isFloat) stats.set(name, s);
    entries[name] = { dtype, shape: t.shape, chunks: () => tensorChunks(ckpt, inPath, name, t, dtype, policy, s) };
    dtypes[dtype] = (dtypes[dtype] ?? 0) + 1;
    dataBytes += t.numel * SAFETENSORS_DTYPES[dtype];
  }
  const notes = (): ValueNote[] =>
    [...stats].filter(([, s]) => s.nan || s.inf || s.overflow).map(([name, s]) => ({ name, dtype: entries[name]!.dtype, ...s }));
  await writeSafetensorsFile(outPath, entries, options.metadata, {
    // Every tensor has been streamed (so every problem is known) but the output is not in place yet.
    beforeCommit: () => {
      const found = notes();
      const nonfinite = found.filter((n) => n.nan || n.inf);
      const overflow = found.filter((n) => n.overflow);
      const parts: string[] = [];
      if (nonfinite.length && !options.allowNonfinite) {
        parts.push(
          `${nonfinite.length} tensor(s) already hold NaN or Inf:\n${listTensors(nonfinite, (n) => `${n.nan} NaN, ${n.inf} Inf`)}\n` +
            '  (pass --allow-nonfinite to convert them as they are)',
        );
      }
      if (overflow.length && policy === 'error') {
        const max = FLOAT_MAX[target as FloatDType];
        parts.push(
          `${overflow.length} tensor(s) hold values beyond ${target}'s ±${max}, which would become ±inf:\n` +
            `${listTensors(overflow, (n) => `${n.overflow} value(s), largest magnitude ${fmt(n.maxOverflow)}`)}\n` +
            `  (--overflow saturate clamps them to ±${max}; --overflow inf keeps the infinities)`,
        );
      }
      if (parts.length) throw new ConvertError(`${inPath}: not converted (nothing written to ${outPath}):\n${parts.join('\n')}`);
    },
  });
  const kept = notes().filter((n) => (n.overflow && policy !== 'error') || ((n.nan || n.inf) && options.allowNonfinite));
  return { input: inPath, output: outPath, root: ckpt.root, keyPath: sd.keyPath, tensors: sd.tensors.size, dataBytes, dtypes, skipped: sd.skipped, notes: kept };
}

/** One tensor's output bytes, read when the writer reaches it and cast chunk by chunk. */
async function* tensorChunks(
  ckpt: TorchCheckpoint,
  inPath: string,
  name: string,
  t: TorchTensor,
  dtype: SafetensorsDType,
  policy: OverflowPolicy,
  stats: CastStats,
): AsyncGenerator<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await ckpt.tensorBytes(t);
  } catch (e) {
    if (e instanceof SiloError) throw e;
    throw new TorchCheckpointError(inPath, `tensor "${name}": cannot read its data: ${(e as Error).message}`);
  }
  if (!FLOAT_DTYPES.has(t.dtype)) {
    yield bytes;
    return;
  }
  yield* castChunks(bytes, t.dtype as FloatDType, dtype as FloatDType, policy, stats);
}

/** Warnings for what the conversion changed or kept on request: one line per tensor. */
export function convertNotes(r: ConvertReport, policy: OverflowPolicy): string[] {
  const out: string[] = [];
  for (const n of r.notes) {
    if (n.overflow) {
      const max = FLOAT_MAX[n.dtype as FloatDType];
      const what = policy === 'saturate' ? `clamped to ±${max}` : 'written as ±inf';
      out.push(`warning: "${n.name}": ${n.overflow} value(s) beyond ${n.dtype}'s ±${max} ${what} (largest magnitude ${fmt(n.maxOverflow)})`);
    }
    if (n.nan || n.inf) out.push(`warning: "${n.name}": kept ${n.nan} NaN and ${n.inf} Inf value(s) from the source`);
  }
  return out;
}
