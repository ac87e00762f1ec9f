// WGSL kernel sources are imported as text (esbuild loader `text`, a vite plugin in vitest).
declare module '*.wgsl' {
  const source: string;
  export default source;
}
