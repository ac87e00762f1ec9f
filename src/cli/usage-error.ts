// Bad or conflicting arguments: `silo` prints the message and the subcommand's usage, exit code 2.
// In its own file so argument checks anywhere under src/cli can throw it without importing silo.ts.

import { SiloError } from '../engine/errors.js';

export class UsageError extends SiloError {}
