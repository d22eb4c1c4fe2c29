/**
 * Light data augmentation that keeps a hand sign's meaning: a small random
 * shift and zoom, a mirror image (a left hand shows the same count as a right
 * one), and a little brightness and contrast jitter. No rotation beyond what
 * the crop gives, and no colour changes that could hide fingers.
 *
 * Random draws come from a seeded generator in JavaScript, not from
 * TensorFlow.js's random ops, so a resumed run sees exactly the images an
 * uninterrupted one would, on any backend.
 */
import * as tf from '@tensorflow/tfjs';

import { seededRandom } from './random.js';

export interface AugmentOptions {
  /** Largest shift, as a fraction of the image side. Defaults to 0.08. */
  maxShift?: number;
  /** Smallest crop side, as a fraction (1 = no zoom). Defaults to 0.88. */
  minScale?: number;
  /** Probability of mirroring an image. Defaults to 0.5. */
  flipProbability?: number;
  /** Largest brightness offset, in [0, 1] pixel units. Defaults to 0.08. */
  maxBrightness?: number;
  /** Largest relative contrast change. Defaults to 0.15. */
  maxContrast?: number;
}

/**
 * Returns an augmented copy of a batch of images in [0, 1], shape
 * [n, h, w, c]; the draws depend only on `seed`.
 */
export function augmentBatch(x: tf.Tensor4D, seed: number, options: AugmentOptions = {}): tf.Tensor4D {
  const {
    maxShift = 0.08,
    minScale = 0.88,
    flipProbability = 0.5,
    maxBrightness = 0.08,
    maxContrast = 0.15,
  } = options;
  const [n, height, width] = x.shape;
  const random = seededRandom(seed);
  const uniform = (lo: number, hi: number) => lo + (hi - lo) * random();

  const boxes: number[] = [];
  const flips: number[] = [];
  const gains: number[] = [];
  const offsets: number[] = [];
  for (let i = 0; i < n; i++) {
    const side = uniform(minScale, 1);
    // Keep the crop inside the image: a shift never reveals a blank border.
    const room = 1 - side;
    const top = Math.min(room, Math.max(0, room / 2 + uniform(-maxShift, maxShift)));
    const left = Math.min(room, Math.max(0, room / 2 + uniform(-maxShift, maxShift)));
    boxes.push(top, left, top + side, left + side);
    flips.push(random() < flipProbability ? 1 : 0);
    gains.push(1 + uniform(-maxContrast, maxContrast));
    offsets.push(uniform(-maxBrightness, maxBrightness));
  }

  return tf.tidy(() => {
    const indices = tf.tensor1d(
      Array.from({ length: n }, (_, i) => i),
      'int32',
    );
    const cropped = tf.image.cropAndResize(x, tf.tensor2d(boxes, [n, 4]), indices, [height, width]);
    const flipMask = tf.tensor4d(flips, [n, 1, 1, 1]).cast('bool');
    const mirrored = tf.where(flipMask, tf.image.flipLeftRight(cropped), cropped);
    // Contrast about each image's mean, then brightness; clip back to [0, 1].
    const mean = mirrored.mean([1, 2, 3], true);
    const gain = tf.tensor4d(gains, [n, 1, 1, 1]);
    const offset = tf.tensor4d(offsets, [n, 1, 1, 1]);
    return mirrored.sub(mean).mul(gain).add(mean).add(offset).clipByValue(0, 1) as tf.Tensor4D;
  });
}
