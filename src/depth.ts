/**
 * A small experiment for the first notebook on what depth does to a plain
 * stack of layers and to a residual one, on toy fully connected networks
 * that run in a second or two.
 *
 * `gradientNorms` measures, at initialisation, the size of the loss gradient
 * that reaches each layer's weights, layer by layer, in a plain stack and in a
 * residual one with the same weights. The layers are ReLU layers with
 * Glorot-uniform weights (the initialiser the course uses) and no BatchNorm,
 * so that depth alone makes the difference.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError } from './errors.js';
import { seededRandom } from './train.js';

/** The shape of a toy stack: `depth` hidden layers of `width` units each. */
export interface StackOptions {
  /** Hidden layers. Defaults to 30. */
  depth?: number;
  /** Units of every hidden layer (and of the input). Defaults to 32. */
  width?: number;
  /** Seed of the weights and the data. Defaults to 0. */
  seed?: number;
  /**
   * Multiplies every hidden weight. With ReLU, a gain of 1 halves the
   * signal's variance at each plain layer (vanishing); above √2 it grows
   * (exploding). Defaults to 1.
   */
  gain?: number;
}

/** Gradient size per hidden layer, first layer first. */
export interface GradientNorms {
  /** ‖∂loss/∂W‖ of each layer of the plain stack. */
  plain: number[];
  /** ‖∂loss/∂W‖ of each layer of the residual stack (same weights). */
  residual: number[];
}

function checkSize(name: string, value: number): void {
  if (!(Number.isInteger(value) && value >= 1)) {
    throw new ArgumentError(name, 'a positive integer', value);
  }
}

/**
 * Glorot-uniform weights, reproducible from the seed: `depth` square hidden
 * layers, then a linear read-out to one output.
 */
function makeWeights(depth: number, width: number, seed: number, gain: number): tf.Variable[] {
  return Array.from({ length: depth + 1 }, (_, i) => {
    const shape = i < depth ? [width, width] : [width, 1];
    const init = tf.initializers.glorotUniform({ seed: seed * 1009 + i });
    return tf.variable(tf.tidy(() => tf.mul(init.apply(shape), i < depth ? gain : 1)));
  });
}

/**
 * The forward pass. A plain layer maps h to relu(h W); a residual one adds
 * its input back, h + relu(h W) / √depth, so it computes the identity when W
 * is zero. The 1/√depth keeps the sum of all branches about the size of the
 * input (ResNet50 gets the same from the BatchNorm that ends each branch);
 * without it the toy residual stack's output would grow about 1.5-fold per
 * layer.
 */
function forward(x: tf.Tensor2D, weights: tf.Variable[], residual: boolean): tf.Tensor2D {
  const hidden = weights.slice(0, -1);
  const scale = 1 / Math.sqrt(hidden.length);
  let h: tf.Tensor = x;
  for (const w of hidden) {
    const branch = tf.relu(tf.matMul(h, w));
    h = residual ? tf.add(h, tf.mul(branch, scale)) : branch;
  }
  return tf.matMul(h, weights[weights.length - 1]) as tf.Tensor2D;
}

/**
 * A fixed toy regression: n random inputs in [-1, 1]^width, and as target a
 * wavy function of them, sin(x · u) + cos(x · v), that no linear map fits.
 */
function toyData(n: number, width: number, seed: number): { x: tf.Tensor2D; y: tf.Tensor2D } {
  const random = seededRandom(seed + 7);
  const values = Float32Array.from({ length: n * width }, () => random() * 2 - 1);
  const directions = Float32Array.from({ length: width * 2 }, () => random() - 0.5);
  return tf.tidy(() => {
    const x = tf.tensor2d(values, [n, width]);
    const proj = tf.matMul(x, tf.tensor2d(directions, [width, 2]));
    const [u, v] = tf.split(proj, 2, 1);
    return { x, y: tf.add(tf.sin(u), tf.cos(v)) as tf.Tensor2D };
  });
}

function meanSquaredError(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  return tf.mean(tf.square(tf.sub(a, b)));
}

/**
 * Measures, at initialisation, the norm of the loss gradient with respect to
 * each layer's weights, for a plain and a residual stack that share the same
 * weights.
 */
export function gradientNorms(options: StackOptions = {}): GradientNorms {
  const { depth = 30, width = 32, seed = 0, gain = 1 } = options;
  checkSize('depth', depth);
  checkSize('width', width);
  if (!(Number.isFinite(gain) && gain > 0)) {
    throw new ArgumentError('gain', 'a positive number', gain);
  }
  const weights = makeWeights(depth, width, seed, gain);
  const hidden = weights.slice(0, -1);
  const { x, y } = toyData(64, width, seed);
  try {
    const measure = (residual: boolean) =>
      tf.tidy(() => {
        const { grads } = tf.variableGrads(
          () => meanSquaredError(forward(x, weights, residual), y),
          weights,
        );
        return hidden.map((w) => tf.norm(grads[w.name]).dataSync()[0]);
      });
    return { plain: measure(false), residual: measure(true) };
  } finally {
    tf.dispose([x, y, ...weights]);
  }
}
