/**
 * The grader's own residual blocks, written with plain TensorFlow.js ops
 * rather than layers so that they share no code with any submission, with
 * switches for the mistakes learners make. With no switch on they reproduce
 * `Requirements/reference/blocks.json` (test/grader.test.ts checks that);
 * with one on they give the output of that mistake, which the diagnosis
 * compares with a learner's output to name the mistake exactly.
 *
 * Teacher side only: `npm run release:student` runs these on the public
 * cases, writes the outputs into the workspace (see `precomputed.ts`) and
 * ships `variants-lookup.ts` under this name, so that no learner can read
 * the block's arithmetic here.
 */
import * as tf from '@tensorflow/tfjs';

import type { Mistakes } from './precomputed.js';
import type { BlockSpec } from './types.js';

export { kernelShapes, tensor4d } from './precomputed.js';
export type { Mistakes } from './precomputed.js';

/** BatchNormalization's epsilon (Keras's and the reference's). */
const EPSILON = 1e-3;

/** The fresh-input seeds this module can answer for: any, as it computes. */
export const CHECKABLE_SEEDS: readonly number[] | undefined = undefined;

function batchNorm(x: tf.Tensor4D, training: boolean, axis: number): tf.Tensor4D {
  if (!training) {
    // Moving mean 0, moving variance 1, gamma 1, beta 0: only the epsilon acts.
    return tf.div(x, Math.sqrt(1 + EPSILON));
  }
  const axes = [0, 1, 2, 3].filter((a) => a !== axis);
  const { mean, variance } = tf.moments(x, axes, true);
  return tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, EPSILON))) as tf.Tensor4D;
}

/**
 * Computes a block with the given HWIO kernels (main 1×1, main f×f, main
 * 1×1, shortcut 1×1) and mistakes. Returns undefined when the mistake makes
 * the block impossible to compute (shapes that cannot be added).
 */
export function variantBlock(
  spec: BlockSpec,
  input: tf.Tensor4D,
  kernels: tf.Tensor4D[],
  training: boolean,
  mistakes: Mistakes = {},
): tf.Tensor4D | undefined {
  const m = mistakes;
  const mode = m.training ?? training;
  const axis = m.bnAxis ?? 3;
  const s = spec.block === 'convolutional' ? spec.s : 1;
  const strideOn = m.strideOn ?? 0;

  const out = tf.tidy((): tf.Tensor4D | void => {
    const norm = (x: tf.Tensor4D) => (m.noBatchNorm ? x : batchNorm(x, mode, axis));
    const conv = (x: tf.Tensor4D, k: tf.Tensor4D, stride: number, reluInside: boolean) => {
      const padding = k.shape[0] > 1 ? 'same' : 'valid';
      const y = tf.conv2d(x, k, stride, padding);
      return reluInside ? tf.relu(y) : y;
    };
    const group = (x: tf.Tensor4D, k: tf.Tensor4D, stride: number, relu: boolean) => {
      const y = conv(x, k, stride, m.convRelu !== undefined);
      if (!relu) return norm(y);
      return m.reluBeforeBn ? norm(tf.relu(y)) : tf.relu(norm(y));
    };

    let main = group(input, kernels[0], strideOn === 0 ? s : 1, true);
    main = group(main, kernels[1], strideOn === 1 ? s : 1, true);
    main = group(main, kernels[2], strideOn === 2 ? s : 1, false);

    let shortcut: tf.Tensor4D | undefined = input;
    if (m.noShortcut) {
      shortcut = undefined;
    } else if (spec.block === 'convolutional' && !m.noShortcutConv) {
      const y = conv(input, kernels[3], s, m.convRelu === 'all');
      shortcut = m.shortcutNoBn ? y : norm(y);
    }
    if (shortcut && !tf.util.arraysEqual(shortcut.shape, main.shape)) return;

    const sum = shortcut ? tf.add(main, shortcut) : main;
    return (m.noFinalRelu ? sum : tf.relu(sum)) as tf.Tensor4D;
  });
  return out || undefined;
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
