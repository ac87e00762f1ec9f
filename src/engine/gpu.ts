// Finds a WebGPU implementation: the browser's navigator.gpu, or in Node the `webgpu` package (Dawn).
// The Node package is imported by a computed name so browser bundles never contain it.

let nodeGpu: GPU | null = null;

export function isNode(): boolean {
  return typeof process !== 'undefined' && !!process.versions?.node && typeof window === 'undefined';
}

export async function getGPU(): Promise<GPU> {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (!isNode()) {
    throw new Error(
      'WebGPU is not available: navigator.gpu is undefined (the page must be a secure context, e.g. http://127.0.0.1, and the browser must enable WebGPU)',
    );
  }
  if (nodeGpu) return nodeGpu;
  const name = 'webgpu';
  let mod: { create: (opts: string[]) => GPU; globals: object };
  try {
    mod = (await import(/* @vite-ignore */ name)) as typeof mod;
  } catch (e) {
    throw new Error(`WebGPU in Node needs the npm package "webgpu" (Dawn): ${(e as Error).message}`);
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
