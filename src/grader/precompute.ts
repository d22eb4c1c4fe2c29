/**
 * Teacher side of `precomputed.ts`: runs the grader's live block on every
 * public block probe of the notebook checks, right and with each mistake
 * the diagnosis tries, and writes the outputs for a learner workspace.
 * `npm run release:student` calls it; it does not ship.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

import { buildCases, GradeReferences, probesOf } from './checks.js';
import { probeKernels, suspectMistakes } from './diagnose.js';
import {
  blockKey,
  float32Text,
  mistakeKey,
  PRECOMPUTED_FILE,
  PrecomputedOutputs,
  PUBLIC_SEEDS,
  tensor4d,
} from './precomputed.js';
import type { BlockProbe, Exercise, TensorData } from './types.js';
import { variantBlock } from './variants.js';

const BLOCK_EXERCISES: Exercise[] = ['identityBlock', 'convolutionalBlock'];

/**
 * The outputs every public block probe of the checks needs, for the fresh
 * inputs of `seeds`. Hidden cases are left out: pass references without them.
 */
export function precomputeOutputs(
  refs: GradeReferences,
  seeds: readonly number[] = PUBLIC_SEEDS,
): PrecomputedOutputs {
  const result: PrecomputedOutputs = { version: 1, seeds: [...seeds], tensors: [], blocks: {} };
  // Equal outputs (a mode mistake gives the other mode's output) are stored once.
  const pool = new Map<string, number>();
  const publicRefs: GradeReferences = { blocks: refs.blocks, table: refs.table };

  for (const exercise of BLOCK_EXERCISES) {
    for (const seed of seeds) {
      const probes = probesOf(buildCases(exercise, publicRefs, seed)).filter(
        (p): p is BlockProbe => p.kind === 'block',
      );
      for (const probe of probes) {
        const input = tensor4d(probe.input);
        const kernels = probeKernels(probe);
        const key = blockKey(probe, input, kernels, probe.training);
        if (!result.blocks[key]) {
          const entry: Record<string, number> = {};
          for (const mistakes of [{}, ...suspectMistakes(probe, probe.training)]) {
            const out = variantBlock(probe, input, kernels, probe.training, mistakes);
            if (!out) continue;
            const data: TensorData = {
              shape: [...out.shape],
              values: Array.from(out.dataSync(), float32Text),
            };
            out.dispose();
            const text = JSON.stringify(data);
            let index = pool.get(text);
            if (index === undefined) {
              index = result.tensors.push(data) - 1;
              pool.set(text, index);
            }
            entry[mistakeKey(mistakes)] = index;
          }
          result.blocks[key] = entry;
        }
        tf.dispose([input, ...kernels]);
      }
    }
  }
  return result;
}

/**
 * Writes the outputs into a workspace at `root`, gzip'd.
 *
 * @returns the file's path relative to `root`.
 */
export function writePrecomputed(root: string, outputs: PrecomputedOutputs): string {
  const file = path.join(root, PRECOMPUTED_FILE);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, gzipSync(JSON.stringify(outputs), { level: 9 }));
  return PRECOMPUTED_FILE;
}
