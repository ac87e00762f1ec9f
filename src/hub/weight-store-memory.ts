// The 'memory' weight store: files live in this object for the session (no persistence), held as
// bounded chunks. Browser-safe.

import { ChunkedBytes } from '../formats/chunked-bytes.js';
import { type PutExpect, type StoredFile, type WeightStore, byKey, inMemoryFile, keySegments, pump } from './weight-store-base.js';

export class MemoryStore implements WeightStore {
  readonly kind = 'memory' as const;
  private readonly files = new Map<string, { bytes: ChunkedBytes; sha256: string }>();
  private readonly texts = new Map<string, string>();

  constructor(private readonly chunkBytes?: number) {}

  async open(key: string): Promise<StoredFile | null> {
    keySegments(key);
    const f = this.files.get(key);
    return f ? inMemoryFile(f.bytes, f.sha256, true) : null;
  }

  async put(key: string, body: ReadableStream<Uint8Array>, expect: PutExpect, onProgress?: (loaded: number, total: number | null) => void, signal?: AbortSignal): Promise<StoredFile> {
    keySegments(key);
    this.files.delete(key);
    const bytes = new ChunkedBytes(this.chunkBytes);
    const v = await pump(body, expect, (piece) => bytes.append(piece), onProgress, signal);
    this.files.set(key, { bytes, sha256: v.sha256 });
    return inMemoryFile(bytes, v.sha256, false);
  }

  async getText(key: string): Promise<string | null> {
    keySegments(key);
    return this.texts.get(key) ?? null;
  }

  async putText(key: string, text: string): Promise<void> {
    keySegments(key);
    this.texts.set(key, text);
  }

  async list(): Promise<{ key: string; size: number }[]> {
    return [...this.files].map(([key, f]) => ({ key, size: f.bytes.size })).sort(byKey);
  }

  async clear(): Promise<void> {
    this.files.clear();
    this.texts.clear();
  }
}
