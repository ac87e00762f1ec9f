// Finds a WebGPU implementation: the browser's navigator.gpu, or in Node the `webgpu` package (Dawn).
// The Node package is imported by a computed name so browser bundles never contain it; it is an
// optional peer dependency of the published package, so its absence is a user-facing error.

import { LimitError } from './errors.js';

let nodeGpu: GPU | null = null;

export function isNode(): boolean {
  return typeof process !== 'undefined' && !!process.versions?.node && typeof window === 'undefined';
}

export async function getGPU(): Promise<GPU> {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (!isNode()) {
    throw new LimitError(
      'WebGPU is not available: navigator.gpu is undefined (the page must be a secure context, e.g. http://127.0.0.1, and the browser must enable WebGPU)',
    );
  }
  if (nodeGpu) return nodeGpu;
  const name = 'webgpu';
  let mod: { create: (opts: string[]) => GPU; globals: object };
  try {
    mod = (await import(/* @vite-ignore */ name)) as typeof mod;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // Not found at all (a missing optional peer) reads differently from found but unloadable (no
    // prebuilt Dawn for this platform, a broken install).
    if (err.code === 'ERR_MODULE_NOT_FOUND' && new RegExp(`['"]${name}['"]`).test(err.message)) {
      throw new LimitError(
        `WebGPU in Node needs the npm package "${name}" (Dawn's Node binding), an optional peer dependency of silo-webgpu that is not installed: run \`npm install ${name}\` in your project`,
      );
    }
    throw new LimitError(`the npm package "${name}" (WebGPU for Node) is installed but could not be loaded: ${err.message}`);
  }
  // GPUBufferUsage, GPUMapMode, ... are globals in browsers; Dawn's Node binding exports them.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  const options: string[] = [];
  const adapterName = process.env['SILO_ADAPTER'];
  if (adapterName) options.push(`adapter=${adapterName}`);
  nodeGpu = mod.create(options);
  return nodeGpu;
}
