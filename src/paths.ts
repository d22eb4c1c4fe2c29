/**
 * Where the project's folders are, found from the working directory.
 *
 * No `import.meta` here: the notebook kernel (tslab) compiles `src/` to
 * CommonJS, where it does not exist. The kernel starts in the project root
 * (see `scripts/tslab-kernel.cjs`), and the CLI and tests run from it too, so
 * walking up from `process.cwd()` finds the root in every case.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { DataError } from './errors.js';

/** The `name` in the project's package.json, which marks the root. */
export const PROJECT_NAME = 'resnet-ts';

function packageName(file: string): string | undefined {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown };
    return typeof parsed.name === 'string' ? parsed.name : undefined;
  } catch {
    // An unreadable or malformed package.json belongs to some other folder.
    return undefined;
  }
}

/**
 * Finds the project root: the nearest folder at or above `start` whose
 * package.json is named `resnet-ts`.
 *
 * @param start Where to begin. Defaults to `process.cwd()`.
 * @returns The root's absolute path.
 * @throws DataError when no such folder exists above `start`.
 */
export function findProjectRoot(start: string = process.cwd()): string {
  let dir = path.resolve(start);
  for (;;) {
    const candidate = path.join(dir, 'package.json');
    if (existsSync(candidate) && packageName(candidate) === PROJECT_NAME) {
      return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new DataError(
    `Could not find the ${PROJECT_NAME} project root: no package.json named ` +
      `"${PROJECT_NAME}" at or above ${path.resolve(start)}. ` +
      'Run this from inside the project folder, or pass the dataset folder explicitly.',
  );
}

/**
 * The folder setup copies the SIGNS files into: `<root>/Requirements/datasets`.
 *
 * @throws DataError when the project root cannot be found.
 */
export function defaultDatasetDir(): string {
  return path.join(findProjectRoot(), 'Requirements', 'datasets');
}
