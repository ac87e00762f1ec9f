// Error types that name what failed: the kernel, tensor, file or argument.

export class SiloError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A WebGPU validation / out-of-memory / internal error, attributed to the kernel(s) that caused it. */
export class KernelError extends SiloError {
  constructor(
    message: string,
    readonly kernels: string[],
  ) {
    super(message);
  }
}

export class DeviceLostError extends SiloError {}

/** The adapter cannot meet a requirement (a limit, a feature). */
export class LimitError extends SiloError {
  constructor(
    message: string,
    /** Which limit, how many bytes were needed and how many it allows, where a size limit was hit. */
    readonly exceeded?: { limit: string; needed: number; available: number },
  ) {
    super(message);
  }
}

export class ArgumentError extends SiloError {}

export function assertArg(cond: unknown, message: string): asserts cond {
  if (!cond) throw new ArgumentError(message);
}
