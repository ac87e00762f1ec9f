// Blur kernels read from files (DPS's motion-blur kernels are saved with np.save): .npy (float32 /
// float64, 2-D), a plain text matrix (rows of numbers separated by whitespace or commas), a
// safetensors file holding one 2-D tensor, or a grayscale PNG (8 or 16 bit; the PNG decoder is async,
// so PNG needs loadBlurKernel, the others also parse synchronously with parseBlurKernel). The format
// is told by the magic bytes, else by the file name's extension.
//
// Normalisation rule: every tap must be finite; the kernel is divided by the sum of its taps, which
// must be positive (and not a cancellation: >= 1e-6 of the sum of |taps|), so a blur keeps the mean
// brightness. Negative taps are allowed if the sum is positive. The kernel must be square; an even
// side gets a zero row appended at the bottom and a zero column at the right, so tap (s/2, s/2) is the
// centre, as for torch's Conv2d with padding s // 2 and scipy.ndimage's default origin.

import type { Engine } from '../../engine/device.js';
import { ArgumentError } from '../../engine/errors.js';
import { parseSafetensors } from '../../formats/safetensors.js';
import { decodePng16 } from '../../io/png.js';
import { BlurOperator } from './blur.js';

export type KernelFileFormat = 'npy' | 'text' | 'safetensors' | 'png';

export interface BlurKernel {
  /** Odd side of the square kernel (after padding an even one). */
  size: number;
  /** Row-major [size, size] taps summing to 1 (float64). */
  kernel: Float64Array;
  format: KernelFileFormat;
  /** The file's own side before padding to odd. */
  fileSize: number;
  /** The file name it was read from (for messages and descriptions). */
  source: string;
}

/** A file that cannot be read as a blur kernel; the message names the file. */
export class KernelFileError extends ArgumentError {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`blur kernel file ${file}: ${detail}`);
  }
}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function startsWith(bytes: Uint8Array, magic: number[]): boolean {
  return bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b);
}

/** A 2-D matrix as read from a file, before validation. */
export interface KernelMatrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

/** NPY format versions 1-3: magic, version, header length (u16 or u32), a Python dict literal, data. */
function parseNpy(bytes: Uint8Array, file: string): KernelMatrix {
  const fail = (d: string) => new KernelFileError(file, `.npy: ${d}`);
  if (!startsWith(bytes, NPY_MAGIC)) throw fail('does not start with the magic \\x93NUMPY');
  if (bytes.length < 10) throw fail(`file is ${bytes.length} bytes, too short for a header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6]!;
  if (major < 1 || major > 3) throw fail(`unsupported format version ${major}.${bytes[7]}`);
  const headerLen = major === 1 ? view.getUint16(8, true) : bytes.length >= 12 ? view.getUint32(8, true) : Infinity;
  const dataStart = (major === 1 ? 10 : 12) + headerLen;
  if (dataStart > bytes.length) throw fail(`header of ${headerLen} bytes runs past the end of the ${bytes.length}-byte file (truncated?)`);
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(major === 1 ? 10 : 12, dataStart));
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(header)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw fail(`header ${JSON.stringify(header.trim())} lacks descr, fortran_order or shape`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => Number(s.replace(/L$/, '')));
  if (shape.length !== 2 || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw fail(`shape (${shapeText.trim()}) is not a 2-D matrix`);
  const m = /^([<>=|])f([48])$/.exec(descr);
  if (!m) throw fail(`dtype '${descr}' is not float32 or float64`);
  const little = m[1] !== '>'; // '=' is native: little-endian on every WebGPU host
  const item = Number(m[2]);
  const [rows, cols] = shape as [number, number];
  const count = rows * cols;
  if (bytes.length - dataStart !== count * item) throw fail(`holds ${bytes.length - dataStart} data bytes, expected ${count * item} for ${descr} (${rows}, ${cols})`);
  const data = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const v = item === 4 ? view.getFloat32(dataStart + 4 * i, little) : view.getFloat64(dataStart + 8 * i, little);
    // Fortran order stores columns first: element i is (i % rows, i / rows).
    data[fortran === 'True' ? (i % rows) * cols + Math.floor(i / rows) : i] = v;
  }
  return { rows, cols, data };
}

/** Rows of numbers separated by whitespace, commas or semicolons; blank lines and '#' comments skipped. */
function parseText(bytes: Uint8Array, file: string): KernelMatrix {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new KernelFileError(file, 'is neither .npy, safetensors nor UTF-8 text');
  }
  const rowsOut: number[][] = [];
  text.split(/\r?\n/).forEach((line, lineNo) => {
    const body = line.replace(/#.*/, '').trim();
    if (body === '') return;
    const tokens = body.split(/[\s,;]+/).filter((t) => t !== '');
    rowsOut.push(
      tokens.map((t, col) => {
        const v = Number(t);
        if (!Number.isFinite(v)) throw new KernelFileError(file, `line ${lineNo + 1}, column ${col + 1}: '${t}' is not a finite number`);
        return v;
      }),
    );
  });
  if (rowsOut.length === 0) throw new KernelFileError(file, 'holds no numbers');
  const cols = rowsOut[0]!.length;
  const ragged = rowsOut.findIndex((r) => r.length !== cols);
  if (ragged >= 0) throw new KernelFileError(file, `row ${ragged + 1} has ${rowsOut[ragged]!.length} values, row 1 has ${cols}`);
  return { rows: rowsOut.length, cols, data: Float64Array.from(rowsOut.flat()) };
}

function parseKernelSafetensors(bytes: Uint8Array, file: string): KernelMatrix {
  const st = parseSafetensors(bytes, file);
  const names = st.names();
  if (names.length !== 1) throw new KernelFileError(file, `safetensors must hold exactly one tensor, found ${names.length} (${names.slice(0, 5).join(', ')})`);
  const name = names[0]!;
  const info = st.info(name);
  if (info.shape.length !== 2) throw new KernelFileError(file, `tensor "${name}" has shape [${info.shape.join(', ')}], expected a 2-D matrix`);
  const data = info.dtype === 'F64' ? Float64Array.from(st.getRaw(name) as Float64Array) : Float64Array.from(st.getF32(name));
  return { rows: info.shape[0]!, cols: info.shape[1]!, data };
}

/** Validates, normalises to sum 1 and pads an even side to odd (the rule in the file comment). */
export function normalizeBlurKernel(m: KernelMatrix, file: string): { size: number; kernel: Float64Array } {
  const { rows, cols, data } = m;
  if (rows !== cols) throw new KernelFileError(file, `kernel is ${rows}x${cols}, expected a square matrix`);
  if (rows === 0) throw new KernelFileError(file, 'kernel is empty (0x0)');
  let sum = 0;
  let sumAbs = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isFinite(v)) throw new KernelFileError(file, `tap (${Math.floor(i / cols)}, ${i % cols}) is ${v}; every tap must be finite`);
    sum += v;
    sumAbs += Math.abs(v);
  }
  if (sumAbs === 0) throw new KernelFileError(file, 'kernel is all zeros, it cannot be normalised to sum 1');
  if (!(sum > 0)) throw new KernelFileError(file, `taps sum to ${sum}; a blur kernel needs a positive sum to be normalised to 1`);
  if (sum < 1e-6 * sumAbs) throw new KernelFileError(file, `taps sum to ${sum}, a cancellation of taps of total magnitude ${sumAbs}; normalising would amplify it`);
  const size = rows % 2 === 1 ? rows : rows + 1;
  const kernel = new Float64Array(size * size);
  for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) kernel[y * size + x] = data[y * cols + x]! / sum;
  return { size, kernel };
}

type Sniffed = 'npy' | 'png' | 'safetensors' | 'text';

function sniff(b: Uint8Array, name: string): Sniffed {
  const ext = /\.([a-z0-9]+)$/i.exec(name)?.[1]?.toLowerCase();
  // safetensors: u64 LE header length (small, so its high bytes are 0), then '{'.
  const looksSafetensors = b.length >= 9 && b[8] === 0x7b && b[4] === 0 && b[5] === 0 && b[6] === 0 && b[7] === 0;
  if (startsWith(b, NPY_MAGIC) || ext === 'npy') return 'npy';
  if (startsWith(b, PNG_MAGIC) || ext === 'png') return 'png';
  if (looksSafetensors || ext === 'safetensors') return 'safetensors';
  return 'text';
}

function finish(m: KernelMatrix, format: KernelFileFormat, name: string): BlurKernel {
  const { size, kernel } = normalizeBlurKernel(m, name);
  return { size, kernel, format, fileSize: m.rows, source: name };
}

function parseSync(b: Uint8Array, format: Exclude<Sniffed, 'png'>, name: string): KernelMatrix {
  if (format === 'npy') return parseNpy(b, name);
  if (format === 'text') return parseText(b, name);
  try {
    return parseKernelSafetensors(b, name);
  } catch (e) {
    if (e instanceof KernelFileError) throw e;
    throw new KernelFileError(name, (e as Error).message);
  }
}

/** A grayscale PNG (8 or 16 bit): the kernel is the sample values (their scale is normalised away). */
async function parsePng(b: Uint8Array, name: string): Promise<KernelMatrix> {
  let img;
  try {
    img = await decodePng16(b, name, { maxPixels: 1 << 20 });
  } catch (e) {
    throw new KernelFileError(name, (e as Error).message);
  }
  if (img.channels !== 1) {
    throw new KernelFileError(name, `PNG is ${img.header.colorType}${img.channels === 2 ? ' (transparency)' : ''} with ${img.channels} channels; a kernel must be a grayscale PNG without alpha`);
  }
  return { rows: img.height, cols: img.width, data: Float64Array.from(img.data) };
}

/**
 * Reads a blur kernel (npy, text, safetensors, grayscale PNG) from a file's bytes; `name`, the file
 * name or path, picks the format when the magic bytes do not and labels errors. Rejects with a
 * KernelFileError naming the file when the format, dtype, shape or values are not acceptable.
 */
export async function loadBlurKernel(bytes: ArrayBuffer | Uint8Array, name: string): Promise<BlurKernel> {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const format = sniff(b, name);
  if (format === 'png') return finish(await parsePng(b, name), 'png', name);
  return finish(parseSync(b, format, name), format, name);
}

/** loadBlurKernel without the await, for npy, text and safetensors files (PNG is rejected: its decoder is async). */
export function parseBlurKernel(bytes: ArrayBuffer | Uint8Array, name: string): BlurKernel {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const format = sniff(b, name);
  if (format === 'png') throw new KernelFileError(name, 'PNG kernels are decoded asynchronously: use loadBlurKernel');
  return finish(parseSync(b, format, name), format, name);
}

/** A BlurOperator named 'motion_blur' with a kernel read from a file (see loadBlurKernel). */
export function motionBlurOperator(engine: Engine, k: BlurKernel): BlurOperator {
  return new BlurOperator(engine, { size: k.size, kernel: k.kernel, name: 'motion_blur' });
}
