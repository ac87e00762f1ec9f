// A read-only zip reader for model checkpoints (PyTorch's torch.save writes zip archives), browser-safe.
// It reads the central directory, checks every entry against its local header and the file bounds up
// front (declared sizes included: nothing is allocated for a size the file cannot back), and extracts
// stored and deflated entries (inflated by the shared helper in inflate.ts) with size and CRC-32 checks. Zip64 is read where sizes or offsets need it. Nothing is ever written
// to disk from an entry name, but names that could escape a folder ('..', absolute paths) are refused
// anyway: a checkpoint that holds them is not one torch wrote.

import { SiloError } from '../engine/errors.js';
import { InflateError, inflateExact, plausibleInflatedSize, DEFLATE_MAX_RATIO } from './inflate.js';

/** Random access to the archive's bytes: a file handle in Node, a Blob in browsers, or memory. */
export interface ByteSource {
  /** What errors call the archive (a path or URL). */
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes from `offset` (the caller keeps offset + length <= size). */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases what the source holds open (a file handle); optional. */
  close?(): Promise<void>;
}

export function bytesSource(bytes: Uint8Array, name: string): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
  };
}

export function blobSource(blob: Blob, name: string): ByteSource {
  return {
    name,
    size: blob.size,
    read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()),
  };
}

/** A malformed or refused archive; `file` and `entry` say where. */
export class ZipError extends SiloError {
  constructor(
    readonly file: string,
    readonly entry: string | null,
    detail: string,
  ) {
    super(`zip ${file}${entry === null ? '' : `, entry "${entry}"`}: ${detail}`);
  }
}

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: 0 | 8;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  /** Where the entry's (compressed) data starts in the archive. */
  dataOffset: number;
}

export interface ZipOpenOptions {
  /** Most entries accepted (a defence against absurd central directories). Default 1,000,000. */
  maxEntries?: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;

let crcTable: Uint32Array | null = null;
/** CRC-32 (IEEE, as zip uses), four bytes a step through four 256-entry tables (slicing by 4). */
export function crc32(data: Uint8Array, seed = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(4 * 256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
    for (let n = 0; n < 256; n++) {
      for (let t = 1; t < 4; t++) {
        const prev = crcTable[(t - 1) * 256 + n]!;
        crcTable[t * 256 + n] = (crcTable[prev & 0xff]! ^ (prev >>> 8)) >>> 0;
      }
    }
  }
  const T = crcTable;
  let c = ~seed >>> 0;
  let i = 0;
  const n4 = data.length & ~3;
  for (; i < n4; i += 4) {
    c ^= data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    c = T[768 + (c & 0xff)]! ^ T[512 + ((c >>> 8) & 0xff)]! ^ T[256 + ((c >>> 16) & 0xff)]! ^ T[c >>> 24]!;
  }
  for (; i < data.length; i++) c = T[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** Why an entry name is unsafe, or null. */
function unsafeName(name: string): string | null {
  if (name.length === 0) return 'empty name';
  if (name.includes('\0')) return 'NUL in name';
  if (name.includes('\\')) return 'backslash in name';
  if (name.startsWith('/')) return 'absolute path';
  if (/^[A-Za-z]:/.test(name)) return 'drive letter';
  if (name.split('/').some((part) => part === '..')) return "'..' path segment";
  return null;
}

export class ZipArchive {
  private constructor(
    readonly source: ByteSource,
    private readonly byName: Map<string, ZipEntry>,
  ) {}

  get name(): string {
    return this.source.name;
  }

  /** Reads and validates the central directory and every local header. */
  static async open(source: ByteSource, options: ZipOpenOptions = {}): Promise<ZipArchive> {
    const maxEntries = options.maxEntries ?? 1_000_000;
    const fail = (detail: string, entry: string | null = null) => new ZipError(source.name, entry, detail);
    const size = source.size;
    if (!Number.isSafeInteger(size) || size < EOCD_SIZE) throw fail(`file is ${size} bytes, too short to be a zip archive`);

    // End of central directory: the last signature whose comment length reaches exactly the end.
    const tailLen = Math.min(size, EOCD_SIZE + MAX_COMMENT);
    const tailStart = size - tailLen;
    const tail = await source.read(tailStart, tailLen);
    const tv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    let eocd = -1;
    for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) === tailLen) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      const head = await source.read(0, 4);
      const isZipStart = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === SIG_LOCAL;
      throw fail(isZipStart ? 'end of central directory not found (truncated archive?)' : 'not a zip archive (no end of central directory record)');
    }
    const diskNo = tv.getUint16(eocd + 4, true);
    const cdDisk = tv.getUint16(eocd + 6, true);
    let countDisk: number = tv.getUint16(eocd + 8, true);
    let count: number = tv.getUint16(eocd + 10, true);
    let cdSize: number = tv.getUint32(eocd + 12, true);
    let cdOffset: number = tv.getUint32(eocd + 16, true);
    const eocdAbs = tailStart + eocd;
    let cdEnd = eocdAbs;

    const needs64 = count === 0xffff || countDisk === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff;
    const locAbs = eocdAbs - 20;
    let hasLocator = false;
    if (locAbs >= 0) {
      const loc = await source.read(locAbs, 20);
      const lv = new DataView(loc.buffer, loc.byteOffset, 20);
      if (lv.getUint32(0, true) === SIG_EOCD64_LOCATOR) {
        hasLocator = true;
        if (lv.getUint32(4, true) !== 0 || lv.getUint32(16, true) > 1) throw fail('multi-disk (split) archives are not supported');
        const rec64 = big(lv.getBigUint64(8, true), 'zip64 end of central directory offset', fail);
        if (rec64 + 56 > locAbs) throw fail(`zip64 end of central directory offset ${rec64} is out of bounds`);
        const r = await source.read(rec64, 56);
        const rv = new DataView(r.buffer, r.byteOffset, 56);
        if (rv.getUint32(0, true) !== SIG_EOCD64) throw fail(`no zip64 end of central directory record at offset ${rec64}`);
        if (rv.getUint32(16, true) !== 0 || rv.getUint32(20, true) !== 0) throw fail('multi-disk (split) archives are not supported');
        countDisk = big(rv.getBigUint64(24, true), 'zip64 entry count', fail);
        count = big(rv.getBigUint64(32, true), 'zip64 entry count', fail);
        cdSize = big(rv.getBigUint64(40, true), 'zip64 central directory size', fail);
        cdOffset = big(rv.getBigUint64(48, true), 'zip64 central directory offset', fail);
        cdEnd = rec64;
      }
    }
    if (needs64 && !hasLocator) throw fail('end of central directory needs zip64 values but has no zip64 locator');
    if (!hasLocator && (diskNo !== 0 || cdDisk !== 0)) throw fail('multi-disk (split) archives are not supported');
    if (countDisk !== count) throw fail(`central directory lists ${countDisk} entries on this disk but ${count} in all`);
    if (count > maxEntries) throw fail(`central directory lists ${count} entries (limit ${maxEntries})`);
    if (cdOffset + cdSize > cdEnd) {
      throw fail(`central directory (offset ${cdOffset}, ${cdSize} bytes) runs past its end record at ${cdEnd} (truncated or corrupt)`);
    }

    const cd = await source.read(cdOffset, cdSize);
    const cv = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
    const utf8 = new TextDecoder('utf-8', { fatal: true });
    const byName = new Map<string, ZipEntry>();
    let p = 0;
    for (let k = 0; k < count; k++) {
      if (p + 46 > cdSize) throw fail(`central directory ends inside entry ${k} of ${count}`);
      if (cv.getUint32(p, true) !== SIG_CENTRAL) throw fail(`central directory entry ${k} has a bad signature (corrupt directory)`);
      const flags = cv.getUint16(p + 8, true);
      const method = cv.getUint16(p + 10, true);
      const crc = cv.getUint32(p + 16, true);
      let csize: number = cv.getUint32(p + 20, true);
      let usize: number = cv.getUint32(p + 24, true);
      const nameLen = cv.getUint16(p + 28, true);
      const extraLen = cv.getUint16(p + 30, true);
      const commentLen = cv.getUint16(p + 32, true);
      let disk: number = cv.getUint16(p + 34, true);
      let offset: number = cv.getUint32(p + 42, true);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cdSize) throw fail(`central directory entry ${k} runs past the directory`);
      const nameBytes = cd.subarray(p + 46, p + 46 + nameLen);
      let name: string;
      try {
        // Bit 11 marks UTF-8; older tools wrote CP437, which is ASCII for any name torch writes.
        name = utf8.decode(nameBytes);
      } catch {
        throw fail(`central directory entry ${k} has a name that is not valid UTF-8`);
      }
      const bad = unsafeName(name);
      if (bad) throw fail(`unsafe entry name (${bad}); refusing the archive`, name);
      // Zip64 extended information: the 32-bit fields that are all ones follow, in this order.
      let q = p + 46 + nameLen;
      const extraEnd = q + extraLen;
      while (q + 4 <= extraEnd) {
        const id = cv.getUint16(q, true);
        const len = cv.getUint16(q + 2, true);
        if (q + 4 + len > extraEnd) throw fail('extra field runs past its entry', name);
        if (id === 0x0001) {
          let r = q + 4;
          const take = (what: string) => {
            if (r + 8 > q + 4 + len) throw fail(`zip64 extra field is too short for ${what}`, name);
            const v = big(cv.getBigUint64(r, true), what, fail, name);
            r += 8;
            return v;
          };
          if (usize === 0xffffffff) usize = take('uncompressed size');
          if (csize === 0xffffffff) csize = take('compressed size');
          if (offset === 0xffffffff) offset = take('local header offset');
          if (disk === 0xffff) {
            if (r + 4 > q + 4 + len) throw fail('zip64 extra field is too short for the disk number', name);
            disk = cv.getUint32(r, true);
          }
        }
        q += 4 + len;
      }
      if (usize === 0xffffffff || csize === 0xffffffff || offset === 0xffffffff) throw fail('entry needs zip64 sizes but has no zip64 extra field', name);
      if (disk !== 0) throw fail('multi-disk (split) archives are not supported', name);
      if (flags & 0x1) throw fail('entry is encrypted', name);
      if (method !== 0 && method !== 8) throw fail(`compression method ${method} is not supported (only stored and deflate)`, name);
      if (method === 0 && csize !== usize) throw fail(`stored entry has compressed size ${csize} but uncompressed size ${usize}`, name);
      // Declared sizes are checked before anything is allocated for them: compressed data must lie in
      // the file (below), and no deflate stream expands more than ~1032:1.
      if (csize > size) throw fail(`declares ${csize} compressed bytes, more than the whole file (${size} bytes)`, name);
      if (method === 8 && !plausibleInflatedSize(csize, usize)) {
        throw fail(`declares ${usize} uncompressed bytes from ${csize} compressed: deflate expands at most ${DEFLATE_MAX_RATIO}:1 (corrupt or hostile directory)`, name);
      }
      if (byName.has(name)) throw fail('entry name appears twice in the central directory', name);
      byName.set(name, { name, method: method as 0 | 8, crc32: crc, compressedSize: csize, uncompressedSize: usize, localHeaderOffset: offset, dataOffset: -1 });
      p = end;
    }

    // Local headers: same name, data inside the file before the central directory, no overlaps.
    for (const e of byName.values()) {
      if (e.localHeaderOffset + 30 > cdOffset) throw fail(`local header offset ${e.localHeaderOffset} is past the start of the central directory`, e.name);
      const h = await source.read(e.localHeaderOffset, 30);
      const hv = new DataView(h.buffer, h.byteOffset, 30);
      if (hv.getUint32(0, true) !== SIG_LOCAL) throw fail(`no local header at offset ${e.localHeaderOffset} (corrupt directory)`, e.name);
      const localMethod = hv.getUint16(8, true);
      const nameLen = hv.getUint16(26, true);
      const extraLen = hv.getUint16(28, true);
      if (localMethod !== e.method) throw fail(`local header says method ${localMethod}, central directory ${e.method}`, e.name);
      if (e.localHeaderOffset + 30 + nameLen > cdOffset) throw fail('local header name runs past the entry area', e.name);
      const localName = await source.read(e.localHeaderOffset + 30, nameLen);
      if (!sameBytes(localName, new TextEncoder().encode(e.name))) throw fail('local header names a different entry (corrupt archive)', e.name);
      e.dataOffset = e.localHeaderOffset + 30 + nameLen + extraLen;
      if (e.dataOffset + e.compressedSize > cdOffset) {
        throw fail(`data (${e.compressedSize} bytes at offset ${e.dataOffset}) runs past the entry area ending at ${cdOffset} (truncated archive?)`, e.name);
      }
    }
    const spans = [...byName.values()].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
    for (let i = 1; i < spans.length; i++) {
      const prev = spans[i - 1]!;
      if (spans[i]!.localHeaderOffset < prev.dataOffset + prev.compressedSize) {
        throw fail(`overlaps entry "${prev.name}" (overlapping entries are refused)`, spans[i]!.name);
      }
    }
    return new ZipArchive(source, byName);
  }

  /** Entry names, in central directory order. */
  names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  entry(name: string): ZipEntry {
    const e = this.byName.get(name);
    if (!e) throw new ZipError(this.source.name, name, `no such entry (${this.byName.size} entries)`);
    return { ...e };
  }

  /** The entry's uncompressed bytes, checked against the declared size and (by default) the CRC-32. */
  async read(name: string, options: { verifyCrc?: boolean } = {}): Promise<Uint8Array> {
    const e = this.entry(name);
    const fail = (detail: string) => new ZipError(this.source.name, name, detail);
    const raw = await this.source.read(e.dataOffset, e.compressedSize);
    if (raw.byteLength !== e.compressedSize) throw fail(`read ${raw.byteLength} of ${e.compressedSize} bytes (file changed or truncated?)`);
    let data = raw;
    if (e.method === 8) {
      try {
        data = await inflateExact(raw, e.uncompressedSize, 'deflate-raw');
      } catch (err) {
        if (err instanceof InflateError) {
          throw fail(err.reason === 'overflow' ? `deflate data inflates to more than the declared ${e.uncompressedSize} bytes` : `${err.reason === 'corrupt' ? 'corrupt deflate data' : 'truncated deflate data'}: ${err.message}`);
        }
        throw err;
      }
    }
    if ((options.verifyCrc ?? true) && crc32(data) !== e.crc32) {
      throw fail(`CRC-32 mismatch (stored ${hex(e.crc32)}, data ${hex(crc32(data))}): the entry is corrupt`);
    }
    return data;
  }
}

function big(v: bigint, what: string, fail: (d: string, e?: string | null) => ZipError, entry: string | null = null): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail(`${what} ${v} is too large`, entry);
  return Number(v);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;
