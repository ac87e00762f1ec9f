// `silo restore --batch <folder|list.jsonl> --out-dir D [--shard i/N]`: many restorations on one model
// load, through the same RestorationSession as a single run. Each finished item is <id>.png + <id>.json
// (its report), written together atomically, so an item is either done or absent: a rerun skips the done
// ones and resumes. A failing item (an unreadable image, a diverged sampler) is recorded and the batch
// goes on; Ctrl-C stops after the current step; a lost device ends the batch. Every run writes the
// summary of its shard (summary.json, or summary-i-of-N.json).

import { loadTuning } from '../engine/tuning.js';
import { cliTuningStore } from './tuning-file.js';
import { Engine } from '../engine/device.js';
import { DeviceLostError, SiloError } from '../engine/errors.js';
import { encodePng } from '../io/png.js';
import { writeFilesAtomic } from '../formats/atomic-write-node.js';
import { loadBlurKernel, type BlurKernel } from '../solvers/degradations/kernel-file.js';
import { RestoreAbortedError } from '../restore/loop.js';
import type { RestorationSession } from '../restore/session.js';
import { batchSummary, folderItems, parseBatchList, parseShard, shardItems, summaryName, BatchError, type BatchItem, type ItemOutcome, type Shard } from '../restore/batch.js';
import { checkPaths, PathError } from './output-files-node.js';
import { progressPrinter } from './progress.js';
import { cliSettings, interruptHandler, openSession, resolveModels, readInput, readRgb, restorePaths, restoreRequest, type RestoreCliOptions } from './restore.js';
import type { CliIO } from './silo.js';
import { looksLikePath, parseModelRef } from '../hub/model-ref.js';

export interface BatchCliOptions {
  /** A folder of images or a JSON-lines list. */
  batch: string;
  outDir: string;
  /** --shard i/N, or N with the index from JOB_COMPLETION_INDEX. */
  shard?: string;
  /** What a folder's images are (a list says it per item). */
  batchAs: BatchItem['as'];
}

const isDirectory = async (p: string) => (await import('node:fs/promises')).stat(p).then((s) => s.isDirectory(), () => false);

/** The batch's items and the folder their relative paths start from. */
async function readItems(b: BatchCliOptions): Promise<{ items: BatchItem[]; base: string }> {
  const { readdir, readFile, stat } = await import('node:fs/promises');
  const { dirname } = await import('node:path');
  const st = await stat(b.batch).catch((e: NodeJS.ErrnoException) => {
    throw new PathError(`--batch ${b.batch}: ${e.code === 'ENOENT' ? 'no such file or folder' : e.message}`);
  });
  if (st.isDirectory()) return { items: folderItems(await readdir(b.batch), b.batchAs, b.batch), base: b.batch };
  return { items: parseBatchList(await readFile(b.batch, 'utf8'), b.batch), base: dirname(b.batch) };
}

export async function runRestoreBatch(o: RestoreCliOptions & { batch: BatchCliOptions }, io: CliIO): Promise<number> {
  const b = o.batch;
  const { resolve, join, isAbsolute } = await import('node:path');
  const { realpath, stat } = await import('node:fs/promises');
  const shard: Shard | undefined = b.shard !== undefined ? parseShard(b.shard, process.env) : undefined;
  const { items, base } = await readItems(b);
  const mine = shardItems(items, shard);

  // Paths before the GPU: the models, the batch source (outputs may not land inside a batch folder),
  // and the output folder (exists, writable) through its summary file.
  const modelIsFolder = o.model === undefined || looksLikePath(o.model) || (await parseModelRef(o.model, isDirectory)).kind === 'folder';
  const { inputs } = restorePaths(o, modelIsFolder);
  const summaryPath = join(b.outDir, summaryName(shard));
  await checkPaths([...inputs, { flag: 'batch', path: b.batch, folder: await isDirectory(b.batch) }], [{ flag: 'out-dir', path: summaryPath }]);
  if (!(await isDirectory(b.outDir))) throw new PathError(`--out-dir ${b.outDir}: not a folder`);
  const outDir = await realpath(b.outDir);
  const motionKernel: BlurKernel | undefined = o.kernel ? await loadBlurKernel(await readInput('kernel', o.kernel), o.kernel) : undefined;

  const exists = (p: string) => stat(p).then((s) => s.isFile(), () => false);
  const outcomes: ItemOutcome[] = [];
  const todo: { item: BatchItem; path: string; png: string; json: string }[] = [];
  for (const item of mine) {
    const png = join(outDir, `${item.id}.png`);
    const json = join(outDir, `${item.id}.json`);
    const path = isAbsolute(item.path) ? item.path : resolve(base, item.path);
    // An item's output may not replace an input of the batch (a list can name files in the output folder).
    const real = await realpath(path).catch(() => path);
    if (real === png || real === json) throw new BatchError(`${b.batch}: item ${item.path} would be overwritten by its own output ${real}; use another --out-dir`);
    if ((await exists(png)) && (await exists(json))) outcomes.push({ id: item.id, path: item.path, status: 'skipped' });
    else todo.push({ item, path, png, json });
  }
  const shardText = shard && shard.count > 1 ? `shard ${shard.index}/${shard.count} (from ${shard.from}): ${mine.length} of ${items.length} items` : `${items.length} items`;
  io.out(`batch ${b.batch}: ${shardText}, ${outcomes.length} already done, ${todo.length} to restore into ${outDir}`);

  const extra = { batch: b.batch, out_dir: outDir, shard: shard ? { index: shard.index, count: shard.count, from: shard.from } : null };
  const writeSummary = async () => {
    await writeFilesAtomic([{ path: summaryPath, bytes: new TextEncoder().encode(JSON.stringify(batchSummary(outcomes, extra), null, 1) + '\n') }]);
    io.out(`summary written to ${summaryPath}`);
  };
  if (!todo.length) {
    await writeSummary();
    return 0;
  }

  const resolved = await resolveModels(o, io);
  const engine = await Engine.create();
  // Kernel choices `silo tune` measured on this adapter, if any (a damaged or foreign table is reported and skipped).
  await loadTuning(engine.tuning, cliTuningStore(), (l) => io.err(l));
  io.out(engine.summary());
  const interrupt = interruptHandler(io);
  let session: RestorationSession | undefined;
  let aborted = false;
  try {
    const opened = await openSession(engine, resolved, io, o.weights);
    session = opened.session;
    for (let k = 0; k < todo.length; k++) {
      const { item, path, png, json } = todo[k]!;
      const prefix = `[${k + 1}/${todo.length}] ${item.id}`;
      const t0 = performance.now();
      try {
        const img = await readRgb(path, o.background, io);
        const images = item.as === 'input' ? { measurement: img } : { groundTruth: img };
        const req = { ...restoreRequest(o, images, motionKernel), operatorDefaults: opened.operatorDefaults, seed: item.seed ?? o.seed, prompt: item.prompt ?? o.prompt, measurementName: item.as === 'input' ? path : undefined, groundTruthName: item.as === 'input' ? undefined : path };
        const result = await session.run(req, { onProgress: progressPrinter(io, o.quiet), signal: interrupt.signal, log: o.quiet ? undefined : (l) => io.out(`${prefix}: ${l}`) });
        const r = result.report as { settings: object };
        const report = { item: { id: item.id, path, as: item.as }, ...r, settings: { ...cliSettings(o), weights: opened.weights, ...r.settings } };
        await writeFilesAtomic([
          { path: png, bytes: await encodePng(result.image) },
          { path: json, bytes: new TextEncoder().encode(JSON.stringify(report, null, 1) + '\n') },
        ]);
        const seconds = (performance.now() - t0) / 1000;
        outcomes.push({ id: item.id, path: item.path, status: 'restored', seconds, metrics: result.metrics });
        io.out(`${prefix}: restored in ${seconds.toFixed(1)} s -> ${png}`);
      } catch (e) {
        if (e instanceof RestoreAbortedError) {
          aborted = true;
          io.err(`${prefix}: ${e.message}; the batch stops here (a rerun resumes)`);
          break;
        }
        // A lost device or an unexpected bug ends the batch (after the summary); a bad item does not.
        if (e instanceof DeviceLostError || !(e instanceof SiloError)) throw e;
        outcomes.push({ id: item.id, path: item.path, status: 'failed', error: e.message });
        io.err(`${prefix}: failed: ${e.message}`);
      }
    }
  } catch (e) {
    // What finished is recorded even when the batch ends on an error (a lost device, a bug).
    await writeSummary().catch(() => {});
    throw e;
  } finally {
    interrupt.release();
    session?.dispose();
    engine.destroy();
  }
  await writeSummary();
  const failed = outcomes.filter((x) => x.status === 'failed').length;
  const restored = outcomes.filter((x) => x.status === 'restored').length;
  io.out(`batch: ${restored} restored, ${outcomes.filter((x) => x.status === 'skipped').length} skipped, ${failed} failed${aborted ? ', stopped early' : ''}`);
  return aborted ? 130 : failed ? 1 : 0;
}
