/**
 * Weight initialisers for the blocks: the course's defaults, and fixed
 * kernels for checks against reference tensors.
 */
import * as tf from '@tensorflow/tfjs';

/** A tfjs-layers weight initialiser, as `tf.initializers.*` return them. */
export type Initializer = ReturnType<typeof tf.initializers.zeros>;

/**
 * Makes the initialiser of one convolution from a seed. A block calls it once
 * per convolution, in the order it applies them: main-path 1×1, main-path
 * f×f, main-path 1×1, then the shortcut 1×1 of a convolutional block.
 */
export type InitializerFactory = (seed: number) => Initializer;

/** The course's identity-block default: uniform on [-0.05, 0.05]. */
export const randomUniform: InitializerFactory = (seed) =>
  tf.initializers.randomUniform({ minval: -0.05, maxval: 0.05, seed });

/** The course's convolutional-block and ResNet50 default. */
export const glorotUniform: InitializerFactory = (seed) => tf.initializers.glorotUniform({ seed });

// tfjs-layers accepts only instances of its own Initializer class and does not
// export that class, so take it from the prototype chain of a built-in one.
const InitializerBase = Object.getPrototypeOf(Object.getPrototypeOf(tf.initializers.zeros()))
  .constructor as abstract new () => Initializer;

/** An initialiser that always returns a copy of one given tensor. */
class FixedInitializer extends InitializerBase {
  static readonly className = 'FixedInitializer';

  constructor(private readonly value: tf.Tensor) {
    super();
  }

  override apply(shape: number[]): tf.Tensor {
    if (!tf.util.arraysEqual(shape, this.value.shape)) {
      throw new Error(
        `A fixed kernel has shape ${JSON.stringify(this.value.shape)} but the layer ` +
          `asks for ${JSON.stringify(shape)}: check the kernel size and filter counts.`,
      );
    }
    return this.value.clone();
  }

  override getConfig(): Record<string, never> {
    return {};
  }
}

/** An initialiser returning `value` (its shape must match the layer's kernel). */
export function fixedInitializer(value: tf.Tensor): Initializer {
  return new FixedInitializer(value);
}

/**
 * A factory that hands out the given kernels in turn, one per call: the way
 * to give a block known weights (HWIO kernels in the order the block applies
 * its convolutions, as in `Requirements/reference/blocks.json`).
 */
export function kernelSequence(kernels: tf.Tensor[]): InitializerFactory {
  let next = 0;
  return () => {
    if (next >= kernels.length) {
      throw new Error(
        `kernelSequence was given ${kernels.length} kernels but the block asked for more.`,
      );
    }
    return fixedInitializer(kernels[next++]);
  };
}

/** A factory whose every kernel is filled with one value (the course's ones check). */
export function constantInitializer(value: number): InitializerFactory {
  return () => tf.initializers.constant({ value });
}
