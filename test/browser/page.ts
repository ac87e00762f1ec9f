// Entry of the browser test bundle: creates the engine from navigator.gpu and exposes the cases.
import { Engine } from '../../src/engine/device.js';
import { CASES, runCases } from './cases.js';

declare global {
  interface Window {
    siloAdapter: () => Promise<string>;
    siloCaseNames: () => string[];
    siloRunCases: (only?: string[]) => Promise<unknown>;
  }
}

let engine: Engine | null = null;
async function getEngine(): Promise<Engine> {
  engine ??= await Engine.create();
  return engine;
}

window.siloAdapter = async () => (await getEngine()).summary();
window.siloCaseNames = () => CASES.map((c) => c.name);
window.siloRunCases = async (only?: string[]) => runCases(await getEngine(), only);
