/**
 * The run folders that `npm run train` writes under `runs/`, and the newest
 * complete one, which notebook 3 loads instead of training again.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { MODEL_JSON } from './io.js';
import { findProjectRoot } from './paths.js';
import type { History } from './train.js';

/** What a run folder's `run.json` says (the fields this module reads). */
export interface RunRecord {
  recipe?: string;
  epochs?: number;
  seed?: number;
  limit?: number | null;
  backend?: string;
  finished?: string;
  epochsDone?: number;
  interrupted?: boolean;
  testAccuracy?: number;
}

export interface SavedRun {
  dir: string;
  modelDir: string;
  run: RunRecord;
  history: History;
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined; // a run still being written, or not a run at all
  }
}

/**
 * The newest run in `runsDir` that trained on every example for all its
 * epochs without interruption and saved its model, of recipe `recipe` if
 * given; undefined if none.
 */
export function findNewestRun(
  runsDir: string = path.join(findProjectRoot(), 'runs'),
  recipe?: string,
): SavedRun | undefined {
  if (!existsSync(runsDir)) return undefined;
  const complete: SavedRun[] = [];
  for (const name of readdirSync(runsDir)) {
    const dir = path.join(runsDir, name);
    const run = readJson<RunRecord>(path.join(dir, 'run.json'));
    const history = readJson<History>(path.join(dir, 'history.json'));
    const modelDir = path.join(dir, 'model');
    const whole =
      run !== undefined &&
      history !== undefined &&
      (recipe === undefined || run.recipe === recipe) &&
      !run.interrupted &&
      (run.limit === null || run.limit === undefined) &&
      run.epochsDone !== undefined &&
      run.epochsDone === run.epochs &&
      existsSync(path.join(modelDir, MODEL_JSON));
    if (whole) complete.push({ dir, modelDir, run: run!, history: history! });
  }
  complete.sort((a, b) => String(a.run.finished).localeCompare(String(b.run.finished)));
  return complete[complete.length - 1];
}
