/**
 * ResNet50 as the course builds it: a 7×7 stem, four stages of bottleneck
 * blocks (3, 4, 6 and 3 blocks), average pooling and a softmax classifier.
 */
import * as tf from '@tensorflow/tfjs';

import { BN_EPSILON, convolutionalBlock, Filters, identityBlock } from './blocks.js';
import { ArgumentError } from './errors.js';
import { glorotUniform } from './initializers.js';

/** One stage: a convolutional block, then `blocks - 1` identity blocks. */
export interface StagePlan {
  /** Stage number, as in the paper (the stem is stage 1). */
  stage: number;
  /** Blocks in the stage, the convolutional one included. */
  blocks: number;
  /** [F1, F2, F3] of every block in the stage. */
  filters: Filters;
  /** Stride of the stage's convolutional block. */
  stride: number;
}

/**
 * The stages of ResNet50. Stage 2 keeps the spatial size (the max pooling
 * before it has already halved it); each later stage halves it and doubles
 * the bottleneck width.
 */
export const RESNET50_STAGES: readonly StagePlan[] = [
  { stage: 2, blocks: 3, filters: [64, 64, 256], stride: 1 },
  { stage: 3, blocks: 4, filters: [128, 128, 512], stride: 2 },
  { stage: 4, blocks: 6, filters: [256, 256, 1024], stride: 2 },
  { stage: 5, blocks: 3, filters: [512, 512, 2048], stride: 2 },
];

export interface ResNet50Options {
  /** Height, width and channels of one image. Defaults to [64, 64, 3]. */
  inputShape?: [number, number, number];
  /** Number of classes of the softmax output. Defaults to 6 (the SIGNS digits). */
  classes?: number;
  /** Seed of the Glorot initialisers (the course uses 0). Defaults to 0. */
  seed?: number;
}

/**
 * Builds the course's ResNet50: 23,600,006 parameters for 64×64×3 inputs and
 * 6 classes. Layers are named from stage, block and branch
 * (`conv3_block2_1_conv`), as Keras's applications name them.
 *
 * @throws ArgumentError for an input shape or class count it cannot use.
 */
export function ResNet50(options: ResNet50Options = {}): tf.LayersModel {
  const { inputShape = [64, 64, 3], classes = 6, seed = 0 } = options;
  checkInputShape(inputShape);
  if (!Number.isInteger(classes) || classes < 1) {
    throw new ArgumentError('classes', 'a positive integer', classes);
  }

  // BEGIN SOLUTION
  // STUB: // Exercise 3: assemble ResNet50 with your blocks.
  // STUB: //
  // STUB: //   input: tf.input({ shape: inputShape })
  // STUB: //   stage 1: zeroPadding2d (padding 3); conv2d 64 filters, kernelSize 7, strides 2,
  // STUB: //            kernelInitializer glorotUniform(seed); batchNormalization (axis 3);
  // STUB: //            ReLU; maxPooling2d (poolSize 3, strides 2)
  // STUB: //   stages 2 to 5, from RESNET50_STAGES: one convolutionalBlock (f = 3, the
  // STUB: //            stage's filters and stride), then `blocks - 1` identityBlocks (f = 3)
  // STUB: //   head:    averagePooling2d (poolSize 2); flatten; dense with `classes` units,
  // STUB: //            softmax activation, kernelInitializer glorotUniform(seed)
  // STUB: //
  // STUB: // Return tf.model({ inputs: input, outputs: output, name: 'ResNet50' }).
  // STUB: throw new Error(
  // STUB:   'not implemented yet: ResNet50. Replace this `throw` in src/resnet50.ts ' +
  // STUB:     'with the model, following the comment above it.',
  // STUB: );
  const input = tf.input({ shape: inputShape, name: 'input' });

  // Stage 1, the stem: a 7×7/2 convolution on the padded image, then a 3×3/2
  // max pooling, bringing 64×64 down to 15×15.
  let x = tf.layers.zeroPadding2d({ padding: [3, 3], name: 'conv1_pad' }).apply(input);
  x = tf.layers
    .conv2d({
      filters: 64,
      kernelSize: 7,
      strides: 2,
      kernelInitializer: glorotUniform(seed),
      name: 'conv1_conv',
    })
    .apply(x);
  x = tf.layers.batchNormalization({ axis: 3, epsilon: BN_EPSILON, name: 'conv1_bn' }).apply(x);
  x = tf.layers.activation({ activation: 'relu', name: 'conv1_relu' }).apply(x);
  x = tf.layers.maxPooling2d({ poolSize: 3, strides: 2, name: 'pool1_pool' }).apply(x);

  let h = x as tf.SymbolicTensor;
  for (const { stage, blocks, filters, stride } of RESNET50_STAGES) {
    h = convolutionalBlock(h, 3, filters, stride, { seed, name: `conv${stage}_block1` });
    for (let block = 2; block <= blocks; block++) {
      h = identityBlock(h, 3, filters, { seed, name: `conv${stage}_block${block}` });
    }
  }

  // The head: 2×2 average pooling (the last stage is 2×2 for a 64×64 input),
  // then one dense softmax layer.
  x = tf.layers.averagePooling2d({ poolSize: 2, name: 'avg_pool' }).apply(h);
  x = tf.layers.flatten({ name: 'flatten' }).apply(x);
  const output = tf.layers
    .dense({
      units: classes,
      activation: 'softmax',
      kernelInitializer: glorotUniform(seed),
      name: 'predictions',
    })
    .apply(x) as tf.SymbolicTensor;

  return tf.model({ inputs: input, outputs: output, name: 'ResNet50' });
  // END SOLUTION
}

function checkInputShape(shape: unknown): void {
  const ok =
    Array.isArray(shape) &&
    shape.length === 3 &&
    shape.every((n) => Number.isInteger(n) && n > 0);
  if (!ok) {
    throw new ArgumentError('inputShape', '[height, width, channels] of positive integers', shape);
  }
  // The stem and three strided stages shrink the image about 32-fold; the
  // last stage must stay at least 2×2 for the 2×2 average pooling.
  const [height, width] = shape as number[];
  if (Math.min(lastStageSize(height), lastStageSize(width)) < 2) {
    throw new ArgumentError(
      'inputShape',
      'large enough to leave the last stage at least 2×2 (64×64 gives 2×2)',
      shape,
    );
  }
}

/** Height (or width) of the last stage's output for an input of `size`. */
function lastStageSize(size: number): number {
  let n = Math.floor((size + 6 - 7) / 2) + 1; // 7×7/2 convolution on the padded image
  n = Math.floor((n - 3) / 2) + 1; // 3×3/2 max pooling
  for (const { stride } of RESNET50_STAGES) n = Math.ceil(n / stride);
  return n;
}
