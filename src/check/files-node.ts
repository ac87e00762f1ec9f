// A golden case folder on disk (Node only).
import { dirFolder } from '../formats/folder-node.js';
import type { CaseFiles } from './files.js';

export const dirCaseFiles = (dir: string): CaseFiles => dirFolder(dir);
