/**
 * Gradient kernels that make the WebAssembly backend able to train.
 *
 * `@tensorflow/tfjs-backend-wasm` 4.22 ships fast forward kernels (Conv2D and
 * non-transposed, unbatched BatchMatMul both run on XNNPACK) but its training
 * side is thin: it has no `Conv2DBackpropFilter` at all, its
 * `Conv2DBackpropInput` is a scalar loop, and any BatchMatMul with a
 * transposed operand (every Dense layer's gradient) falls back to a blocked
 * scalar loop about 13 times slower than XNNPACK. The kernels here rebuild
 * those three from the fast ones:
 *
 * - `Conv2DBackpropFilter`: the transposed im2col matrix (gathered by block
 *   copies, then transposed) times `dy`, one XNNPACK matrix product.
 * - `Conv2DBackpropInput`: a forward XNNPACK convolution of `dy` (zero-stuffed
 *   when strided) with the flipped, in/out-swapped filter.
 * - `BatchMatMul` / `_FusedMatMul` with `transposeA` or `transposeB`: the
 *   operand is transposed once by the Transpose kernel, then the fast product
 *   runs; batched products run one XNNPACK product per batch entry.
 * - `Tile`: block copies instead of the stock per-element loop (the BatchNorm
 *   gradient tiles a channel vector to activation size in every layer).
 * - `Identity` without a copy, and `Sum` / `Mean` over leading axes without
 *   the stock kernels' full transpose (BatchNorm's batch statistics).
 *
 * It also starts the backend on tfjs-backend-wasm's threaded build, which
 * tfjs never picks in Node, so XNNPACK runs on every core (`useWasmThreads`).
 *
 * Every kernel works on `TensorInfo`s below the engine, so each intermediate
 * is released with `backend.disposeData` before returning (see `Scratch`).
 * Only NHWC data and dilation 1 are supported, as in the stock kernels.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import * as path from 'node:path';

import * as tf from '@tensorflow/tfjs';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';
import type {
  KernelBackend,
  KernelConfig,
  KernelFunc,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
} from '@tensorflow/tfjs';

import { ArgumentError } from '../errors.js';

const BACKEND = 'wasm';

/** Marks the kernel functions registered here, so registration is idempotent. */
const OURS = Symbol.for('resnet-ts.wasmTrainingKernel');

/**
 * Matrix products smaller than this many multiply-adds per batch entry stay on
 * the stock batched loop; above it, one XNNPACK product per entry is faster
 * despite the per-entry slice and operator creation.
 */
const PER_ENTRY_XNN_MIN_MACS = 64 * 64 * 64;

/** The stock kernels, captured before any of them is replaced. */
const stock = new Map<string, KernelFunc>();

function stockKernel(name: string): KernelFunc {
  let func = stock.get(name);
  if (func === undefined) {
    const config = tf.getKernel(name, BACKEND);
    if (config === undefined) {
      throw new Error(
        `The wasm backend has no '${name}' kernel, which the training kernels need; ` +
          'import @tensorflow/tfjs-backend-wasm before registering them.',
      );
    }
    func = config.kernelFunc;
    stock.set(name, func);
  }
  return func;
}

/** The parts of tfjs-backend-wasm's `BackendWasm` that the kernels here use. */
interface WasmBackend extends KernelBackend {
  /** Allocates an uninitialised tensor on the wasm heap. */
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  /** A view of a tensor's heap memory; invalid once the heap grows. */
  typedArrayFromHeap(t: TensorInfo): Float32Array;
  /** Adds a reference to a tensor's memory (released by `disposeData`). */
  incRef(dataId: object): void;
}

/**
 * Runs stock kernels and remembers every tensor they make, so that one
 * `dispose()` releases all intermediates; the result is handed out by `finish`.
 */
class Scratch {
  private readonly made: TensorInfo[] = [];

  constructor(readonly backend: WasmBackend) {}

  /** A new, uninitialised float32 tensor, released with the other intermediates. */
  make(shape: number[]): TensorInfo {
    const out = this.backend.makeOutput(shape, 'float32');
    this.made.push(out);
    return out;
  }

  /**
   * Heap views of tensors, taken together after all allocations, since an
   * allocation that grows the heap detaches the views taken before it.
   */
  views(...ts: TensorInfo[]): Float32Array[] {
    return ts.map((t) => this.backend.typedArrayFromHeap(t));
  }

  run(name: string, inputs: NamedTensorInfoMap, attrs: NamedAttrMap = {}): TensorInfo {
    const out = stockKernel(name)({ inputs, backend: this.backend, attrs });
    if (Array.isArray(out)) throw new Error(`Kernel '${name}' returned several tensors`);
    this.made.push(out);
    return out;
  }

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    return this.run('Reshape', { x }, { shape });
  }

  transpose(x: TensorInfo, perm: number[]): TensorInfo {
    return this.run('Transpose', { x }, { perm });
  }

  slice(x: TensorInfo, begin: number[], size: number[]): TensorInfo {
    return this.run('Slice', { x }, { begin, size });
  }

  /** `a` [m, k] times `b` [k, n], on XNNPACK's fully connected operator. */
  matMul2d(a: TensorInfo, b: TensorInfo): TensorInfo {
    const [m, k] = a.shape;
    const n = b.shape[1];
    const a3 = this.reshape(a, [1, m, k]);
    const b3 = this.reshape(b, [1, k, n]);
    const out = this.run('BatchMatMul', { a: a3, b: b3 }, { transposeA: false, transposeB: false });
    return this.reshape(out, [m, n]);
  }

  /** Releases everything made here except `out`, which the caller now owns. */
  finish(out: TensorInfo): TensorInfo {
    const i = this.made.lastIndexOf(out);
    if (i < 0) throw new Error('A training kernel tried to return a tensor it did not make');
    this.made.splice(i, 1);
    return out;
  }

  dispose(): void {
    for (const t of this.made) this.backend.disposeData(t.dataId);
    this.made.length = 0;
  }
}

/** Runs `body` with a fresh `Scratch` and releases its intermediates. */
function withScratch(backend: unknown, body: (s: Scratch) => TensorInfo): TensorInfo {
  const s = new Scratch(backend as WasmBackend);
  try {
    return s.finish(body(s));
  } finally {
    s.dispose();
  }
}

interface ConvGeometry {
  convInfo: tf.backend_util.Conv2DInfo;
}

/** Shared checks and geometry of the two convolution gradients. */
function convGeometry(
  kernel: string,
  xShape: number[],
  filterShape: number[],
  attrs: NamedAttrMap,
): ConvGeometry {
  const { strides, pad, dataFormat, dimRoundingMode } =
    attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  if (dataFormat !== undefined && dataFormat !== 'NHWC') {
    throw new ArgumentError(
      `${kernel}: dataFormat`,
      "'NHWC' (the wasm training kernels work on channels-last data only)",
      dataFormat,
    );
  }
  const convInfo = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
  return { convInfo };
}

/**
 * The im2col gather: for every filter tap (i, j), the input pixels that tap
 * meets, as [taps, n, oh, ow, ci], zeros where the tap falls on padding.
 * NHWC keeps each pixel's channels (and, at stride 1, a whole output row)
 * contiguous, so this is mostly block copies.
 */
function gatherTaps(s: Scratch, x: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: c } = info;
  const { outHeight: oh, outWidth: ow, strideHeight: sh, strideWidth: sw } = info;
  const { filterHeight: kh, filterWidth: kw } = info;
  const { top, left } = info.padInfo;
  const out = s.make([kh * kw, n, oh, ow, c]);
  const [xs, os] = s.views(x, out);
  const rowLen = ow * c;
  let o = 0;
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      // Output columns whose input column lies inside the image.
      const owFirst = Math.min(ow, Math.max(0, Math.ceil((left - j) / sw)));
      const owEnd = Math.max(owFirst, Math.min(ow, Math.floor((w - 1 + left - j) / sw) + 1));
      for (let b = 0; b < n; b++) {
        for (let r = 0; r < oh; r++, o += rowLen) {
          const hIn = r * sh + i - top;
          if (hIn < 0 || hIn >= h) {
            os.fill(0, o, o + rowLen);
            continue;
          }
          os.fill(0, o, o + owFirst * c);
          os.fill(0, o + owEnd * c, o + rowLen);
          const rowIn = ((b * h + hIn) * w + (j - left)) * c;
          if (sw === 1) {
            os.set(xs.subarray(rowIn + owFirst * c, rowIn + owEnd * c), o + owFirst * c);
          } else if (c >= 16) {
            for (let q = owFirst; q < owEnd; q++) {
              const from = rowIn + q * sw * c;
              os.set(xs.subarray(from, from + c), o + q * c);
            }
          } else {
            for (let q = owFirst; q < owEnd; q++) {
              const from = rowIn + q * sw * c;
              for (let k = 0; k < c; k++) os[o + q * c + k] = xs[from + k];
            }
          }
        }
      }
    }
  }
  return out;
}

/**
 * dW[i, j, ci, co] = sum over n, oh, ow of
 * xPadded[n, oh * sh + i, ow * sw + j, ci] * dy[n, oh, ow, co].
 *
 * The left factor is the transposed im2col matrix [kh * kw * ci, n * oh * ow]
 * (rows in filter order), so the product with dy [n * oh * ow, co] is one
 * non-transposed XNNPACK GEMM.
 */
const conv2DBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const filterShape = (attrs as unknown as tf.Conv2DBackpropFilterAttrs).filterShape;
  const { convInfo } = convGeometry('Conv2DBackpropFilter', x.shape, filterShape, attrs!);
  const { batchSize, inHeight, inWidth, inChannels, outChannels } = convInfo;
  const { outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth } = convInfo;
  const { top, left } = convInfo.padInfo;
  const pixels = batchSize * outHeight * outWidth;

  return withScratch(backend, (s) => {
    const dy2d = s.reshape(dy, [pixels, outChannels]);
    if (filterHeight === 1 && filterWidth === 1 && strideHeight === 1 && strideWidth === 1 &&
        top === 0 && left === 0 && outHeight === inHeight && outWidth === inWidth) {
      // Pointwise convolution: the im2col matrix is x itself, as [pixels, ci].
      const xT = s.transpose(s.reshape(x, [pixels, inChannels]), [1, 0]);
      return s.reshape(s.matMul2d(xT, dy2d), filterShape);
    }

    // [taps, pixels, ci] gathered in JS (row copies), then channels before
    // pixels by the Transpose kernel: the transposed im2col matrix.
    const taps = filterHeight * filterWidth;
    const cols = gatherTaps(s, x, convInfo);
    const colsT = s.reshape(
      s.transpose(s.reshape(cols, [taps, pixels, inChannels]), [0, 2, 1]),
      [taps * inChannels, pixels],
    );
    return s.reshape(s.matMul2d(colsT, dy2d), filterShape);
  });
};

/**
 * Spreads x [n, h, w, c] over a zeroed [n, outH, outW, c]:
 * out[b, r, q] = x[b, (r - offH) / sh, (q - offW) / sw] where both divisions
 * are exact and land inside x, else 0. This one pass does the zero stuffing
 * of a strided gradient and the padding (offset > 0) or cropping (offset < 0)
 * around it, copying whole rows at stride 1 and whole pixels otherwise.
 */
function spread(
  s: Scratch,
  x: TensorInfo,
  sh: number,
  sw: number,
  outH: number,
  outW: number,
  offH: number,
  offW: number,
): TensorInfo {
  const [n, h, w, c] = x.shape;
  const out = s.make([n, outH, outW, c]);
  const [xs, os] = s.views(x, out);
  os.fill(0);
  // Columns of x that land inside out: q = col * sw + offW in [0, outW).
  const colFirst = Math.max(0, Math.ceil(-offW / sw));
  const colEnd = Math.min(w, Math.floor((outW - 1 - offW) / sw) + 1);
  if (colEnd <= colFirst) return out;
  for (let b = 0; b < n; b++) {
    for (let row = 0; row < h; row++) {
      const r = row * sh + offH;
      if (r < 0 || r >= outH) continue;
      const from = ((b * h + row) * w + colFirst) * c;
      const to = ((b * outH + r) * outW + colFirst * sw + offW) * c;
      if (sw === 1) {
        os.set(xs.subarray(from, from + (colEnd - colFirst) * c), to);
      } else {
        for (let col = colFirst; col < colEnd; col++) {
          const k = (col - colFirst) * c;
          os.set(xs.subarray(from + k, from + k + c), to + k * sw);
        }
      }
    }
  }
  return out;
}

/**
 * The filter of the input gradient: w [kh, kw, ci, co] flipped in both spatial
 * axes and with its channel axes swapped, w'[i, j, co, ci] =
 * w[kh - 1 - i, kw - 1 - j, ci, co]. Flipping both axes reverses the flat tap
 * order, so after the Transpose kernel swaps the channels of every tap, the
 * flip is a reversed copy of whole [co, ci] blocks (the stock Reverse kernel
 * works element by element and is much slower).
 */
function flipAndSwap(s: Scratch, filter: TensorInfo): TensorInfo {
  const [kh, kw, ci, co] = filter.shape;
  const taps = kh * kw;
  const swapped = s.transpose(s.reshape(filter, [taps, ci, co]), [0, 2, 1]);
  if (taps === 1) return s.reshape(swapped, [1, 1, co, ci]);
  const out = s.make([kh, kw, co, ci]);
  const [from, to] = s.views(swapped, out);
  const block = ci * co;
  for (let t = 0; t < taps; t++) {
    const src = (taps - 1 - t) * block;
    to.set(from.subarray(src, src + block), t * block);
  }
  return out;
}

/**
 * dx = the stride-1 convolution of dy, zero-stuffed by the stride and padded
 * by (filter size - 1 - forward pad), with the filter flipped in space and its
 * in/out channel axes swapped; XNNPACK runs it.
 *
 * A 1x1 filter needs no padding and commutes with the zero stuffing, so for
 * strided pointwise convolutions (ResNet's projection shortcuts) the product
 * runs on the small dy and only its result is stuffed.
 */
const conv2DBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const inputShape = (attrs as unknown as tf.Conv2DBackpropInputAttrs).inputShape;
  const { convInfo } = convGeometry('Conv2DBackpropInput', inputShape, filter.shape, attrs!);
  const { inHeight, inWidth, strideHeight, strideWidth, filterHeight, filterWidth } = convInfo;
  const { top, left } = convInfo.padInfo;

  return withScratch(backend, (s) => {
    const swapped = flipAndSwap(s, filter);
    const conv = (x: TensorInfo) =>
      s.run('Conv2D', { x, filter: swapped }, {
        strides: [1, 1],
        pad: 'valid',
        dataFormat: 'NHWC',
        dilations: [1, 1],
      });

    const pointwise = filterHeight === 1 && filterWidth === 1;
    if (pointwise && strideHeight === 1 && strideWidth === 1 && top === 0 && left === 0 &&
        dy.shape[1] === inHeight && dy.shape[2] === inWidth) {
      return conv(dy);
    }
    if (pointwise) {
      // Input row h met output row (h + top) / stride, if that is whole;
      // rows no output met get no gradient.
      return spread(s, conv(dy), strideHeight, strideWidth, inHeight, inWidth, -top, -left);
    }
    // Output row r of the forward pass started at input row r * stride - top,
    // so in the framed dy it sits kh - 1 - top rows down.
    const framed = spread(
      s,
      dy,
      strideHeight,
      strideWidth,
      inHeight + filterHeight - 1,
      inWidth + filterWidth - 1,
      filterHeight - 1 - top,
      filterWidth - 1 - left,
    );
    return conv(framed);
  });
};

/**
 * Tile by block copies. The stock kernel indexes element by element, and the
 * BatchNorm gradient tiles a per-channel vector to a whole activation
 * ([1, 1, 1, c] by [n, h, w, 1]) in every layer. Here one copy along each
 * axis is written (recursively) and then doubled in place with `copyWithin`.
 */
const tile: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: TensorInfo };
  const reps = (attrs as unknown as tf.TileAttrs).reps;
  if (x.dtype !== 'float32' || tf.util.sizeFromShape(x.shape) === 0) {
    return stockKernel('Tile')({ inputs, backend, attrs });
  }
  return withScratch(backend, (s) => {
    const shape = x.shape;
    const rank = shape.length;
    const out = s.make(shape.map((d, i) => d * reps[i]));
    const [xs, os] = s.views(x, out);
    // Sizes of one slice from each axis down, in x and in out, and whether no
    // axis from there on is tiled (so that slice is a plain copy).
    const inner = new Array<number>(rank + 1).fill(1);
    const outInner = new Array<number>(rank + 1).fill(1);
    const plain = new Array<boolean>(rank + 1).fill(true);
    for (let a = rank - 1; a >= 0; a--) {
      inner[a] = inner[a + 1] * shape[a];
      outInner[a] = outInner[a + 1] * shape[a] * reps[a];
      plain[a] = plain[a + 1] && reps[a] === 1;
    }
    const fill = (a: number, xOff: number, oOff: number): void => {
      if (plain[a]) {
        os.set(xs.subarray(xOff, xOff + inner[a]), oOff);
        return;
      }
      for (let i = 0; i < shape[a]; i++) {
        fill(a + 1, xOff + i * inner[a + 1], oOff + i * outInner[a + 1]);
      }
      const total = outInner[a];
      for (let done = shape[a] * outInner[a + 1]; done < total; ) {
        const m = Math.min(done, total - done);
        os.copyWithin(oOff + done, oOff, oOff + m);
        done += m;
      }
    };
    fill(0, 0, 0);
    return out;
  });
};

/**
 * Identity without a copy: tensors are immutable, so the output can share the
 * input's memory with one more reference, as the CPU backend does. The stock
 * kernel copies, and training calls it over a thousand times a step.
 */
const identity: KernelFunc = ({ inputs, backend }) => {
  const { x } = inputs as { x: TensorInfo };
  if (x.dtype === 'string') return stockKernel('Identity')({ inputs, backend });
  (backend as WasmBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
};

/**
 * Sum and Mean over the leading axes (BatchNorm's batch moments and its
 * gradient reduce NHWC over [0, 1, 2]) as one pass of row additions; the
 * stock kernels first transpose the whole tensor to put those axes last.
 * Other reductions go to the stock kernel.
 */
function leadingReduce(name: 'Sum' | 'Mean'): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { x } = inputs as { x: TensorInfo };
    const { axis, keepDims } = attrs as unknown as tf.SumAttrs;
    const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
    const leading = axes.length > 0 && axes.every((a, i) => a === i);
    if (x.dtype !== 'float32' || !leading || axes.length === x.shape.length) {
      return stockKernel(name)({ inputs, backend, attrs });
    }
    return withScratch(backend, (s) => {
      const rows = tf.util.sizeFromShape(x.shape.slice(0, axes.length));
      const rest = x.shape.slice(axes.length);
      const width = tf.util.sizeFromShape(rest);
      const out = s.make(keepDims ? [...axes.map(() => 1), ...rest] : rest);
      const [xs, os] = s.views(x, out);
      // Double accumulators: a float32 running sum over thousands of rows
      // would lose digits the reference backends keep.
      // Four rows a pass: a quarter of the accumulator traffic.
      const acc = new Float64Array(width);
      let r = 0;
      let o = 0;
      for (; r + 4 <= rows; r += 4, o += 4 * width) {
        const o1 = o + width;
        const o2 = o1 + width;
        const o3 = o2 + width;
        for (let k = 0; k < width; k++) {
          acc[k] += xs[o + k] + xs[o1 + k] + (xs[o2 + k] + xs[o3 + k]);
        }
      }
      for (; r < rows; r++, o += width) {
        for (let k = 0; k < width; k++) acc[k] += xs[o + k];
      }
      const scale = name === 'Mean' ? 1 / rows : 1;
      for (let k = 0; k < width; k++) os[k] = acc[k] * scale;
      return out;
    });
  };
}

/** The permutation that swaps the last two axes of a rank-`rank` tensor. */
function swapLastTwo(rank: number): number[] {
  const perm = [...Array(rank).keys()];
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

/**
 * Wraps a stock matrix-product kernel so that it only ever sees
 * non-transposed operands, and runs batched products one XNNPACK product per
 * batch entry when they are large enough to pay for it.
 */
function fastMatMul(name: 'BatchMatMul' | '_FusedMatMul'): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: TensorInfo; b: TensorInfo };
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2));
    const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
    const m = a.shape[a.shape.length - (transposeA ? 1 : 2)];
    const k = a.shape[a.shape.length - (transposeA ? 2 : 1)];
    const n = b.shape[b.shape.length - (transposeB ? 2 : 1)];
    const batched = batchA > 1 || batchB > 1;
    const sliceable = batchA === batchB || batchA === 1 || batchB === 1;
    const perEntry =
      batched && sliceable && name === 'BatchMatMul' && m * k * n >= PER_ENTRY_XNN_MIN_MACS;
    if (!transposeA && !transposeB && !perEntry) {
      return stockKernel(name)({ inputs, backend, attrs });
    }

    return withScratch(backend, (s) => {
      const a2 = transposeA ? s.transpose(a, swapLastTwo(a.shape.length)) : a;
      const b2 = transposeB ? s.transpose(b, swapLastTwo(b.shape.length)) : b;
      const plain = { ...attrs, transposeA: false, transposeB: false };
      if (!perEntry) return s.run(name, { ...inputs, a: a2, b: b2 }, plain);

      // Batched: XNNPACK multiplies one matrix pair at a time, so slice the
      // batch axis (broadcasting a single-entry side) and stack the results.
      const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(
        a.shape.slice(0, -2),
        b.shape.slice(0, -2),
      );
      const a3 = s.reshape(a2, [batchA, m, k]);
      const b3 = s.reshape(b2, [batchB, k, n]);
      const products: TensorInfo[] = [];
      const batch = Math.max(batchA, batchB);
      for (let i = 0; i < batch; i++) {
        const ai = s.slice(a3, [batchA === 1 ? 0 : i, 0, 0], [1, m, k]);
        const bi = s.slice(b3, [batchB === 1 ? 0 : i, 0, 0], [1, k, n]);
        products.push(s.run('BatchMatMul', { a: ai, b: bi }, plain));
      }
      // Concat takes its inputs as an array, as the engine passes them.
      const stacked = s.run('Concat', products as unknown as NamedTensorInfoMap, { axis: 0 });
      return s.reshape(stacked, [...outBatch, m, n]);
    });
  };
}

/** Marks a kernel function as one of ours. */
function mark(func: KernelFunc): KernelFunc {
  (func as unknown as Record<symbol, boolean>)[OURS] = true;
  return func;
}

function isOurs(config: KernelConfig | undefined): boolean {
  return config !== undefined && (config.kernelFunc as unknown as Record<symbol, boolean>)[OURS];
}

/**
 * The worker script of the threaded build, made a file. tfjs-backend-wasm
 * hands its pthread workers `blob:` URLs, which Node's `Worker` refuses, and
 * the worker then loads the main script from a Blob, which it cannot read;
 * the file below is the same worker code, told to load the main script from
 * its path instead.
 */
function writeThreadWorker(): string {
  // Resolved from the working directory: src/ cannot use import.meta (tslab).
  const requireHere = createRequire(path.join(process.cwd(), 'noop.js'));
  const wasmOut = '@tensorflow/tfjs-backend-wasm/wasm-out';
  const dir = path.dirname(requireHere.resolve(`${wasmOut}/tfjs-backend-wasm-threaded-simd.js`));
  const mainScript = path.join(dir, 'tfjs-backend-wasm-threaded-simd.js');
  const { wasmWorkerContents } = requireHere(
    path.join(dir, 'tfjs-backend-wasm-threaded-simd.worker.js'),
  ) as { wasmWorkerContents: string };
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'resnet-wasm-')), 'worker.cjs');
  // The stored code keeps "\n" escapes inside its string literals as real
  // newlines; put the escapes back, as tfjs does before making its Blob.
  const code =
    wasmWorkerContents.replace(/\n/g, '\\n') +
    `\n;{const load = global.onmessage; global.onmessage = (e) => {` +
    `if (e.data && e.data.cmd === 'load' && typeof e.data.urlOrBlob !== 'string') ` +
    `e.data.urlOrBlob = ${JSON.stringify(mainScript)}; return load(e); };}\n`;
  fs.writeFileSync(file, code);
  return file;
}

/** The emscripten pthread pool of the threaded build, where there is one. */
interface PThreadPool {
  unusedWorkers: Array<{ unref(): void }>;
  runningWorkers: Array<{ unref(): void }>;
}

/**
 * Lets the process exit while the thread pool's workers idle: emscripten
 * keeps them referenced, so a finished script would otherwise never end.
 * The pool and XNNPACK's threads are all started with the backend.
 */
function unrefThreadWorkers(backend: unknown): void {
  const pool = (backend as { wasm?: { PThread?: PThreadPool } }).wasm?.PThread;
  if (pool === undefined) return;
  for (const worker of [...pool.unusedWorkers, ...pool.runningWorkers]) worker.unref();
}

/**
 * Makes the next start of the wasm backend use tfjs-backend-wasm's threaded
 * SIMD build with `threads` XNNPACK threads, which tfjs never picks in Node:
 * its thread check answers no for Node, its workers would be started from
 * `blob:` URLs Node refuses, and it caps threads at half the logical cores
 * (1 on a 2-core machine). The backend factory is wrapped so that, during the
 * start only, `URL.createObjectURL` hands out a worker file and `os.cpus()`
 * reports enough cores; if the threaded start fails, the plain SIMD build
 * starts instead. Does nothing once the backend has started.
 */
function useWasmThreads(threads: number): void {
  const entry = tf.engine().registryFactory[BACKEND];
  if (entry === undefined || tf.engine().registry[BACKEND] !== undefined || threads < 2) return;
  if ((entry.factory as unknown as Record<symbol, boolean>)[OURS]) return;
  const start = entry.factory;
  const threaded = async () => {
    const createObjectURL = URL.createObjectURL;
    const cpus = os.cpus;
    let worker: string | undefined;
    try {
      worker = writeThreadWorker();
      const workerFile = worker;
      tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
      tfWasm.setThreadsCount(threads);
      URL.createObjectURL = (blob: Blob) =>
        blob.type === 'application/javascript' ? workerFile : createObjectURL(blob);
      os.cpus = () => {
        const list = cpus();
        while (list.length < 2 * threads) list.push(list[0]);
        return list;
      };
      const backend = await start();
      unrefThreadWorkers(backend);
      return backend;
    } catch {
      tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      return await start();
    } finally {
      URL.createObjectURL = createObjectURL;
      os.cpus = cpus;
      // Every pool worker has read the file by the time the start settles.
      if (worker !== undefined) fs.rmSync(path.dirname(worker), { recursive: true, force: true });
    }
  };
  (threaded as unknown as Record<symbol, boolean>)[OURS] = true;
  tf.removeBackend(BACKEND);
  tf.registerBackend(BACKEND, threaded, entry.priority);
}

/** Options of `registerWasmTrainingKernels`. */
export interface WasmTrainingOptions {
  /**
   * XNNPACK threads for the wasm backend (1 keeps tfjs's single-threaded
   * build). Only takes effect if the backend has not started yet. Defaults to
   * the `RESNET_WASM_THREADS` environment variable, else the number of
   * logical cores.
   */
  threads?: number;
}

/**
 * Registers the training kernels on the `wasm` backend, replacing the stock
 * `Conv2DBackpropInput`, `BatchMatMul`, `_FusedMatMul`, `Tile`, `Identity`,
 * `Sum` and `Mean`, and (before the backend starts) asks for XNNPACK threads.
 * Call it after importing `@tensorflow/tfjs-backend-wasm`, before or after
 * `tf.setBackend('wasm')`; calling it again does nothing.
 *
 * @throws Error when `@tensorflow/tfjs-backend-wasm` has not been imported.
 */
export function registerWasmTrainingKernels(options: WasmTrainingOptions = {}): void {
  const fromEnv = Number(process.env.RESNET_WASM_THREADS);
  const threads = options.threads ?? (fromEnv >= 1 ? Math.floor(fromEnv) : os.cpus().length);
  useWasmThreads(threads);

  // Kernels the replacements call: capture them (and the ones about to be
  // replaced) while the stock versions are still registered.
  for (const name of [
    'BatchMatMul', '_FusedMatMul', 'Concat', 'Conv2D', 'Identity', 'Mean', 'Reshape',
    'Slice', 'Sum', 'Tile', 'Transpose',
  ]) {
    if (!isOurs(tf.getKernel(name, BACKEND))) stockKernel(name);
  }

  const replacements: Array<[string, KernelFunc]> = [
    ['Conv2DBackpropFilter', conv2DBackpropFilter],
    ['Conv2DBackpropInput', conv2DBackpropInput],
    ['BatchMatMul', fastMatMul('BatchMatMul')],
    ['_FusedMatMul', fastMatMul('_FusedMatMul')],
    ['Tile', tile],
    ['Identity', identity],
    ['Sum', leadingReduce('Sum')],
    ['Mean', leadingReduce('Mean')],
  ];
  for (const [kernelName, kernelFunc] of replacements) {
    const existing = tf.getKernel(kernelName, BACKEND);
    if (isOurs(existing)) continue;
    if (existing !== undefined) tf.unregisterKernel(kernelName, BACKEND);
    // Keep the stock setup: it binds the wasm function that the stock kernel
    // (still called for the plain cases) needs, when the backend starts.
    tf.registerKernel({
      kernelName,
      backendName: BACKEND,
      kernelFunc: mark(kernelFunc),
      setupFunc: existing?.setupFunc,
      disposeFunc: existing?.disposeFunc,
    });
  }
}
