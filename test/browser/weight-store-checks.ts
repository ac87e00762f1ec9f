// The weight-store checks, run inside a dedicated worker (weight-store-worker.ts) for every backend,
// and the main-thread checks (weight-store-page.ts). Each check reports ok or the reason it failed.
import { openWeightStore, storeErrorFrom, StoreError, opfsMoveWorked, type StoreKind, type WeightStore } from '../../src/hub/weight-store.js';
import { sha256Hex } from '../../src/hub/sha256.js';
import { SafetensorsFile, serializeSafetensors, f32Entry } from '../../src/formats/safetensors.js';
import { randomBytes } from '../helpers/random-bytes.js';

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

class CheckFailed extends Error {}

function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new CheckFailed(message);
}

export async function runChecks(list: [string, () => Promise<string | void>][]): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const [name, fn] of list) {
    try {
      out.push({ name, ok: true, detail: (await fn()) ?? '' });
    } catch (e) {
      out.push({ name, ok: false, detail: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
    }
  }
  return out;
}

/** Awaits a rejection and returns it (failing the check when the promise resolves). */
async function rejection(p: Promise<unknown>, what: string): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new CheckFailed(`${what} resolved; it should have rejected`);
}


/** `data` as a stream of odd-sized pieces (fresh arrays, as fetch gives); endless repeats it forever. */
function streamOf(data: Uint8Array, endless = false): ReadableStream<Uint8Array> {
  const sizes = [1, 4097, 65536, 13, 100003, 7, 262144, 999];
  let pos = 0;
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (pos >= data.length) {
        if (!endless) return c.close();
        pos = 0;
      }
      const len = sizes[i++ % sizes.length]!;
      c.enqueue(data.slice(pos, pos + len));
      pos += len;
      if (i % 16 === 0) await new Promise((r) => setTimeout(r, 0)); // let other tasks (abort) run
    },
  });
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function checkRanges(reader: { size: number; read(o: number, l: number): Uint8Array }, src: Uint8Array, seed: number): void {
  assert(reader.size === src.length, `size ${reader.size}, expected ${src.length}`);
  let x = seed;
  const rnd = (n: number) => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % n;
  };
  const ranges: [number, number][] = [[0, src.length], [0, 0], [src.length, 0], [src.length - 1, 1], [(1 << 20) - 3, 9], [(2 << 20) - 1, 2]];
  for (let i = 0; i < 100; i++) {
    const off = rnd(src.length);
    ranges.push([off, rnd(Math.min(src.length - off, 300_000) + 1)]);
  }
  for (const [off, len] of ranges) {
    const got = reader.read(off, len);
    assert(sameBytes(got, src.subarray(off, off + len)), `read(${off}, ${len}) differs from the source`);
  }
  let threw = false;
  try {
    reader.read(src.length - 2, 3);
  } catch {
    threw = true;
  }
  assert(threw, 'an out-of-range read did not throw');
}

const isStoreError = (e: unknown, code: string) => e instanceof StoreError && e.code === code;

/** Names of every file under OPFS's silo-weights/ (to see that failed puts leave nothing). */
async function opfsNames(): Promise<string[]> {
  const names: string[] = [];
  type Dir = FileSystemDirectoryHandle & { entries(): AsyncIterableIterator<[string, FileSystemHandle]> };
  const walk = async (d: Dir, prefix: string) => {
    for await (const [n, h] of d.entries()) {
      if (h.kind === 'directory') await walk(h as Dir, `${prefix}${n}/`);
      else names.push(prefix + n);
    }
  };
  try {
    const root = await navigator.storage.getDirectory();
    await walk((await root.getDirectoryHandle('silo-weights')) as Dir, '');
  } catch (e) {
    if ((e as Error).name !== 'NotFoundError') throw e;
  }
  return names.sort();
}

export function storeChecks(kind: StoreKind): [string, () => Promise<string | void>][] {
  const chunkBytes = 1 << 20; // small chunks so ~3 MB crosses in-memory chunk boundaries
  const src = randomBytes(3_000_017, 42);
  const hash = sha256Hex(src);
  const key = 'hub/org--name/0123abcd/unet/diffusion_pytorch_model.safetensors';
  const label = 'unet/diffusion_pytorch_model.safetensors';
  const persistent = kind !== 'memory';
  let store: WeightStore;
  const c = (name: string, fn: () => Promise<string | void>): [string, () => Promise<string | void>] => [`${kind}: ${name}`, fn];
  return [
    c('opens and starts empty after clear()', async () => {
      store = await openWeightStore(kind, { chunkBytes });
      assert(store.kind === kind, `kind ${store.kind}`);
      await store.clear();
      const l = await store.list();
      assert(l.length === 0, `list() after clear: ${JSON.stringify(l)}`);
    }),
    c('put streams ~3 MB in odd pieces, verifies and reads back random ranges', async () => {
      const progress: [number, number | null][] = [];
      const f = await store.put(key, streamOf(src), { size: src.length, sha256: hash.toUpperCase(), label }, (l, t) => progress.push([l, t]));
      assert(f.size === src.length && f.sha256 === hash, `size ${f.size} sha256 ${f.sha256}`);
      assert(!f.cached, 'a fresh put says cached');
      const last = progress[progress.length - 1];
      assert(progress.length > 10 && last?.[0] === src.length && last[1] === src.length, `progress ${JSON.stringify(last)} after ${progress.length} calls`);
      checkRanges(f.reader, src, 1);
      f.close();
    }),
    c('open() returns the stored file, cached', async () => {
      const a = await store.open(key);
      assert(a, 'open() returned null');
      assert(a.cached && a.size === src.length && a.sha256 === hash, `cached ${a.cached} size ${a.size} sha ${a.sha256}`);
      // A second open of the same key while the first is open (OPFS shares one handle).
      const b = await store.open(key);
      assert(b, 'second open() returned null');
      a.close();
      checkRanges(b.reader, src, 2);
      b.close();
      a.close(); // closing twice is harmless
    }),
    c(`a fresh store instance ${persistent ? 'finds' : 'does not find'} the file`, async () => {
      const fresh = await openWeightStore(kind, { chunkBytes });
      const f = await fresh.open(key);
      if (!persistent) {
        assert(f === null, 'memory store persisted across instances');
        return;
      }
      assert(f && f.cached, 'fresh instance: open() returned null or not cached');
      checkRanges(f.reader, src, 3);
      // While the other store also holds it open (OPFS: read-only handles may be shared).
      const g = await store.open(key);
      assert(g, 'first store: open() while the fresh store holds the file returned null');
      assert(sameBytes(g.reader.read(100, 50), src.subarray(100, 150)), 'concurrent reader differs');
      g.close();
      f.close();
    }),
    c('a wrong sha256 rejects naming both hashes, and leaves no entry', async () => {
      const wrong = 'ab'.repeat(32);
      const e = await rejection(store.put('bad/sha.safetensors', streamOf(src), { size: src.length, sha256: wrong, label: 'bad-sha' }), 'put');
      assert(isStoreError(e, 'mismatch'), `not a mismatch StoreError: ${e}`);
      const m = (e as Error).message;
      assert(m.includes(wrong) && m.includes(hash) && m.includes('bad-sha'), `message lacks label or hashes: ${m}`);
      assert((await store.open('bad/sha.safetensors')) === null, 'open() after a failed put is not null');
    }),
    c('a body shorter than expect.size rejects and leaves no entry', async () => {
      const e = await rejection(store.put('bad/short.safetensors', streamOf(src), { size: src.length + 10, label: 'short' }), 'put');
      assert(isStoreError(e, 'mismatch') && /expected 3000027 bytes, got 3000017/.test((e as Error).message), `wrong error: ${e}`);
      assert((await store.open('bad/short.safetensors')) === null, 'open() after a short put is not null');
    }),
    c('a body longer than expect.size rejects', async () => {
      const e = await rejection(store.put('bad/long.safetensors', streamOf(src), { size: 1000, label: 'long' }), 'put');
      assert(isStoreError(e, 'mismatch') && /longer/.test((e as Error).message), `wrong error: ${e}`);
      assert((await store.open('bad/long.safetensors')) === null, 'open() after a long put is not null');
    }),
    c('aborting mid-body rejects and leaves no entry', async () => {
      const ac = new AbortController();
      let loaded = 0;
      const e = await rejection(
        store.put('bad/abort.safetensors', streamOf(src, true), { label: 'aborted' }, (l) => {
          loaded = l;
          if (l > 1_000_000) ac.abort();
        }, ac.signal),
        'put',
      );
      assert(isStoreError(e, 'aborted'), `not an aborted StoreError: ${e}`);
      assert(loaded > 1_000_000 && loaded < 2_000_000, `stopped after ${loaded} bytes`);
      assert((await store.open('bad/abort.safetensors')) === null, 'open() after an aborted put is not null');
    }),
    c('an already-aborted signal rejects before storing', async () => {
      const e = await rejection(store.put('bad/pre.safetensors', streamOf(src), { label: 'pre' }, undefined, AbortSignal.abort()), 'put');
      assert(isStoreError(e, 'aborted'), `not an aborted StoreError: ${e}`);
    }),
    ...(kind === 'opfs'
      ? [
          c('replacing a file another store holds open fails as busy and keeps the old entry', async () => {
            const other = await openWeightStore(kind, { chunkBytes });
            const held = await other.open(key);
            assert(held, 'other store: open() returned null');
            const e = await rejection(store.put(key, streamOf(src), { label: 'replace' }), 'put over a held file');
            assert(isStoreError(e, 'busy'), `not a busy StoreError: ${e}`);
            held.close();
            const again = await store.open(key);
            assert(again && again.size === src.length, `the old entry is gone after: ${(e as Error).message}`);
            again.close();
            // The same store refuses while it holds the file itself.
            const mine = await store.open(key);
            const e2 = await rejection(store.put(key, streamOf(src), { label: 'replace' }), 'put over an own open file');
            assert(isStoreError(e2, 'busy'), `not a busy StoreError: ${e2}`);
            mine?.close();
            return (e as Error).message;
          }),
          c('failed puts leave no files behind on disk', async () => {
            const names = await opfsNames();
            const want = ['hub/org--name/0123abcd/unet/diffusion_pytorch_model.safetensors', 'hub/org--name/0123abcd/unet/diffusion_pytorch_model.safetensors.meta.json'];
            assert(JSON.stringify(names) === JSON.stringify(want), `files: ${JSON.stringify(names)}`);
            return `handle.move() worked: ${opfsMoveWorked()}`;
          }),
        ]
      : []),
    c('SafetensorsFile.open reads a tensor through the stored reader', async () => {
      const values = Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
      const bytes = serializeSafetensors({ w: f32Entry(values, [2, 3, 4]), b: f32Entry([1, 2, 3], [3], 'F16') });
      const f = await store.put('x/model.safetensors', streamOf(bytes), { size: bytes.length, sha256: sha256Hex(bytes), label: 'x' });
      const st = SafetensorsFile.open(f.reader, 'x');
      const w = st.getF32('w');
      assert(Array.from(w).join() === values.join(), `w = ${Array.from(w).join()}`);
      assert(Array.from(st.getF32('b')).join() === '1,2,3', 'b differs');
      f.close();
    }),
    c('getText / putText', async () => {
      assert((await store.getText('hub/org--name/refs.json')) === null, 'missing text is not null');
      await store.putText('hub/org--name/refs.json', '{"main":"0123abcd"}');
      await store.putText('hub/org--name/refs.json', '{"main":"89ef"}'); // replaced, not appended
      const t = await store.getText('hub/org--name/refs.json');
      assert(t === '{"main":"89ef"}', `got ${t}`);
    }),
    c('list() names exactly the complete files', async () => {
      const l = await store.list();
      const got = l.map((e) => e.key).join();
      assert(got === `${key},x/model.safetensors` && l[0]!.size === src.length && l[1]!.size > 0, `list: ${JSON.stringify(l)}`);
    }),
    c('keys with empty, "." or ".." segments are rejected', async () => {
      for (const bad of ['a/../b', '../a', 'a//b', '/a', 'a/', 'a/./b', 'a/b.meta.json', 'a/b.partial']) {
        const e = await rejection(store.open(bad), `open(${bad})`);
        assert(isStoreError(e, 'key'), `open(${bad}): ${e}`);
      }
      const e = await rejection(store.put('a/../b', streamOf(src), { label: 'k' }), 'put(a/../b)');
      assert(isStoreError(e, 'key'), `put: ${e}`);
    }),
    c('clear() removes files and text', async () => {
      const held = await store.open(key); // clear() must cope with an open file
      await store.clear();
      assert((await store.list()).length === 0, 'list() not empty');
      assert((await store.open(key)) === null, 'open() after clear is not null');
      assert((await store.getText('hub/org--name/refs.json')) === null, 'text survived clear');
      if (kind === 'opfs') {
        let threw = false;
        try {
          held?.reader.read(0, 1);
        } catch {
          threw = true;
        }
        assert(threw, 'a file open across clear() still reads');
      }
      held?.close();
    }),
  ];
}

/** The quota translation, with a fake QuotaExceededError and a fake estimate. */
export function quotaChecks(): [string, () => Promise<string | void>][] {
  return [
    [
      'QuotaExceededError becomes a StoreError naming file, size, usage and quota, with advice',
      async () => {
        const e = await storeErrorFrom(new DOMException('The quota has been exceeded.', 'QuotaExceededError'), 'unet/diffusion_pytorch_model.safetensors', 1_719_000_000, async () => ({ usage: 500_000_000, quota: 1_000_000_000 }));
        assert(e instanceof StoreError && e.code === 'quota', `not a quota StoreError: ${e}`);
        for (const part of ['unet/diffusion_pytorch_model.safetensors', '1719.0 MB needed', '500.0 MB', '1000.0 MB', 'clear the weight cache or pick a local folder instead']) {
          assert(e.message.includes(part), `message lacks "${part}": ${e.message}`);
        }
        return e.message;
      },
    ],
    [
      'QuotaExceededError with the real navigator.storage.estimate()',
      async () => {
        const e = await storeErrorFrom(new DOMException('quota', 'QuotaExceededError'), 'vae.safetensors', 2_000_000);
        assert(e.code === 'quota' && /MB of its .* MB storage quota/.test(e.message), e.message);
        return e.message;
      },
    ],
    [
      'other storage errors keep their message',
      async () => {
        const e = await storeErrorFrom(new DOMException('locked', 'NoModificationAllowedError'), 'a.bin', null);
        assert(e.code === 'busy' && e.message.includes('a.bin') && e.message.includes('locked'), e.message);
      },
    ],
  ];
}
