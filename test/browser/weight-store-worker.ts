// Dedicated worker of the weight-store test page: OPFS sync access handles exist only here.
import { openWeightStore } from '../../src/hub/weight-store.js';
import { runChecks, storeChecks, quotaChecks } from './weight-store-checks.js';

self.onmessage = async () => {
  const results = await runChecks([
    ['worker: auto picks opfs', async () => {
      const s = await openWeightStore('auto');
      if (s.kind !== 'opfs') throw new Error(`auto picked ${s.kind}`);
    }],
    ...storeChecks('opfs'),
    ...storeChecks('cache-api'),
    ...storeChecks('memory'),
    ...quotaChecks(),
  ]);
  self.postMessage(results);
};
