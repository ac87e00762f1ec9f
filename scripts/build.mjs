// Builds the browser bundle (dist/silo-webgpu.js): ESM, no runtime dependency, WGSL inlined as text.
// `node scripts/build.mjs [entry] [outfile]` builds another entry (the browser test page uses this).
import { build } from 'esbuild';

export async function bundle(entry = 'src/index.ts', outfile = 'dist/silo-webgpu.js', platform = 'browser') {
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'esm',
    platform,
    target: 'es2022',
    loader: { '.wgsl': 'text' },
    // The Node WebGPU binding is only imported (by computed name) when running in Node.
    external: ['webgpu'],
    // wgsl_reflect's "main" is CommonJS in a "type: module" package; take its ESM build.
    mainFields: ['module', 'main'],
    sourcemap: true,
    logLevel: 'warning',
  });
  return outfile;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [entry, outfile, platform] = process.argv.slice(2);
  const out = await bundle(entry, outfile, platform);
  console.log(`built ${out}`);
  // With no arguments, also the `silo` command line (package.json "bin"; esbuild keeps its #! line).
  if (!entry) console.log(`built ${await bundle('src/cli/silo.ts', 'dist/silo.mjs', 'node')}`);
}
