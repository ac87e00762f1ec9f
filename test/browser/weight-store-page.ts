// Page of the weight-store test: main-thread checks, and the worker checks run on request.
import { openWeightStore, StoreError } from '../../src/hub/weight-store.js';
import { runChecks, type CheckResult } from './weight-store-checks.js';

declare global {
  interface Window {
    siloWeightStoreChecks: () => Promise<CheckResult[]>;
  }
}

async function mainThreadChecks(): Promise<CheckResult[]> {
  return runChecks([
    ['main thread: auto does not pick opfs (no sync access handles here)', async () => {
      const s = await openWeightStore('auto');
      if (s.kind !== 'cache-api') throw new Error(`auto picked ${s.kind}`);
    }],
    ['main thread: asking for opfs throws a StoreError saying why', async () => {
      try {
        await openWeightStore('opfs');
      } catch (e) {
        if (e instanceof StoreError && e.code === 'unavailable' && /dedicated worker/.test(e.message)) return e.message;
        throw e;
      }
      throw new Error('openWeightStore("opfs") resolved on the main thread');
    }],
  ]);
}

function workerChecks(): Promise<CheckResult[]> {
  return new Promise((resolve, reject) => {
    const w = new Worker('weight-store-worker.js', { type: 'module' });
    w.onmessage = (e: MessageEvent<CheckResult[]>) => {
      w.terminate();
      resolve(e.data);
    };
    w.onerror = (e) => {
      w.terminate();
      reject(new Error(`worker error: ${e.message}`));
    };
    w.postMessage('run');
  });
}

window.siloWeightStoreChecks = async () => [...(await mainThreadChecks()), ...(await workerChecks())];
