// Kernels: a WGSL family file + entry point + specialisation (storage dtype, module-scope constants,
// pipeline overrides). Bind-group layouts and uniform struct layouts come from reflecting the
// composed WGSL with wgsl_reflect, so no TypeScript code writes a byte offset by hand.

import { WgslReflect, type TypeInfo, type ArrayInfo, type TemplateInfo } from 'wgsl_reflect';
import type { DType } from './dtype.js';
import { LimitError, SiloError } from './errors.js';

export interface KernelSpec {
  /** Family name (the kernels/ file), used in labels and error messages. */
  family: string;
  /** WGSL source text of the family file. */
  source: string;
  /** Shared WGSL snippets (e.g. activations.wgsl) placed before the source. */
  includes?: string[];
  entry: string;
  /** Storage dtype: the WGSL alias `ST` (and `enable f16;` for f16). */
  dtype?: DType;
  /**
   * Parameter dtype: the WGSL alias `WT` (`WT4`) that weight and bias bindings use; default `dtype`.
   * f16 parameters with f32 activations is the mixed-precision mode of reverse mode (weights are most
   * of a model's memory; activations and gradients stay f32).
   */
  wdtype?: DType;
  /** The dtype of matmul's a operand (alias `AT`; default `dtype`), for f16 weights on the left of a product. */
  adtype?: DType;
  /** Module-scope `const` declarations prepended to the source (usable in array sizes, workgroup sizes). */
  consts?: Record<string, number | boolean>;
  /** Pipeline-overridable constants (`override NAME`). */
  overrides?: Record<string, number>;
  /** Uses subgroup operations (`enable subgroups;`): needs the device's `subgroups` feature. */
  subgroups?: boolean;
}

type Scalar = 'f32' | 'u32' | 'i32';

interface UniformField {
  name: string;
  offset: number;
  scalar: Scalar;
  /** Number of scalars in the field (1 for scalars, N for vecN, count*N for arrays of vectors). */
  count: number;
  /** For arrays: byte stride between elements and scalars per element. */
  stride: number;
  perElement: number;
}

export interface UniformLayout {
  structName: string;
  size: number;
  fields: UniformField[];
}

export interface BindingInfo {
  name: string;
  binding: number;
  kind: 'uniform' | 'storage' | 'read-only-storage';
  uniform?: UniformLayout;
}

export class Kernel {
  constructor(
    readonly label: string,
    readonly pipeline: GPUComputePipeline,
    readonly layout: GPUBindGroupLayout,
    readonly bindings: BindingInfo[],
    readonly workgroupSize: [number, number, number],
  ) {}

  get invocationsPerWorkgroup(): number {
    return this.workgroupSize[0] * this.workgroupSize[1] * this.workgroupSize[2];
  }
}

function scalarOf(type: TypeInfo, where: string): { scalar: Scalar; lanes: number } {
  const n = type.name;
  if (n === 'f32' || n === 'u32' || n === 'i32') return { scalar: n, lanes: 1 };
  const m = /^vec([234])([fui])?$/.exec(n);
  if (m) {
    const lanes = Number(m[1]);
    if (m[2]) return { scalar: ({ f: 'f32', u: 'u32', i: 'i32' } as const)[m[2] as 'f' | 'u' | 'i'], lanes };
    const fmt = (type as TemplateInfo).format?.name;
    if (fmt === 'f32' || fmt === 'u32' || fmt === 'i32') return { scalar: fmt, lanes };
  }
  throw new SiloError(`${where}: uniform member type ${type.getTypeName?.() ?? n} is not supported`);
}

function uniformLayout(reflect: WgslReflect, structName: string, where: string): UniformLayout {
  const info = reflect.getStructInfo(structName);
  if (!info) throw new SiloError(`${where}: uniform struct ${structName} not found`);
  const fields: UniformField[] = info.members.map((m) => {
    if (m.type.name === 'array') {
      const arr = m.type as ArrayInfo;
      const { scalar, lanes } = scalarOf(arr.format, `${where}.${m.name}`);
      return { name: m.name, offset: m.offset, scalar, count: arr.count * lanes, stride: arr.stride, perElement: lanes };
    }
    const { scalar, lanes } = scalarOf(m.type, `${where}.${m.name}`);
    return { name: m.name, offset: m.offset, scalar, count: lanes, stride: lanes * 4, perElement: lanes };
  });
  return { structName, size: info.size, fields };
}

export type UniformValues = Record<string, number | readonly number[]>;

/** Writes uniform values into `view` at `base` following the reflected layout. */
export function writeUniforms(layout: UniformLayout, values: UniformValues, view: DataView, base: number, where: string): void {
  const seen = new Set<string>();
  for (const f of layout.fields) {
    const v = values[f.name];
    if (v === undefined) {
      if (f.name.startsWith('_pad')) continue;
      throw new SiloError(`${where}: uniform ${layout.structName}.${f.name} was not given`);
    }
    seen.add(f.name);
    const arr = typeof v === 'number' ? [v] : v;
    if (arr.length > f.count) {
      throw new SiloError(`${where}: uniform ${layout.structName}.${f.name} takes ${f.count} values, got ${arr.length}`);
    }
    for (let i = 0; i < arr.length; i++) {
      const off = base + f.offset + Math.floor(i / f.perElement) * f.stride + (i % f.perElement) * 4;
      const x = arr[i]!;
      if (f.scalar === 'f32') view.setFloat32(off, x, true);
      else if (f.scalar === 'u32') {
        if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) {
          throw new SiloError(`${where}: uniform ${layout.structName}.${f.name} must be a u32, got ${x}`);
        }
        view.setUint32(off, x, true);
      } else {
        if (!Number.isInteger(x) || x < -0x80000000 || x > 0x7fffffff) {
          throw new SiloError(`${where}: uniform ${layout.structName}.${f.name} must be an i32, got ${x}`);
        }
        view.setInt32(off, x, true);
      }
    }
  }
  for (const k of Object.keys(values)) {
    if (!seen.has(k)) throw new SiloError(`${where}: uniform ${layout.structName} has no member ${k}`);
  }
}

function constDecl(name: string, v: number | boolean): string {
  if (typeof v === 'boolean') return `const ${name}: bool = ${v};`;
  if (Number.isInteger(v) && v >= 0) return `const ${name}: u32 = ${v}u;`;
  if (Number.isInteger(v)) return `const ${name}: i32 = ${v}i;`;
  return `const ${name}: f32 = ${v};`;
}

export function composeSource(spec: KernelSpec): string {
  const dtype = spec.dtype ?? 'f32';
  const wdtype = spec.wdtype ?? dtype;
  const adtype = spec.adtype ?? dtype;
  const lines: string[] = [];
  if (dtype === 'f16' || wdtype === 'f16' || adtype === 'f16') lines.push('enable f16;');
  if (spec.subgroups) lines.push('enable subgroups;');
  lines.push(`alias ST = ${dtype};`);
  lines.push(`alias ST4 = vec4<${dtype}>;`);
  lines.push(`alias WT = ${wdtype};`);
  lines.push(`alias WT4 = vec4<${wdtype}>;`);
  lines.push(`alias AT = ${adtype};`);
  for (const [k, v] of Object.entries(spec.consts ?? {})) lines.push(constDecl(k, v));
  return `${lines.join('\n')}\n${(spec.includes ?? []).join('\n')}\n${spec.source}`;
}

/** FNV-1a of a text, so specs that differ only in their includes get different cache keys. */
function hashText(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

export function kernelKey(spec: KernelSpec): string {
  const consts = Object.entries(spec.consts ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const ov = Object.entries(spec.overrides ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const inc = spec.includes?.length ? `+${hashText(spec.includes.join('\n'))}` : '';
  const st = spec.dtype ?? 'f32';
  const w = (spec.wdtype && spec.wdtype !== st ? `/w${spec.wdtype}` : '') + (spec.adtype && spec.adtype !== st ? `/a${spec.adtype}` : '');
  const sg = spec.subgroups ? '/sg' : '';
  return `${spec.family}/${spec.entry}:${spec.dtype ?? 'f32'}${w}${sg}[${consts}][${ov}]${inc}`;
}

export interface KernelLimits {
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupSizeY: number;
  maxComputeWorkgroupSizeZ: number;
  maxStorageBuffersPerShaderStage: number;
}

/** Pipeline cache keyed only by what changes the WGSL or the pipeline. */
export class KernelCache {
  private cache = new Map<string, Kernel>();
  private modules = new Map<string, { module: GPUShaderModule; reflect: WgslReflect }>();

  constructor(
    private device: GPUDevice,
    private limits: KernelLimits,
    private hasF16: boolean,
    private hasSubgroups: boolean,
  ) {}

  get size(): number {
    return this.cache.size;
  }

  /** Keys of the kernels built so far (diagnostics and tests). */
  keys(): string[] {
    return [...this.cache.keys()];
  }

  get(spec: KernelSpec): Kernel {
    const key = kernelKey(spec);
    const hit = this.cache.get(key);
    if (hit) return hit;
    if ((spec.dtype === 'f16' || spec.wdtype === 'f16' || spec.adtype === 'f16') && !this.hasF16) {
      throw new LimitError(`kernel ${key}: f16 storage needs the shader-f16 feature, which this device does not have`);
    }
    if (spec.subgroups && !this.hasSubgroups) {
      throw new LimitError(`kernel ${key}: subgroup operations need the subgroups feature, which this device does not have`);
    }
    const source = composeSource(spec);
    const modKey = `${spec.family}\n${source}`;
    let mod = this.modules.get(modKey);
    if (!mod) {
      let reflect: WgslReflect;
      try {
        reflect = new WgslReflect(source);
      } catch (e) {
        throw new SiloError(`kernel ${key}: WGSL does not parse: ${(e as Error).message}`);
      }
      const module = this.device.createShaderModule({ code: source, label: `${spec.family}` });
      mod = { module, reflect };
      this.modules.set(modKey, mod);
    }
    const fn = mod.reflect.entry.compute.find((f) => f.name === spec.entry);
    if (!fn) throw new SiloError(`kernel ${key}: no @compute entry point named ${spec.entry}`);
    const wg = (fn.workgroupSize ?? [1, 1, 1]) as [number, number, number];
    const inv = wg[0] * wg[1] * wg[2];
    const L = this.limits;
    if (
      inv > L.maxComputeInvocationsPerWorkgroup ||
      wg[0] > L.maxComputeWorkgroupSizeX ||
      wg[1] > L.maxComputeWorkgroupSizeY ||
      wg[2] > L.maxComputeWorkgroupSizeZ
    ) {
      throw new LimitError(
        `kernel ${key}: workgroup size ${wg.join('x')} exceeds the adapter's limits (${L.maxComputeInvocationsPerWorkgroup} invocations, ${L.maxComputeWorkgroupSizeX}x${L.maxComputeWorkgroupSizeY}x${L.maxComputeWorkgroupSizeZ})`,
      );
    }
    const bindings: BindingInfo[] = [];
    let storageCount = 0;
    for (const r of fn.resources) {
      if (r.group !== 0) throw new SiloError(`kernel ${key}: binding ${r.name} must be in @group(0)`);
      if (r.resourceType === 0 /* Uniform */) {
        bindings.push({ name: r.name, binding: r.binding, kind: 'uniform', uniform: uniformLayout(mod.reflect, r.type.name, key) });
      } else if (r.resourceType === 1 /* Storage */) {
        storageCount++;
        bindings.push({ name: r.name, binding: r.binding, kind: r.access === 'read' ? 'read-only-storage' : 'storage' });
      } else {
        throw new SiloError(`kernel ${key}: binding ${r.name} is not a buffer`);
      }
    }
    if (storageCount > L.maxStorageBuffersPerShaderStage) {
      throw new LimitError(
        `kernel ${key}: uses ${storageCount} storage buffers, the adapter allows ${L.maxStorageBuffersPerShaderStage}`,
      );
    }
    bindings.sort((a, b) => a.binding - b.binding);
    const layout = this.device.createBindGroupLayout({
      label: key,
      entries: bindings.map((b) => ({
        binding: b.binding,
        visibility: 4 /* GPUShaderStage.COMPUTE */,
        buffer: { type: b.kind },
      })),
    });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ label: key, bindGroupLayouts: [layout] }),
      compute: { module: mod.module, entryPoint: spec.entry, constants: spec.overrides ?? {} },
    });
    const kernel = new Kernel(key, pipeline, layout, bindings, wg);
    this.cache.set(key, kernel);
    return kernel;
  }

  /** Compiles the module behind a spec and returns WGSL compilation errors (for tests and diagnostics). */
  async compilationErrors(spec: KernelSpec): Promise<string[]> {
    const module = this.device.createShaderModule({ code: composeSource(spec), label: spec.family });
    const info = await module.getCompilationInfo();
    return info.messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
  }
}
