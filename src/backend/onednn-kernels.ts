/**
 * The kernels of the `onednn` backend that run in the native addon: the ones
 * that dominate a ResNet training step. Each works straight on the CPU
 * backend's Float32Arrays (inputs read in place, outputs allocated here and
 * handed to the backend's storage), and hands any case it does not cover
 * (other dtypes, NCHW, unusual broadcasts, PReLU) to the CPU backend's own
 * kernel, so every input TensorFlow.js accepts still works.
 *
 * ZeroPadding2D's PadV2 is here too: the CPU kernel's per-element index
 * arithmetic took longer on the input batch than the 7×7 convolution after it.
 *
 * Besides TensorFlow.js's kernels there are three of the project's own,
 * used by the hooks in `onednn.ts`: a fused training-mode BatchNorm, its
 * gradient, and the ReLU gradient in one pass.
 */
import * as tf from '@tensorflow/tfjs';
import type {
  KernelConfig,
  KernelFunc,
  NamedAttrMap,
  TensorInfo,
} from '@tensorflow/tfjs';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

/** The functions of `native/build/Release/onednn_backend.node`. */
export interface OnednnAddon {
  conv2dForward(
    x: Float32Array,
    filter: Float32Array,
    bias: Float32Array | null,
    y: Float32Array,
    params: number[],
    relu: boolean,
    weightStamp?: number,
    /** Per output channel, with a stamp: the kept weights are the filter times these. */
    scale?: Float32Array,
  ): void;
  /** The weights stamped `stamp` may change or are gone (see PoolingBackend.weightStamp). */
  forgetWeights(stamp: number): void;
  conv2dBackwardData(
    dy: Float32Array,
    filter: Float32Array,
    dx: Float32Array,
    params: number[],
  ): void;
  conv2dBackwardFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, params: number[]): void;
  poolForward(x: Float32Array, y: Float32Array, params: number[], max: boolean): void;
  poolBackward(
    x: Float32Array | null,
    dy: Float32Array,
    dx: Float32Array,
    params: number[],
    max: boolean,
  ): void;
  matMul(
    a: Float32Array,
    b: Float32Array,
    c: Float32Array,
    params: number[],
    transposeA: boolean,
    transposeB: boolean,
    bias: Float32Array | null,
    relu: boolean,
  ): void;
  batchNormTrain(
    x: Float32Array,
    gamma: Float32Array,
    beta: Float32Array,
    y: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    rows: number,
    channels: number,
    epsilon: number,
    relu?: boolean,
  ): void;
  batchNormTrainGrad(
    dy: Float32Array,
    x: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    gamma: Float32Array,
    dx: Float32Array,
    dgamma: Float32Array,
    dbeta: Float32Array,
    rows: number,
    channels: number,
    epsilon: number,
    /** The forward output when a ReLU was fused in: dy counts where it is positive. */
    y?: Float32Array | null,
  ): void;
  batchNormInfer(
    x: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    gamma: Float32Array | null,
    beta: Float32Array | null,
    y: Float32Array,
    channels: number,
    epsilon: number,
  ): void;
  relu(x: Float32Array, y: Float32Array): void;
  reluGrad(dy: Float32Array, x: Float32Array, dx: Float32Array): void;
  binary(
    op: number,
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    rows: number,
    inner: number,
    modeA: number,
    modeB: number,
  ): void;
  sum(x: Float32Array, out: Float32Array, outer: number, reduced: number, inner: number): void;
  adam(value: Float32Array, m: Float32Array, v: Float32Array, g: Float32Array, k: number[]): void;
  pad(
    x: Float32Array,
    out: Float32Array,
    shape: number[],
    before: number[],
    after: number[],
    value: number,
  ): void;
  configure(options: { winograd?: boolean; bf16?: boolean }): { winograd: boolean; bf16: boolean };
  setThreads(n: number): void;
  info(): { version: string; threads: number; bytes: number; buffers: number; primitives: number };
}

/** The backend's name in TensorFlow.js (`tf.setBackend('onednn')`). */
export const ONEDNN_BACKEND = 'onednn';

/** Training-mode BatchNorm over the last axis: inputs x, gamma, beta; outputs y, mean, variance. */
export const BATCH_NORM_TRAINING = 'OnednnBatchNormTraining';
/** The same followed by ReLU: y is max(0, BatchNorm(x)). */
export const BATCH_NORM_RELU_TRAINING = 'OnednnBatchNormReluTraining';
/**
 * The gradient of both: inputs dy, x, mean, variance, gamma, and y for the
 * ReLU variant; outputs dx, dgamma, dbeta.
 */
export const BATCH_NORM_TRAINING_GRAD = 'OnednnBatchNormTrainingGrad';
/**
 * Inference: a convolution (inputs x, filter, optional bias) with the
 * BatchNorm after it folded in (inputs mean, variance, gamma, beta; attr
 * epsilon) and optionally a ReLU (attr relu). The filter scaled per output
 * channel is kept reordered under a stamp of the filter, gamma and variance.
 * No gradient: the hooks use it only while no gradient is being recorded.
 */
export const CONV2D_BATCH_NORM = 'OnednnConv2DBatchNorm';
/** ReLU's gradient in one pass: inputs dy, x; output dy where x > 0, else 0. */
export const RELU_GRAD = 'OnednnReluGrad';
/**
 * A convolution with an optional bias, as FusedConv2D without activation,
 * whose gradient (in onednn.ts) computes each input's part only when asked:
 * FusedConv2D's own gradient always computes the input gradient, which the
 * first layer of a network throws away.
 */
export const CONV2D_BIAS = 'OnednnConv2DBias';
/**
 * BatchNorm's two moving-average updates in one kernel: inputs movingMean,
 * movingVariance, mean, variance; attr momentum; outputs the new moving mean
 * and variance, each v − (v − value)·(1 − momentum) in float32 as the layer
 * computes it. One kernel instead of six engine operations per layer.
 */
export const MOVING_AVERAGES = 'OnednnMovingAverages';

/**
 * The CPU backend, plus the pool of output arrays the `onednn` backend keeps
 * (see `OnednnBackend` in onednn.ts).
 */
export interface PoolingBackend extends MathBackendCPU {
  /** A float32 array of `length` elements, contents undefined, for a new tensor. */
  allocateFloat32(length: number): Float32Array;
  /**
   * A number that names the values of `dataId` until they may change: the
   * addon keeps convolution weights reordered under it.
   */
  weightStamp(dataId: object): number;
  /** A stamp valid while the stamps of all of `dataIds` are (weights derived from them). */
  derivedStamp(dataIds: object[]): number;
}
type Backend = PoolingBackend;

/**
 * A kernel's inputs by name. Optional ones (a bias) may still be undefined at
 * run time; the kernels check those they read as optional.
 */
type Inputs = Record<string, TensorInfo>;

function cpuKernel(name: string): KernelFunc {
  const config = tf.getKernel(name, 'cpu');
  if (config === undefined) throw new Error(`The CPU backend has no '${name}' kernel`);
  return config.kernelFunc;
}

/** The backing array of a float32 tensor, or undefined for anything else. */
function f32(backend: Backend, t: TensorInfo | undefined): Float32Array | undefined {
  if (t === undefined || t.dtype !== 'float32') return undefined;
  const values = backend.data.get(t.dataId)?.values;
  return values instanceof Float32Array ? values : undefined;
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * A new float32 tensor in the backend's storage, and its array, which the
 * kernel must fill entirely (a pooled array holds old values).
 */
function output(backend: Backend, shape: number[]): [TensorInfo, Float32Array] {
  const values = backend.allocateFloat32(size(shape));
  return [backend.makeTensorInfo(shape, 'float32', values), values];
}

const fallbacks = new Map<string, number>();

/**
 * How often each native kernel handed a case to the CPU kernel since the last
 * call (tests use it to check that the native path really ran).
 */
export function takeFallbackCounts(): Record<string, number> {
  const out = Object.fromEntries(fallbacks);
  fallbacks.clear();
  return out;
}

/**
 * Makes a kernel that runs `native`, or the CPU kernel of the same name when
 * `native` returns undefined (a case it does not cover).
 */
function withFallback(
  name: string,
  native: (inputs: Inputs, backend: Backend, attrs: NamedAttrMap) =>
    TensorInfo | TensorInfo[] | undefined,
): KernelConfig {
  const fallback = cpuKernel(name);
  return {
    kernelName: name,
    backendName: ONEDNN_BACKEND,
    kernelFunc: (args) => {
      const backend = args.backend as Backend;
      const out = native(args.inputs as Inputs, backend, args.attrs ?? {});
      if (out !== undefined) return out;
      fallbacks.set(name, (fallbacks.get(name) ?? 0) + 1);
      return fallback(args);
    },
  };
}

// --- Convolution --------------------------------------------------------------

/** The addon's 17 convolution parameters, or undefined if oneDNN's geometry disagrees. */
function convParams(info: tf.backend_util.Conv2DInfo): number[] | undefined {
  const p = info.padInfo;
  const params = [
    info.batchSize, info.inHeight, info.inWidth, info.inChannels,
    info.filterHeight, info.filterWidth, info.outChannels,
    info.outHeight, info.outWidth, info.strideHeight, info.strideWidth,
    p.top, p.left, p.bottom, p.right, info.dilationHeight, info.dilationWidth,
  ];
  // oneDNN derives the output size from the padding; a rounding mode that
  // disagrees (dimRoundingMode 'ceil') is left to the CPU kernel.
  const fits = (
    inSize: number, k: number, d: number, lo: number, hi: number, s: number, out: number,
  ) => Math.floor((inSize + lo + hi - ((k - 1) * d + 1)) / s) + 1 === out && lo >= 0 && hi >= 0;
  const ok =
    fits(info.inHeight, info.filterHeight, info.dilationHeight, p.top, p.bottom,
      info.strideHeight, info.outHeight) &&
    fits(info.inWidth, info.filterWidth, info.dilationWidth, p.left, p.right,
      info.strideWidth, info.outWidth);
  return ok && size(info.outShape) > 0 ? params : undefined;
}

function convInfo(
  xShape: number[],
  filterShape: number[],
  attrs: NamedAttrMap,
  dilations: number | [number, number] = 1,
): tf.backend_util.Conv2DInfo | undefined {
  const { strides, pad, dataFormat, dimRoundingMode } = attrs as unknown as tf.Conv2DAttrs;
  if (dataFormat !== undefined && dataFormat !== 'NHWC') return undefined;
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides, dilations, pad, dimRoundingMode, false, 'channelsLast',
  );
}

/**
 * Conv2D and FusedConv2D: the kernels of inference (training goes through
 * CONV2D_BIAS, see onednn.ts), so their weights are kept reordered between
 * calls, stamped by the backend.
 */
function conv2d(addon: OnednnAddon, name: 'Conv2D' | 'FusedConv2D'): KernelConfig {
  return withFallback(name, convForward(addon, true));
}

/**
 * FusedConv2D's kernel under the name CONV2D_BIAS, with the same fallback;
 * its weights change every training step, so they are not kept.
 */
function conv2dBias(addon: OnednnAddon): KernelConfig {
  return { ...withFallback('FusedConv2D', convForward(addon, false)), kernelName: CONV2D_BIAS };
}

function convForward(addon: OnednnAddon, keepWeights: boolean) {
  return (inputs: Inputs, backend: Backend, attrs: NamedAttrMap): TensorInfo | undefined => {
    const { x, filter, bias, preluActivationWeights } = inputs;
    const activation = (attrs.activation as string | undefined) ?? 'linear';
    if (preluActivationWeights !== undefined && preluActivationWeights !== null) return undefined;
    if (activation !== 'linear' && activation !== 'relu') return undefined;
    const xs = f32(backend, x);
    const fs = f32(backend, filter);
    const bs = bias ? f32(backend, bias) : null;
    if (!xs || !fs || bs === undefined || x.shape.length !== 4) return undefined;
    // The bias must be one value per output channel (tf.layers' case).
    if (bs && (bias.shape.length !== 1 || bias.shape[0] !== filter.shape[3])) return undefined;
    const dilations = attrs.dilations as number | [number, number] | undefined;
    const info = convInfo(x.shape, filter.shape, attrs, dilations ?? 1);
    const params = info && convParams(info);
    if (!info || !params) return undefined;
    const [out, ys] = output(backend, info.outShape);
    const stamp = keepWeights ? backend.weightStamp(filter.dataId) : 0;
    addon.conv2dForward(xs, fs, bs, ys, params, activation === 'relu', stamp);
    return out;
  };
}

function conv2dBatchNorm(addon: OnednnAddon): KernelConfig {
  return {
    kernelName: CONV2D_BATCH_NORM,
    backendName: ONEDNN_BACKEND,
    kernelFunc: ({ inputs, backend, attrs = {} }) => {
      const cpu = backend as Backend;
      const { x, filter, bias, mean, variance, gamma, beta } = inputs as Inputs;
      const [xs, fs, ms, vs, gs, bes] = [x, filter, mean, variance, gamma, beta].map((t) => f32(cpu, t));
      const bs = bias === undefined ? null : f32(cpu, bias);
      const channels = filter.shape[3];
      const perChannel = [ms, vs, gs, bes, ...(bs ? [bs] : [])].every((v) => v?.length === channels);
      const info = xs && fs && bs !== undefined && perChannel ? convInfo(x.shape, filter.shape, attrs) : undefined;
      const params = info && convParams(info);
      if (!info || !params) {
        throw new Error(
          `${CONV2D_BATCH_NORM}: needs float32 NHWC x, an HWIO filter and per-channel BatchNorm values`,
        );
      }
      // As the BatchNorm layer in inference: (z − mean)·γ/√(var + ε) + β, for
      // z the convolution plus its bias; the factor goes into the weights.
      const epsilon = attrs.epsilon as number;
      const scale = new Float32Array(channels);
      const shift = new Float32Array(channels);
      for (let c = 0; c < channels; c++) {
        scale[c] = gs![c] * Math.fround(1 / Math.fround(Math.sqrt(Math.fround(vs![c] + epsilon))));
        shift[c] = bes![c] + ((bs ? bs[c] : 0) - ms![c]) * scale[c];
      }
      const [out, ys] = output(cpu, info.outShape);
      const stamp = cpu.derivedStamp([filter.dataId, gamma.dataId, variance.dataId]);
      addon.conv2dForward(xs!, fs!, shift, ys, params, Boolean(attrs.relu), stamp, scale);
      return out;
    },
  };
}

function conv2dBackpropInput(addon: OnednnAddon): KernelConfig {
  return withFallback('Conv2DBackpropInput', (inputs, backend, attrs) => {
    const { dy, filter } = inputs;
    const dys = f32(backend, dy);
    const fs = f32(backend, filter);
    const inputShape = attrs.inputShape as number[];
    if (!dys || !fs) return undefined;
    const info = convInfo(inputShape, filter.shape, attrs);
    const params = info && convParams(info);
    if (!info || !params) return undefined;
    const [out, dxs] = output(backend, inputShape);
    addon.conv2dBackwardData(dys, fs, dxs, params);
    return out;
  });
}

function conv2dBackpropFilter(addon: OnednnAddon): KernelConfig {
  return withFallback('Conv2DBackpropFilter', (inputs, backend, attrs) => {
    const { x, dy } = inputs;
    const xs = f32(backend, x);
    const dys = f32(backend, dy);
    const filterShape = attrs.filterShape as number[];
    if (!xs || !dys) return undefined;
    const info = convInfo(x.shape, filterShape, attrs);
    const params = info && convParams(info);
    if (!info || !params) return undefined;
    const [out, dws] = output(backend, filterShape);
    addon.conv2dBackwardFilter(xs, dys, dws, params);
    return out;
  });
}

// --- Pooling ------------------------------------------------------------------

function poolParams(
  xShape: number[],
  attrs: NamedAttrMap,
): [tf.backend_util.Conv2DInfo, number[]] | undefined {
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tf.MaxPoolAttrs;
  if (xShape.length !== 4) return undefined;
  const info = tf.backend_util.computePool2DInfo(
    xShape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode,
  );
  const conv = convParams(info);
  if (!conv) return undefined;
  const p = info.padInfo;
  return [
    info,
    [
      info.batchSize, info.inHeight, info.inWidth, info.inChannels,
      info.filterHeight, info.filterWidth, info.outHeight, info.outWidth,
      info.strideHeight, info.strideWidth, p.top, p.left, p.bottom, p.right,
    ],
  ];
}

function pool(addon: OnednnAddon, name: 'MaxPool' | 'AvgPool'): KernelConfig {
  return withFallback(name, (inputs, backend, attrs) => {
    const xs = f32(backend, inputs.x);
    const geometry = poolParams(inputs.x.shape, attrs);
    if (!xs || !geometry) return undefined;
    const [out, ys] = output(backend, geometry[0].outShape);
    addon.poolForward(xs, ys, geometry[1], name === 'MaxPool');
    return out;
  });
}

function poolGrad(addon: OnednnAddon, name: 'MaxPoolGrad' | 'AvgPoolGrad'): KernelConfig {
  return withFallback(name, (inputs, backend, attrs) => {
    const { dy, input } = inputs;
    const dys = f32(backend, dy);
    const xs = f32(backend, input);
    const geometry = poolParams(input.shape, attrs);
    if (!dys || !xs || !geometry) return undefined;
    const [out, dxs] = output(backend, input.shape);
    addon.poolBackward(xs, dys, dxs, geometry[1], name === 'MaxPoolGrad');
    return out;
  });
}

// --- Matrix product -----------------------------------------------------------

function matMul(addon: OnednnAddon, name: 'BatchMatMul' | '_FusedMatMul'): KernelConfig {
  return withFallback(name, (inputs, backend, attrs) => {
    const { a, b, bias, preluActivationWeights } = inputs;
    const transposeA = Boolean(attrs.transposeA);
    const transposeB = Boolean(attrs.transposeB);
    const activation = (attrs.activation as string | undefined) ?? 'linear';
    if (preluActivationWeights !== undefined && preluActivationWeights !== null) return undefined;
    if (activation !== 'linear' && activation !== 'relu') return undefined;
    const as = f32(backend, a);
    const bs = f32(backend, b);
    const biasValues = bias ? f32(backend, bias) : null;
    if (!as || !bs || biasValues === undefined || a.shape.length < 2 || b.shape.length < 2) {
      return undefined;
    }
    const ra = a.shape.length;
    const rb = b.shape.length;
    const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
    const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
    const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
    const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
    if (k !== kb) return undefined; // the CPU kernel throws the usual error
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    const batchA = size(outerA);
    const batchB = size(outerB);
    if (batchA !== batchB && batchA !== 1 && batchB !== 1) return undefined;
    const outer = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB);
    if (biasValues && biasValues.length !== n) return undefined;
    const [out, cs] = output(backend, [...outer, m, n]);
    addon.matMul(as, bs, cs, [batchA, batchB, m, n, k], transposeA, transposeB, biasValues,
      activation === 'relu');
    return out;
  });
}

// --- BatchNorm ----------------------------------------------------------------

function fusedBatchNorm(addon: OnednnAddon): KernelConfig {
  return withFallback('FusedBatchNorm', (inputs, backend, attrs) => {
    const { x, mean, variance, offset, scale } = inputs;
    const xs = f32(backend, x);
    const ms = f32(backend, mean);
    const vs = f32(backend, variance);
    const os = offset ? f32(backend, offset) : null;
    const ss = scale ? f32(backend, scale) : null;
    if (!xs || !ms || !vs || os === undefined || ss === undefined || x.shape.length === 0) {
      return undefined;
    }
    // The CPU kernel cycles each parameter over the flat index; that is a
    // per-channel value exactly when its length is 1 or the last axis.
    const channels = x.shape[x.shape.length - 1];
    const fits = (v: Float32Array | null) => v === null || v.length === 1 || v.length === channels;
    if (channels === 0 || ![ms, vs, os, ss].every(fits)) return undefined;
    const epsilon = (attrs.varianceEpsilon as number | undefined) ?? 0.001;
    const [out, ys] = output(backend, x.shape);
    addon.batchNormInfer(xs, ms, vs, ss, os, ys, channels, epsilon);
    return out;
  });
}

function batchNormTraining(addon: OnednnAddon, relu: boolean): KernelConfig {
  const kernelName = relu ? BATCH_NORM_RELU_TRAINING : BATCH_NORM_TRAINING;
  return {
    kernelName,
    backendName: ONEDNN_BACKEND,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const cpu = backend as Backend;
      const { x, gamma, beta } = inputs as Inputs;
      const [xs, gs, bs] = [f32(cpu, x), f32(cpu, gamma), f32(cpu, beta)];
      const channels = x.shape[x.shape.length - 1];
      if (!xs || !gs || !bs || gs.length !== channels || bs.length !== channels) {
        throw new Error(`${kernelName}: needs float32 x and per-channel gamma and beta`);
      }
      const epsilon = attrs?.epsilon as number;
      const [y, ys] = output(cpu, x.shape);
      const [mean, ms] = output(cpu, [channels]);
      const [variance, vs] = output(cpu, [channels]);
      addon.batchNormTrain(xs, gs, bs, ys, ms, vs, xs.length / channels, channels, epsilon, relu);
      return [y, mean, variance];
    },
  };
}

function movingAverages(): KernelConfig {
  return {
    kernelName: MOVING_AVERAGES,
    backendName: ONEDNN_BACKEND,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const cpu = backend as Backend;
      const { movingMean, movingVariance, mean, variance } = inputs as Inputs;
      const arrays = [movingMean, movingVariance, mean, variance].map((t) => f32(cpu, t));
      const channels = arrays[0]?.length;
      if (arrays.some((a) => a === undefined || a.length !== channels)) {
        throw new Error(`${MOVING_AVERAGES}: needs four float32 vectors of one length`);
      }
      const [cm, cv, m, v] = arrays as Float32Array[];
      const rate = Math.fround(1 - (attrs?.momentum as number));
      const [newMean, nm] = output(cpu, [cm.length]);
      const [newVariance, nv] = output(cpu, [cv.length]);
      for (let i = 0; i < cm.length; i++) {
        nm[i] = cm[i] - Math.fround(Math.fround(cm[i] - m[i]) * rate);
        nv[i] = cv[i] - Math.fround(Math.fround(cv[i] - v[i]) * rate);
      }
      return [newMean, newVariance];
    },
  };
}

function batchNormTrainingGrad(addon: OnednnAddon): KernelConfig {
  return {
    kernelName: BATCH_NORM_TRAINING_GRAD,
    backendName: ONEDNN_BACKEND,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const cpu = backend as Backend;
      const { dy, x, mean, variance, gamma, y } = inputs as Inputs;
      const arrays = [dy, x, mean, variance, gamma].map((t) => f32(cpu, t));
      const [dys, xs, ms, vs, gs] = arrays;
      const mask = y === undefined ? null : f32(cpu, y);
      if (!dys || !xs || !ms || !vs || !gs || mask === undefined) {
        throw new Error(`${BATCH_NORM_TRAINING_GRAD}: needs float32 inputs`);
      }
      const channels = gs.length;
      const [dx, dxs] = output(cpu, x.shape);
      const [dgamma, dgs] = output(cpu, [channels]);
      const [dbeta, dbs] = output(cpu, [channels]);
      addon.batchNormTrainGrad(dys, xs, ms, vs, gs, dxs, dgs, dbs, xs.length / channels, channels,
        attrs?.epsilon as number, mask);
      return [dx, dgamma, dbeta];
    },
  };
}

// --- Element-wise ---------------------------------------------------------------

function relu(addon: OnednnAddon): KernelConfig {
  return withFallback('Relu', (inputs, backend) => {
    const xs = f32(backend, inputs.x);
    if (!xs) return undefined;
    const [out, ys] = output(backend, inputs.x.shape);
    addon.relu(xs, ys);
    return out;
  });
}

function reluGrad(addon: OnednnAddon): KernelConfig {
  return {
    kernelName: RELU_GRAD,
    backendName: ONEDNN_BACKEND,
    kernelFunc: (args) => {
      const cpu = args.backend as Backend;
      const { dy, x } = args.inputs as Inputs;
      const dys = f32(cpu, dy);
      const xs = f32(cpu, x);
      if (!dys || !xs) throw new Error(`${RELU_GRAD}: needs float32 dy and x`);
      const [out, dxs] = output(cpu, x.shape);
      addon.reluGrad(dys, xs, dxs);
      return out;
    },
  };
}

const BINARY_OPS = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3 } as const;

/**
 * How one operand of a broadcasting op is read: 0 whole, 1 a scalar, 2 a
 * vector along the last axis; undefined for any other broadcast.
 */
function operandMode(shape: number[], outShape: number[]): number | undefined {
  const n = size(shape);
  if (n === size(outShape) && shape.length <= outShape.length) {
    const offset = outShape.length - shape.length;
    if (shape.every((d, i) => d === outShape[i + offset])) return 0;
  }
  if (n === 1) return 1;
  const last = outShape[outShape.length - 1];
  if (shape.length >= 1 && shape[shape.length - 1] === last && n === last) return 2;
  return undefined;
}

function binary(addon: OnednnAddon, name: keyof typeof BINARY_OPS): KernelConfig {
  return withFallback(name, (inputs, backend) => {
    const { a, b } = inputs;
    const as = f32(backend, a);
    const bs = f32(backend, b);
    if (!as || !bs) return undefined;
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const modeA = operandMode(a.shape, outShape);
    const modeB = operandMode(b.shape, outShape);
    if (modeA === undefined || modeB === undefined || (modeA !== 0 && modeB !== 0)) {
      return undefined;
    }
    const inner = outShape.length > 0 ? outShape[outShape.length - 1] : 1;
    const total = size(outShape);
    if (inner === 0 || total === 0) return undefined;
    const [out, values] = output(backend, outShape);
    addon.binary(BINARY_OPS[name], as, bs, values, total / inner, inner, modeA, modeB);
    return out;
  });
}

function sum(addon: OnednnAddon): KernelConfig {
  return withFallback('Sum', (inputs, backend, attrs) => {
    const { x } = inputs;
    const xs = f32(backend, x);
    if (!xs || x.shape.length === 0) return undefined;
    const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
    axes.sort((p, q) => p - q);
    // Only a run of adjacent axes maps onto [outer, reduced, inner].
    if (axes.length === 0 || axes.some((v, i) => i > 0 && v !== axes[i - 1] + 1)) return undefined;
    const first = axes[0];
    const last = axes[axes.length - 1];
    const outer = size(x.shape.slice(0, first));
    const reduced = size(x.shape.slice(first, last + 1));
    const inner = size(x.shape.slice(last + 1));
    if (outer * reduced * inner === 0) return undefined;
    const outShape = attrs.keepDims
      ? x.shape.map((d, i) => (i >= first && i <= last ? 1 : d))
      : x.shape.filter((_, i) => i < first || i > last);
    const [out, values] = output(backend, outShape);
    addon.sum(xs, values, outer, reduced, inner);
    return out;
  });
}

function padV2(addon: OnednnAddon): KernelConfig {
  return withFallback('PadV2', (inputs, backend, attrs) => {
    const { x } = inputs;
    const xs = f32(backend, x);
    const paddings = attrs.paddings as Array<[number, number]>;
    if (!xs || x.shape.length === 0 || size(x.shape) === 0) return undefined;
    const outShape = x.shape.map((d, i) => paddings[i][0] + d + paddings[i][1]);
    const [out, values] = output(backend, outShape);
    addon.pad(xs, values, x.shape, paddings.map((p) => p[0]), paddings.map((p) => p[1]),
      (attrs.constantValue as number | undefined) ?? 0);
    return out;
  });
}

/** Every kernel of the backend that runs natively, for `addon`. */
export function nativeKernelConfigs(addon: OnednnAddon): KernelConfig[] {
  return [
    conv2d(addon, 'Conv2D'),
    conv2d(addon, 'FusedConv2D'),
    conv2dBias(addon),
    conv2dBackpropInput(addon),
    conv2dBackpropFilter(addon),
    pool(addon, 'MaxPool'),
    pool(addon, 'AvgPool'),
    poolGrad(addon, 'MaxPoolGrad'),
    poolGrad(addon, 'AvgPoolGrad'),
    matMul(addon, 'BatchMatMul'),
    matMul(addon, '_FusedMatMul'),
    fusedBatchNorm(addon),
    batchNormTraining(addon, false),
    batchNormTraining(addon, true),
    batchNormTrainingGrad(addon),
    conv2dBatchNorm(addon),
    movingAverages(),
    relu(addon),
    reluGrad(addon),
    binary(addon, 'Add'),
    binary(addon, 'Sub'),
    binary(addon, 'Multiply'),
    binary(addon, 'RealDiv'),
    sum(addon),
    padV2(addon),
  ];
}
