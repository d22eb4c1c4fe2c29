/**
 * The grader's blocks in a learner workspace: the outputs of the right block
 * and of each diagnosable mistake, for the public cases only, read from
 * `Requirements/grader/expected.json.gz` rather than computed. The solution
 * repository computed them there with its own block when it released this
 * workspace (see `precomputed.ts`); this module holds no block arithmetic.
 *
 * It answers for the reference tensors, the course's constant-ones check and
 * the fresh inputs of the seeds in `CHECKABLE_SEEDS`; the teacher's grader
 * computes any case, hidden ones included.
 */
import type * as tf from '@tensorflow/tfjs';

import { DataError } from '../errors.js';
import { findProjectRoot } from '../paths.js';
import {
  blockKey,
  lookupBlock,
  loadPrecomputed,
  type Mistakes,
  PRECOMPUTED_FILE,
  type PrecomputedOutputs,
  PUBLIC_SEEDS,
} from './precomputed.js';
import type { BlockSpec } from './types.js';

export { kernelShapes, tensor4d } from './precomputed.js';
export type { Mistakes } from './precomputed.js';

/** The fresh-input seeds whose outputs this workspace carries. */
export const CHECKABLE_SEEDS: readonly number[] | undefined = PUBLIC_SEEDS;

const loaded = new Map<string, PrecomputedOutputs>();

function outputs(): PrecomputedOutputs {
  const root = findProjectRoot();
  let found = loaded.get(root);
  if (!found) {
    found = loadPrecomputed(root);
    loaded.set(root, found);
  }
  return found;
}

/**
 * The output of a block with the given HWIO kernels and mistakes, as
 * precomputed. Returns undefined when the mistake makes the block impossible
 * to compute, or when a mistake's output was not precomputed for this input.
 *
 * @throws DataError when the right output (no mistakes) was not precomputed.
 */
export function variantBlock(
  spec: BlockSpec,
  input: tf.Tensor4D,
  kernels: tf.Tensor4D[],
  training: boolean,
  mistakes: Mistakes = {},
): tf.Tensor4D | undefined {
  const key = blockKey(spec, input, kernels, training);
  const found = lookupBlock(outputs(), key, mistakes);
  if (found || Object.keys(mistakes).length > 0) return found;
  throw new DataError(
    `${PRECOMPUTED_FILE} has no expected output for this ${spec.block} block: a learner ` +
      'workspace carries the public cases only, with the fresh inputs of seeds ' +
      `${PUBLIC_SEEDS.join(', ')}.`,
  );
}

/** The right output: no mistakes. */
export function referenceBlock(
  spec: BlockSpec,
  input: tf.Tensor4D,
  kernels: tf.Tensor4D[],
  training: boolean,
): tf.Tensor4D {
  return variantBlock(spec, input, kernels, training) as tf.Tensor4D;
}
