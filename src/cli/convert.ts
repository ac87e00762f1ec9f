// `silo convert`: a PyTorch checkpoint (.pt/.pth/.ckpt, torch.save zip format) to .safetensors, read
// with the restricted unpickler (nothing in the checkpoint is executed). Node only.

import { bf16BitsArrayToF32, f16BitsArrayToF32, f32Entry, serializeSafetensors, type SafetensorsDType, type SafetensorsEntry } from '../formats/safetensors.js';
import { readTorchCheckpointFile } from '../formats/torch-checkpoint-node.js';
import { TorchCheckpointError, type TorchCheckpoint, type TorchTensor } from '../formats/torch-checkpoint.js';

export type FloatTarget = 'F32' | 'F16' | 'BF16';

export interface ConvertOptions {
  /** Where the state dict sits in the checkpoint ('/'-separated, e.g. 'state_dict'); found automatically if omitted. */
  keyPath?: string;
  /** Cast floating-point tensors (F64/F32/F16/BF16) to this dtype; integer and bool tensors are kept. */
  dtype?: FloatTarget;
  /** __metadata__ of the output (none by default, as safetensors' save_file). */
  metadata?: Record<string, string>;
  /** Check the CRC-32 of every zip entry read (default true). */
  verifyCrc?: boolean;
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
}

const FLOATS: ReadonlySet<SafetensorsDType> = new Set(['F64', 'F32', 'F16', 'BF16']);

/** Converts `inPath` to `outPath`; the output appears only once complete (written beside it, then renamed). */
export async function convertCheckpoint(inPath: string, outPath: string, options: ConvertOptions = {}): Promise<ConvertReport> {
  const { resolve } = await import('node:path');
  const { writeFile, rename, rm } = await import('node:fs/promises');
  if (resolve(inPath) === resolve(outPath)) throw new TorchCheckpointError(inPath, 'output path is the input path');
  const ckpt = await readTorchCheckpointFile(inPath, { verifyCrc: options.verifyCrc ?? true });
  let entries: Record<string, SafetensorsEntry>;
  let report: ConvertReport;
  try {
    const sd = ckpt.stateDict(options.keyPath);
    entries = {};
    const dtypes: Partial<Record<SafetensorsDType, number>> = {};
    let dataBytes = 0;
    for (const [name, t] of sd.tensors) {
      const e = await toEntry(ckpt, t, options.dtype);
      entries[name] = e;
      dtypes[e.dtype] = (dtypes[e.dtype] ?? 0) + 1;
      dataBytes += e.data.byteLength;
    }
    report = { input: inPath, output: outPath, root: ckpt.root, keyPath: sd.keyPath, tensors: sd.tensors.size, dataBytes, dtypes, skipped: sd.skipped };
  } finally {
    await ckpt.close();
  }
  const bytes = serializeSafetensors(entries, options.metadata);
  const partial = `${outPath}.partial-${process.pid}`;
  try {
    await writeFile(partial, bytes);
    await rename(partial, outPath);
  } catch (e) {
    await rm(partial, { force: true });
    throw new TorchCheckpointError(inPath, `cannot write ${outPath}: ${(e as Error).message}`);
  }
  return report;
}

async function toEntry(ckpt: TorchCheckpoint, t: TorchTensor, target: FloatTarget | undefined): Promise<SafetensorsEntry> {
  const bytes = await ckpt.tensorBytes(t);
  if (!target || target === t.dtype || !FLOATS.has(t.dtype)) return { dtype: t.dtype, shape: t.shape, data: bytes };
  // Typed views need aligned offsets: storages read from disk are, in-memory archives may not be.
  const own = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  let f32: Float32Array;
  if (t.dtype === 'F32') f32 = new Float32Array(own.buffer, own.byteOffset, t.numel);
  else if (t.dtype === 'F16') f32 = f16BitsArrayToF32(new Uint16Array(own.buffer, own.byteOffset, t.numel));
  else if (t.dtype === 'BF16') f32 = bf16BitsArrayToF32(new Uint16Array(own.buffer, own.byteOffset, t.numel));
  else f32 = Float32Array.from(new Float64Array(own.buffer, own.byteOffset, t.numel));
  return f32Entry(f32, t.shape, target);
}
