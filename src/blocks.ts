/**
 * The two residual blocks of ResNet50 (He et al., "Deep Residual Learning for
 * Image Recognition", 2015), in the bottleneck form the course builds:
 *
 *   main path: 1×1 conv → BN → ReLU → f×f conv ('same') → BN → ReLU → 1×1 conv → BN
 *   shortcut:  the input itself (identity block), or a strided 1×1 conv → BN
 *              (convolutional block)
 *   output:    ReLU(main path + shortcut)
 *
 * Each block accepts either a concrete tensor, and returns the block's output
 * computed at once (the course's checks call it so), or a symbolic tensor, and
 * returns the symbolic output for a model under construction.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError } from './errors.js';
import { glorotUniform, InitializerFactory, randomUniform } from './initializers.js';

/** A concrete tensor (computes now) or a symbolic one (builds a model). */
export type BlockInput = tf.Tensor | tf.SymbolicTensor;

/** The three filter counts of a block's main path: [F1, F2, F3]. */
export type Filters = [number, number, number];

export interface BlockOptions {
  /**
   * Whether BatchNormalization normalises with the statistics of the batch
   * (true) or with its moving statistics (false). Only for a concrete input:
   * in a model, `fit` trains and `predict` infers. Defaults to true for a
   * concrete input, as the course's blocks do.
   */
  training?: boolean;
  /**
   * Makes each convolution's kernel initialiser from a seed; called once per
   * convolution in the order the block applies them (main 1×1, main f×f,
   * main 1×1, then the shortcut 1×1). Defaults to uniform on [-0.05, 0.05]
   * for the identity block and Glorot uniform for the convolutional block.
   */
  initializer?: InitializerFactory;
  /** The seed handed to `initializer`. Defaults to 0. */
  seed?: number;
  /**
   * A prefix for the layer names (`conv2_block1` gives `conv2_block1_1_conv`,
   * `conv2_block1_0_bn` for the shortcut, `conv2_block1_out`, …). Defaults to
   * TensorFlow.js's unique names.
   */
  name?: string;
}

/** BatchNormalization's epsilon, as Keras's default. */
export const BN_EPSILON = 1e-3;

/** Channels last: NHWC tensors, so BatchNorm normalises over axis 3. */
const CHANNEL_AXIS = 3;

/**
 * The identity block: the shortcut carries the input unchanged, so the input
 * and output shapes must be equal (F3 = the input's channels).
 *
 * @param X input, NHWC, concrete or symbolic.
 * @param f kernel size of the middle convolution of the main path.
 * @param filters [F1, F2, F3], the filters of the three main-path convolutions.
 * @returns the block's output, of the input's shape.
 * @throws ArgumentError naming the argument that is wrong.
 */
export function identityBlock<T extends BlockInput>(
  X: T,
  f: number,
  filters: Filters | number[],
  options: BlockOptions = {},
): T {
  const inputShape = checkInput(X);
  const [F1, F2, F3] = checkFilters(filters);
  checkPositiveInteger('f', f);
  if (inputShape[CHANNEL_AXIS] !== F3) {
    throw new ArgumentError(
      'filters[2]',
      `equal to the input's channels (${inputShape[CHANNEL_AXIS]}) in an identity block`,
      F3,
      'The shortcut adds the input unchanged, so the main path must end with as ' +
        'many channels; use a convolutional block to change the channel count.',
    );
  }
  // BEGIN SOLUTION
  // STUB: // Exercise 1: build the identity block from TensorFlow.js layers.
  // STUB: //
  // STUB: // Main path, three groups, each layer applied with `.apply(x)`:
  // STUB: //   1. tf.layers.conv2d: F1 filters, kernelSize 1, strides 1, padding 'valid';
  // STUB: //      tf.layers.batchNormalization over the channels (axis 3); a ReLU
  // STUB: //      (tf.layers.activation).
  // STUB: //   2. conv2d: F2 filters, kernelSize f, strides 1, padding 'same'; BatchNorm; ReLU.
  // STUB: //   3. conv2d: F3 filters, kernelSize 1, strides 1, padding 'valid'; BatchNorm, no ReLU.
  // STUB: // Shortcut: X itself. Add it to the main path (tf.layers.add), then a final ReLU.
  // STUB: //
  // STUB: // Give every conv2d `kernelInitializer: initializer(seed)`, in the order above, with
  // STUB: //   const initializer = options.initializer ?? randomUniform;
  // STUB: //   const seed = options.seed ?? 0;
  // STUB: // (the checks hand you fixed kernels that way), and give every BatchNorm's `apply`
  // STUB: //   X instanceof tf.Tensor ? { training: options.training ?? true } : {}
  // STUB: // as its second argument, so that it uses the batch statistics when asked to.
  // STUB: throw new Error(
  // STUB:   'not implemented yet: identityBlock. Replace this `throw` in src/blocks.ts ' +
  // STUB:     'with the block, following the comment above it.',
  // STUB: );
  const ctx = new BlockContext(X, options, randomUniform);

  return ctx.run((x) => {
    const shortcut = x;

    let main = ctx.convBn(x, F1, 1, 1, 'valid', '1');
    main = ctx.relu(main, '1');

    // The middle convolution keeps the spatial size ('same') so that the
    // add at the end lines up with the shortcut.
    main = ctx.convBn(main, F2, f, 1, 'same', '2');
    main = ctx.relu(main, '2');

    main = ctx.convBn(main, F3, 1, 1, 'valid', '3');

    return ctx.addRelu(main, shortcut);
  });
  // END SOLUTION
}

/**
 * The convolutional block: the shortcut passes through a strided 1×1
 * convolution and BatchNorm, so the block may change both the spatial size
 * (by the stride s) and the channel count (to F3).
 *
 * @param X input, NHWC, concrete or symbolic.
 * @param f kernel size of the middle convolution of the main path.
 * @param filters [F1, F2, F3], the filters of the three main-path convolutions.
 * @param s the stride of the first main-path convolution and of the shortcut.
 *   Defaults to 2.
 * @returns the block's output: spatial size ceil(H / s) × ceil(W / s), F3 channels.
 * @throws ArgumentError naming the argument that is wrong.
 */
export function convolutionalBlock<T extends BlockInput>(
  X: T,
  f: number,
  filters: Filters | number[],
  s = 2,
  options: BlockOptions = {},
): T {
  checkInput(X);
  const [F1, F2, F3] = checkFilters(filters);
  checkPositiveInteger('f', f);
  checkPositiveInteger('s', s);
  // BEGIN SOLUTION
  // STUB: // Exercise 2: build the convolutional block from TensorFlow.js layers.
  // STUB: //
  // STUB: // Main path, as in the identity block, except that the first conv2d has
  // STUB: // strides s (the other two keep strides 1):
  // STUB: //   1. conv2d F1, kernelSize 1, strides s, 'valid'; BatchNorm (axis 3); ReLU.
  // STUB: //   2. conv2d F2, kernelSize f, strides 1, 'same'; BatchNorm; ReLU.
  // STUB: //   3. conv2d F3, kernelSize 1, strides 1, 'valid'; BatchNorm, no ReLU.
  // STUB: // Shortcut: its own conv2d (F3 filters, kernelSize 1, strides s, 'valid') and
  // STUB: // BatchNorm, so that it reaches the main path's shape. Add, then a final ReLU.
  // STUB: //
  // STUB: // Make the four kernel initialisers with `initializer(seed)` in the order main 1,
  // STUB: // main 2, main 3, shortcut, where
  // STUB: //   const initializer = options.initializer ?? glorotUniform;
  // STUB: //   const seed = options.seed ?? 0;
  // STUB: // and give every BatchNorm's `apply`
  // STUB: //   X instanceof tf.Tensor ? { training: options.training ?? true } : {}
  // STUB: // as its second argument.
  // STUB: throw new Error(
  // STUB:   'not implemented yet: convolutionalBlock. Replace this `throw` in src/blocks.ts ' +
  // STUB:     'with the block, following the comment above it.',
  // STUB: );
  const ctx = new BlockContext(X, options, glorotUniform);

  return ctx.run((x) => {
    // The stride sits on the first 1×1 convolution, as in the course and
    // Keras's ResNet50 (torchvision's "ResNet v1.5" moves it to the f×f one).
    let main = ctx.convBn(x, F1, 1, s, 'valid', '1');
    main = ctx.relu(main, '1');

    main = ctx.convBn(main, F2, f, 1, 'same', '2');
    main = ctx.relu(main, '2');

    main = ctx.convBn(main, F3, 1, 1, 'valid', '3');

    // The shortcut must reach the main path's shape before the add: the same
    // stride for the spatial size, a 1×1 convolution for the channels.
    const shortcut = ctx.convBn(x, F3, 1, s, 'valid', '0');

    return ctx.addRelu(main, shortcut);
  });
  // END SOLUTION
}

type Padding = 'valid' | 'same';
type AnyTensor = tf.Tensor | tf.SymbolicTensor;

// BEGIN SOLUTION
// STUB: // The solution's helper class is left out of the workspace: the blocks above
// STUB: // are yours to build from TensorFlow.js layers.
/**
 * What one block call shares between its layers: concrete or symbolic mode,
 * the initialiser and seed, the name prefix, and (in concrete mode) the
 * layers to dispose once the output is computed.
 */
class BlockContext {
  private readonly concrete: boolean;
  private readonly training: boolean | undefined;
  private readonly initializer: InitializerFactory;
  private readonly seed: number;
  private readonly layers: tf.layers.Layer[] = [];

  constructor(
    private readonly input: BlockInput,
    private readonly options: BlockOptions,
    defaultInitializer: InitializerFactory,
  ) {
    this.concrete = input instanceof tf.Tensor;
    if (options.training !== undefined && typeof options.training !== 'boolean') {
      throw new ArgumentError('options.training', 'a boolean', options.training);
    }
    if (!this.concrete && options.training !== undefined) {
      throw new ArgumentError(
        'options.training',
        'unset when X is symbolic',
        options.training,
        "A model chooses per call: fit() trains BatchNorm, predict() infers. Pass " +
          '`training` only with a concrete tensor.',
      );
    }
    if (options.initializer !== undefined && typeof options.initializer !== 'function') {
      throw new ArgumentError(
        'options.initializer',
        'a function (seed) => Initializer',
        typeof options.initializer,
      );
    }
    if (options.seed !== undefined && !Number.isInteger(options.seed)) {
      throw new ArgumentError('options.seed', 'an integer', options.seed);
    }
    this.training = this.concrete ? (options.training ?? true) : undefined;
    this.initializer = options.initializer ?? defaultInitializer;
    this.seed = options.seed ?? 0;
  }

  /** Runs the block body; in concrete mode frees every intermediate and weight. */
  run<T extends BlockInput>(body: (x: AnyTensor) => AnyTensor): T {
    if (!this.concrete) return body(this.input) as T;
    try {
      return tf.tidy(() => body(this.input) as tf.Tensor) as T;
    } finally {
      // A layer that never ran (the block failed before it) has no weights,
      // and disposing it would throw over the error that matters.
      for (const layer of this.layers) if (layer.built) layer.dispose();
    }
  }

  /** One convolution followed by its BatchNormalization over the channels. */
  convBn(
    x: AnyTensor,
    filters: number,
    kernelSize: number,
    strides: number,
    padding: Padding,
    branch: string,
  ): AnyTensor {
    const conv = this.track(
      tf.layers.conv2d({
        filters,
        kernelSize,
        strides,
        padding,
        kernelInitializer: this.initializer(this.seed),
        biasInitializer: 'zeros',
        name: this.layerName(`${branch}_conv`),
      }),
    );
    // Normalising over axis 3 gives one mean and variance per channel, shared
    // by every pixel of that channel, as a convolution's filters are.
    const bn = this.track(
      tf.layers.batchNormalization({
        axis: CHANNEL_AXIS,
        epsilon: BN_EPSILON,
        name: this.layerName(`${branch}_bn`),
      }),
    );
    return this.apply(bn, this.apply(conv, x));
  }

  relu(x: AnyTensor, branch: string): AnyTensor {
    const layer = tf.layers.activation({ activation: 'relu', name: this.layerName(`${branch}_relu`) });
    return this.apply(this.track(layer), x);
  }

  /** The residual connection: add the shortcut, then the final ReLU. */
  addRelu(main: AnyTensor, shortcut: AnyTensor): AnyTensor {
    const add = this.track(tf.layers.add({ name: this.layerName('add') }));
    const sum = add.apply([main, shortcut] as tf.Tensor[]) as AnyTensor;
    const out = tf.layers.activation({ activation: 'relu', name: this.layerName('out') });
    return this.apply(this.track(out), sum);
  }

  private apply(layer: tf.layers.Layer, x: AnyTensor): AnyTensor {
    const kwargs = this.training === undefined ? {} : { training: this.training };
    return layer.apply(x as tf.Tensor, kwargs) as AnyTensor;
  }

  private track<L extends tf.layers.Layer>(layer: L): L {
    if (this.concrete) this.layers.push(layer);
    return layer;
  }

  private layerName(suffix: string): string | undefined {
    return this.options.name === undefined ? undefined : `${this.options.name}_${suffix}`;
  }
}
// END SOLUTION

function checkInput(X: unknown): number[] {
  if (X instanceof tf.Tensor || X instanceof tf.SymbolicTensor) {
    const shape = X.shape as Array<number | null>;
    if (shape.length !== 4) {
      throw new ArgumentError(
        'X',
        'a 4-D tensor [batch, height, width, channels] (NHWC)',
        `a tensor of shape ${JSON.stringify(shape)}`,
        'Add a batch axis with `x.expandDims(0)` for a single image.',
      );
    }
    const channels = shape[CHANNEL_AXIS];
    if (channels === null || channels === undefined) {
      throw new ArgumentError('X', 'a tensor with a known channel count', JSON.stringify(shape));
    }
    return shape.map((d) => d ?? -1);
  }
  throw new ArgumentError(
    'X',
    'a tf.Tensor or a symbolic tensor from tf.input()',
    X === null ? 'null' : typeof X,
  );
}

function checkFilters(filters: unknown): Filters {
  const ok =
    Array.isArray(filters) &&
    filters.length === 3 &&
    filters.every((n) => Number.isInteger(n) && n > 0);
  if (!ok) {
    throw new ArgumentError('filters', 'three positive integers [F1, F2, F3]', filters);
  }
  return filters as Filters;
}

function checkPositiveInteger(argument: string, value: unknown): void {
  if (!(typeof value === 'number' && Number.isInteger(value) && value >= 1)) {
    throw new ArgumentError(argument, 'an integer of at least 1', value);
  }
}
