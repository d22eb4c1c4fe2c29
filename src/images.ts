/**
 * Images for the notebooks: decoding one's own JPEG or PNG, cropping and
 * resizing it to the 64×64 the model takes, turning it into a tensor, and
 * encoding SIGNS images as PNG data URIs so that reports hold them inline.
 *
 * Images here are plain RGB bytes, row by row (no alpha: a transparent
 * pixel is composited onto white).
 */
import * as tf from '@tensorflow/tfjs';
import * as jpeg from 'jpeg-js';
import { readFileSync } from 'node:fs';
import { PNG } from 'pngjs';

import { ArgumentError, DataError } from './errors.js';
import type { SignsImages } from './data/signs.js';

/** An RGB image: `width × height × 3` bytes, row-major. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** How `resizeImage` makes a square from a non-square image. */
export type FitMode = 'crop' | 'stretch';

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function isPng(bytes: Uint8Array): boolean {
  return PNG_SIGNATURE.every((b, i) => bytes[i] === b);
}

function isJpeg(bytes: Uint8Array): boolean {
  return bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/** RGBA bytes to RGB, compositing each pixel onto a white background. */
function rgbaToRgb(width: number, height: number, rgba: Uint8Array): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    const alpha = rgba[p * 4 + 3] / 255;
    for (let c = 0; c < 3; c++) {
      data[p * 3 + c] = Math.round(rgba[p * 4 + c] * alpha + 255 * (1 - alpha));
    }
  }
  return { width, height, data };
}

/**
 * Decodes a JPEG or PNG file's bytes (told apart by their signature).
 *
 * @throws DataError when the bytes are neither, or cannot be decoded.
 */
export function decodeImage(bytes: Uint8Array, source = 'the image'): RgbImage {
  try {
    if (isPng(bytes)) {
      const png = PNG.sync.read(Buffer.from(bytes));
      return rgbaToRgb(png.width, png.height, new Uint8Array(png.data));
    }
    if (isJpeg(bytes)) {
      const raw = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
      return rgbaToRgb(raw.width, raw.height, raw.data);
    }
  } catch (error) {
    throw new DataError(`Cannot decode ${source}: ${(error as Error).message}.`);
  }
  throw new DataError(
    `${source} is neither a JPEG nor a PNG (its first bytes are ` +
      `${Array.from(bytes.slice(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ')}). ` +
      'Save the photo as .jpg or .png and try again.',
  );
}

/**
 * Reads and decodes a JPEG or PNG file.
 *
 * @throws DataError when the file cannot be read or decoded.
 */
export function loadImageFile(file: string): RgbImage {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    throw new DataError(`Cannot read the image ${file}: ${(error as Error).message}.`, file);
  }
  return decodeImage(bytes, file);
}

/** The centred square of an image (the whole image if it is square). */
export function cropToSquare(image: RgbImage): RgbImage {
  const side = Math.min(image.width, image.height);
  const left = Math.floor((image.width - side) / 2);
  const top = Math.floor((image.height - side) / 2);
  const data = new Uint8Array(side * side * 3);
  for (let y = 0; y < side; y++) {
    const from = ((top + y) * image.width + left) * 3;
    data.set(image.data.subarray(from, from + side * 3), y * side * 3);
  }
  return { width: side, height: side, data };
}

/**
 * For each output index along one axis, the input indices it covers and
 * their weights: the overlap of the output pixel's footprint with each input
 * pixel (area averaging, so a downscale does not alias).
 */
function axisWeights(from: number, to: number): Array<Array<[number, number]>> {
  const ratio = from / to;
  return Array.from({ length: to }, (_, o) => {
    if (ratio <= 1) {
      // Upscaling: the nearest input pixel.
      return [[Math.min(from - 1, Math.floor((o + 0.5) * ratio)), 1]];
    }
    const start = o * ratio;
    const end = start + ratio;
    const taps: Array<[number, number]> = [];
    for (let i = Math.floor(start); i < Math.min(from, Math.ceil(end)); i++) {
      const overlap = Math.min(end, i + 1) - Math.max(start, i);
      if (overlap > 0) taps.push([i, overlap / ratio]);
    }
    return taps;
  });
}

/**
 * Resizes an image to `size × size`, by default first cropping it to its
 * centred square so that the hand keeps its proportions.
 *
 * @param size Side of the result. Defaults to 64, the SIGNS image size.
 * @param fit `crop` (default) or `stretch`.
 */
export function resizeImage(image: RgbImage, size = 64, fit: FitMode = 'crop'): RgbImage {
  if (!(Number.isInteger(size) && size >= 1)) {
    throw new ArgumentError('size', 'a positive integer', size);
  }
  if (fit !== 'crop' && fit !== 'stretch') {
    throw new ArgumentError('fit', "'crop' or 'stretch'", fit);
  }
  const source = fit === 'crop' ? cropToSquare(image) : image;
  const rows = axisWeights(source.height, size);
  const cols = axisWeights(source.width, size);
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (const [iy, wy] of rows[y]) {
          for (const [ix, wx] of cols[x]) {
            sum += source.data[(iy * source.width + ix) * 3 + c] * wy * wx;
          }
        }
        data[(y * size + x) * 3 + c] = Math.round(sum);
      }
    }
  }
  return { width: size, height: size, data };
}

/**
 * The image as the model takes it: float32 values x/255, shape
 * `[1, height, width, 3]` (a batch of one). The caller owns the tensor.
 */
export function imageToTensor(image: RgbImage): tf.Tensor4D {
  const values = new Float32Array(image.data.length);
  for (let i = 0; i < values.length; i++) values[i] = image.data[i] / 255;
  return tf.tensor4d(values, [1, image.height, image.width, 3], 'float32');
}

/**
 * One image of a SIGNS split, as an `RgbImage` (a view on the split's bytes).
 *
 * @throws ArgumentError when `index` is out of range.
 */
export function signsImage(images: SignsImages, index: number): RgbImage {
  const [n, height, width, channels] = images.shape;
  if (!(Number.isInteger(index) && index >= 0 && index < n)) {
    throw new ArgumentError('index', `an integer from 0 to ${n - 1}`, index);
  }
  const size = height * width * channels;
  return { width, height, data: images.data.subarray(index * size, (index + 1) * size) };
}

/** Encodes an image as PNG bytes. */
export function encodePng(image: RgbImage): Uint8Array {
  const png = new PNG({ width: image.width, height: image.height });
  for (let p = 0; p < image.width * image.height; p++) {
    png.data[p * 4] = image.data[p * 3];
    png.data[p * 4 + 1] = image.data[p * 3 + 1];
    png.data[p * 4 + 2] = image.data[p * 3 + 2];
    png.data[p * 4 + 3] = 255;
  }
  return new Uint8Array(PNG.sync.write(png));
}

/** The image as a `data:image/png;base64,…` URI, to inline it in HTML. */
export function pngDataUri(image: RgbImage): string {
  return `data:image/png;base64,${Buffer.from(encodePng(image)).toString('base64')}`;
}
