/**
 * Residual Networks in TypeScript: the course's identity and convolutional
 * blocks, ResNet50, the SIGNS data, training and evaluation, on TensorFlow.js.
 *
 * Start with `initBackend()` (it picks and reports the compute backend), then
 * `loadSigns()`, `ResNet50()`, `train()` and `evaluate()`.
 */
export * from './errors.js';
export * from './backend/index.js';
export * from './initializers.js';
export * from './blocks.js';
export * from './resnet50.js';
export * from './summary.js';
export * from './reference.js';
export * from './data/signs.js';
export * from './paths.js';
export * from './train.js';
export * from './io.js';
export * from './progress.js';
export * from './recipes.js';
export * from './checkpoint.js';
export * from './augment.js';
export * from './runs.js';
