// Atomic output writes: a failure midway (a full disk, simulated by a writer that stops after half the
// bytes with ENOSPC) keeps the existing file byte for byte and leaves no temporary file; a path whose
// folder is a regular file is an OutputFileError naming the path; a batch renames nothing unless every
// file was written whole.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { OutputFileError, removePendingTempFiles, stageFile, writeFileAtomic, writeFilesAtomic, type ChunkWriter } from '../src/formats/atomic-write-node.js';
import { writePng } from '../src/io/image-node.js';
import { decodePng } from '../src/io/png.js';

const dir = mkdtempSync(join(tmpdir(), 'silo-atomic-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes the first half of the bytes, then fails as a full disk does. */
const fullDisk: ChunkWriter = async (handle, bytes) => {
  await handle.write(bytes, 0, bytes.length >> 1);
  throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: 'ENOSPC', errno: -28, syscall: 'write' });
};

describe('writeFileAtomic', () => {
  it('replaces the whole file and leaves nothing else in the folder', async () => {
    const sub = join(dir, 'ok');
    mkdirSync(sub);
    writeFileSync(join(sub, 'out.bin'), 'old');
    await writeFileAtomic(join(sub, 'out.bin'), new TextEncoder().encode('new content'));
    expect(readFileSync(join(sub, 'out.bin'), 'utf8')).toBe('new content');
    expect(readdirSync(sub)).toEqual(['out.bin']);
  });

  it('a write that fails midway keeps the old file and removes its temporary file', async () => {
    const sub = join(dir, 'full');
    mkdirSync(sub);
    const old = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    writeFileSync(join(sub, 'out.png'), old);
    const err = await writeFileAtomic(join(sub, 'out.png'), new Uint8Array(5000).fill(7), fullDisk).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutputFileError);
    expect((err as Error).message).toBe(`cannot write ${join(sub, 'out.png')}: no space left on device (ENOSPC)`);
    expect(new Uint8Array(readFileSync(join(sub, 'out.png')))).toEqual(old);
    expect(readdirSync(sub)).toEqual(['out.png']);
  });

  it('a folder that is a regular file is an OutputFileError naming the path', async () => {
    writeFileSync(join(dir, 'plain'), 'x');
    const target = join(dir, 'plain', 'out.png');
    const err = await writeFileAtomic(target, new Uint8Array(3)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutputFileError);
    expect((err as Error).message).toMatch(new RegExp(`^cannot write ${target}: .*\\(ENOTDIR\\)$`));
    await expect(writeFileAtomic(join(dir, 'missing', 'out.png'), new Uint8Array(3))).rejects.toThrow(/missing\/out\.png: .*\(ENOENT\)/);
  });

  it('a rename that fails (the target is a folder) removes the temporary file', async () => {
    const sub = join(dir, 'rename');
    mkdirSync(join(sub, 'out.png'), { recursive: true });
    await expect(writeFileAtomic(join(sub, 'out.png'), new Uint8Array(3))).rejects.toThrow(OutputFileError);
    expect(readdirSync(sub)).toEqual(['out.png']);
  });

  it('a batch renames nothing when its last file fails', async () => {
    const sub = join(dir, 'batch');
    mkdirSync(sub);
    writeFileSync(join(sub, 'a.png'), 'old a');
    writeFileSync(join(sub, 'b.json'), 'old b');
    let calls = 0;
    const failSecond: ChunkWriter = async (handle, bytes) => {
      if (++calls === 2) return fullDisk(handle, bytes);
      await handle.writeFile(bytes);
    };
    const files = [
      { path: join(sub, 'a.png'), bytes: new TextEncoder().encode('new a') },
      { path: join(sub, 'b.json'), bytes: new TextEncoder().encode('new b') },
    ];
    await expect(writeFilesAtomic(files, failSecond)).rejects.toThrow(/b\.json: no space left on device/);
    expect(readFileSync(join(sub, 'a.png'), 'utf8')).toBe('old a');
    expect(readFileSync(join(sub, 'b.json'), 'utf8')).toBe('old b');
    expect(readdirSync(sub).sort()).toEqual(['a.png', 'b.json']);
    await writeFilesAtomic(files);
    expect(readFileSync(join(sub, 'a.png'), 'utf8')).toBe('new a');
    expect(readFileSync(join(sub, 'b.json'), 'utf8')).toBe('new b');
  });

  it('removePendingTempFiles removes staged, uncommitted files (for an exit that skips finally blocks)', async () => {
    const sub = join(dir, 'exit');
    mkdirSync(sub);
    writeFileSync(join(sub, 'out.png'), 'old');
    const staged = await stageFile(join(sub, 'out.png'), new Uint8Array(10));
    expect(readdirSync(sub).sort()).toEqual([basename(staged.temp), 'out.png'].sort());
    removePendingTempFiles();
    expect(readdirSync(sub)).toEqual(['out.png']);
    expect(readFileSync(join(sub, 'out.png'), 'utf8')).toBe('old');
  });

  it('writePng is atomic and names the path on failure', async () => {
    const sub = join(dir, 'png');
    mkdirSync(sub);
    await writePng(join(sub, 'x.png'), Uint8Array.from([1, 2, 3, 4, 5, 6]), 2, 1);
    expect((await decodePng(readFileSync(join(sub, 'x.png')), 'x.png')).data).toEqual(Uint8Array.from([1, 2, 3, 4, 5, 6]));
    expect(readdirSync(sub)).toEqual(['x.png']);
    await expect(writePng(join(sub, 'nope', 'x.png'), new Uint8Array(3), 1, 1)).rejects.toThrow(OutputFileError);
  });
});
