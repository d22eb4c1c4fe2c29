/// <reference path="../types/jsfive.d.ts" />
/**
 * The SIGNS dataset: 64×64 RGB photos of hands showing the digits 0 to 5, in
 * the course's HDF5 files `train_signs.h5` (1080 images) and `test_signs.h5`
 * (120 images). Each file holds `<split>_set_x` (n, 64, 64, 3) uint8,
 * `<split>_set_y` (n,) integer labels and `list_classes` (6,).
 *
 * jsfive parses the HDF5 metadata; the pixel bytes of a contiguous dataset
 * (how h5py writes these files) are then sliced straight from the file's
 * buffer instead of going through `Dataset.value`, which builds a plain
 * JavaScript array one element at a time: both files read in about 20 ms this
 * way against 200 to 650 ms through `value` (2 cores, Node 20). Chunked or
 * compressed datasets fall back to `Dataset.value`.
 *
 * Every problem with the files surfaces as a `DataError` naming the file, what
 * was expected and what was found, and what to do about it.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import * as tf from '@tensorflow/tfjs';
import * as hdf5 from 'jsfive';

import { ArgumentError, DataError, describe } from '../errors.js';
import { defaultDatasetDir, findProjectRoot } from '../paths.js';

/** The two splits and their file names, as the course ships them. */
export const SIGNS_FILES = {
  train: 'train_signs.h5',
  test: 'test_signs.h5',
} as const;

/** `train` or `test`. */
export type SignsSplitName = keyof typeof SIGNS_FILES;

/** Height, width and channels of every SIGNS image. */
export const SIGNS_IMAGE_SHAPE: readonly [number, number, number] = [64, 64, 3];

/** Number of classes: the digits 0 to 5. */
export const SIGNS_NUM_CLASSES = 6;

/** Bytes (uint8 values) in one image. */
const IMAGE_SIZE = SIGNS_IMAGE_SHAPE[0] * SIGNS_IMAGE_SHAPE[1] * SIGNS_IMAGE_SHAPE[2];

/** What to do about a missing or damaged file, appended to most errors. */
const SETUP_HINT =
  "Fix: run `npm run setup`, or put the course's train_signs.h5 and test_signs.h5 " +
  'in Requirements/datasets/.';

/** The first 8 bytes of every HDF5 file (with no user block). */
const HDF5_SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];

/** Header message type of the data layout message (HDF5 spec, IV.A.2.i). */
const DATA_LAYOUT_MESSAGE = 0x0008;

/** Layout class of a dataset stored in one contiguous run of bytes. */
const CONTIGUOUS_LAYOUT = 1;

/** An address of all ones means "no storage allocated". */
const UNDEFINED_ADDRESS = 0xffff_ffff_ffff_ffffn;

/** Raw images as stored: pixel values 0..255, row-major NHWC. */
export interface SignsImages {
  data: Uint8Array;
  /** `[n, 64, 64, 3]`. */
  shape: [number, number, number, number];
}

/** One split as read from its file, before any tensor is made. */
export interface SignsSplit {
  images: SignsImages;
  /** Class of each image, 0..5. */
  labels: Int32Array;
  /** The file's `list_classes`: `[0, 1, 2, 3, 4, 5]`. */
  classes: number[];
}

/** Both splits, raw and as tensors ready for training. */
export interface SignsData {
  /** Training images as float32 x/255, `[n, 64, 64, 3]`. */
  xTrain: tf.Tensor4D;
  /** One-hot float32 training labels, `[n, 6]`. */
  yTrain: tf.Tensor2D;
  /** Test images as float32 x/255, `[n, 64, 64, 3]`. */
  xTest: tf.Tensor4D;
  /** One-hot float32 test labels, `[n, 6]`. */
  yTest: tf.Tensor2D;
  trainLabels: Int32Array;
  testLabels: Int32Array;
  trainImages: SignsImages;
  testImages: SignsImages;
  /** The class values from the files, `[0, 1, 2, 3, 4, 5]`. */
  classes: number[];
}

/** Options of `loadSigns`. */
export interface LoadSignsOptions {
  /**
   * Keep at most this many examples of each split, the first ones in file
   * order, for quick runs. Defaults to all.
   */
  limit?: number;
  /** Overrides `limit` for the training split. Defaults to `limit`. */
  trainLimit?: number;
  /** Overrides `limit` for the test split. Defaults to `limit`. */
  testLimit?: number;
}

/**
 * Loads both SIGNS splits: the raw images and labels, and the tensors the
 * course trains on (images scaled to [0, 1], labels one-hot).
 *
 * Synchronous: both files load in about 0.1 to 0.2 s, most of it spent
 * making the float32 images. The caller owns the four tensors (`tf.dispose`
 * them when done).
 *
 * @param dir The folder holding `train_signs.h5` and `test_signs.h5`.
 *   Defaults to `<project root>/Requirements/datasets`.
 * @param options See `LoadSignsOptions`.
 * @throws ArgumentError when a limit is not a positive integer.
 * @throws DataError when the folder, a file or a dataset inside it is missing
 *   or malformed; the message says which and what to do.
 */
export function loadSigns(
  dir: string = defaultDatasetDir(),
  options: LoadSignsOptions = {},
): SignsData {
  const trainLimit = checkLimit('trainLimit', options.trainLimit ?? options.limit);
  const testLimit = checkLimit('testLimit', options.testLimit ?? options.limit);
  checkDatasetDir(dir);

  const trainFile = path.join(dir, SIGNS_FILES.train);
  const testFile = path.join(dir, SIGNS_FILES.test);
  const train = readSignsFile(trainFile, 'train', trainLimit);
  const test = readSignsFile(testFile, 'test', testLimit);
  if (describe(train.classes) !== describe(test.classes)) {
    throw new DataError(
      `The two SIGNS files disagree on \`list_classes\`: ${describe(train.classes)} in ` +
        `${trainFile}, ${describe(test.classes)} in ${testFile}. ${SETUP_HINT}`,
      testFile,
    );
  }

  return {
    xTrain: imagesToTensor(train.images),
    yTrain: oneHot(train.labels),
    xTest: imagesToTensor(test.images),
    yTest: oneHot(test.labels),
    trainLabels: train.labels,
    testLabels: test.labels,
    trainImages: train.images,
    testImages: test.images,
    classes: train.classes,
  };
}

/**
 * Reads one SIGNS file without making tensors.
 *
 * @param file Path of `train_signs.h5` or `test_signs.h5`.
 * @param split Which split the file holds; names its datasets.
 * @param limit Keep at most this many examples. Defaults to all.
 * @throws DataError when the file or a dataset in it is missing or malformed.
 */
export function readSignsFile(
  file: string,
  split: SignsSplitName,
  limit: number = Infinity,
): SignsSplit {
  file = path.resolve(file);
  if (!existsSync(file)) {
    throw new DataError(`SIGNS file not found: ${file}. ${SETUP_HINT}`, file);
  }
  const buffer = readWholeFile(file);
  checkHdf5Header(buffer, file);
  const h5 = openHdf5(buffer, file);

  const xName = `${split}_set_x`;
  const yName = `${split}_set_y`;
  const x = getDataset(h5, xName, file, split);
  const y = getDataset(h5, yName, file, split);
  const classesSet = getDataset(h5, 'list_classes', file, split);

  const xShape = x.shape;
  const imageShapeOk =
    xShape.length === 4 && xShape.slice(1).every((d, i) => d === SIGNS_IMAGE_SHAPE[i]);
  if (!imageShapeOk) {
    throw new DataError(
      `\`${xName}\` in ${file} must have shape [n,64,64,3]; received ` +
        `${describe(xShape)}. ${SETUP_HINT}`,
      file,
    );
  }
  checkDtype(x, xName, file, 'uint8', (t) => t.kind === 'u' && t.size === 1);

  const n = xShape[0];
  if (y.shape.length !== 1) {
    throw new DataError(
      `\`${yName}\` in ${file} must have shape [n] (one label per image); received ` +
        `${describe(y.shape)}. ${SETUP_HINT}`,
      file,
    );
  }
  checkDtype(y, yName, file, 'an integer type', isInteger);
  if (y.shape[0] !== n) {
    throw new DataError(
      `${file} has ${n} images in \`${xName}\` but ${y.shape[0]} labels in ` +
        `\`${yName}\`; they must match one to one. ${SETUP_HINT}`,
      file,
    );
  }

  if (classesSet.shape.length !== 1 || classesSet.shape[0] !== SIGNS_NUM_CLASSES) {
    throw new DataError(
      `\`list_classes\` in ${file} must have shape [${SIGNS_NUM_CLASSES}]; received ` +
        `${describe(classesSet.shape)}. ${SETUP_HINT}`,
      file,
    );
  }
  checkDtype(classesSet, 'list_classes', file, 'an integer type', isInteger);

  const labels = readIntegers(y, yName, file);
  const bad = labels.findIndex((v) => !(v >= 0 && v < SIGNS_NUM_CLASSES));
  if (bad >= 0) {
    throw new DataError(
      `\`${yName}\` in ${file} holds label ${labels[bad]} at index ${bad}; labels must be ` +
        `integers 0..${SIGNS_NUM_CLASSES - 1}. ${SETUP_HINT}`,
      file,
    );
  }
  const classes = Array.from(readIntegers(classesSet, 'list_classes', file));

  const kept = Math.min(n, limit);
  const pixels = readUint8(x, xName, file);
  return {
    // slice copies, so a small limit does not keep the whole file in memory.
    images: { data: pixels.slice(0, kept * IMAGE_SIZE), shape: [kept, ...SIGNS_IMAGE_SHAPE] },
    labels: Int32Array.from(labels.subarray(0, kept)),
    classes,
  };
}

/**
 * Scales raw images to float32 values x/255 in [0, 1].
 *
 * @param images Raw images, as `readSignsFile` returns them.
 * @returns A new `[n, 64, 64, 3]` tensor the caller owns.
 */
export function imagesToTensor(images: SignsImages): tf.Tensor4D {
  // Division in double then rounding to float32, as numpy's x / 255. followed
  // by Keras's cast gives. The loop is memory-bound (~50 ms for the train set).
  const { data } = images;
  const values = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) values[i] = data[i] / 255;
  return tf.tensor4d(values, images.shape, 'float32');
}

/**
 * One-hot encodes labels 0..5 as float32, as the course's
 * `convert_to_one_hot` does.
 *
 * @returns A new `[n, 6]` tensor the caller owns.
 */
export function oneHot(labels: Int32Array): tf.Tensor2D {
  const values = new Float32Array(labels.length * SIGNS_NUM_CLASSES);
  labels.forEach((label, i) => {
    values[i * SIGNS_NUM_CLASSES + label] = 1;
  });
  return tf.tensor2d(values, [labels.length, SIGNS_NUM_CLASSES], 'float32');
}

/** SHA-256 of a file's contents, as lowercase hex (what `sha256sum` prints). */
export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** The outcome of checking one dataset file against its expected sum. */
export interface DatasetCheck {
  /** File name, e.g. `train_signs.h5`. */
  name: string;
  path: string;
  expected: string;
  /** The file's SHA-256, or null when the file is missing. */
  actual: string | null;
  ok: boolean;
}

/**
 * Reads a `sha256sum`-style list: one `<hex>  <file name>` per line.
 *
 * @throws DataError when the list is missing or a line is malformed.
 */
export function readChecksums(file: string): Record<string, string> {
  if (!existsSync(file)) {
    throw new DataError(`Checksum list not found: ${file}.`, file);
  }
  const sums: Record<string, string> = {};
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '' || line.startsWith('#')) return;
      const match = /^([0-9a-f]{64}) [ *](.+)$/.exec(line.trim());
      if (!match) {
        throw new DataError(
          `Line ${i + 1} of ${file} must read "<64 hex digits>  <file name>"; ` +
            `received ${describe(line)}.`,
          file,
        );
      }
      sums[match[2]] = match[1];
    });
  return sums;
}

/**
 * Checks the SIGNS files in `dir` against the project's reference sums
 * (`Requirements/datasets.sha256`, the same list `scripts/setup.sh` uses).
 *
 * The reference train file is a rebuild (see that list's comments), so a
 * course download of `train_signs.h5` fails this check while still loading
 * fine: `loadSigns` checks layout, shapes and labels on its own.
 *
 * @param dir The dataset folder. Defaults to `Requirements/datasets`.
 * @param sums File name to expected hex digest. Defaults to the project's list.
 * @returns One result per expected file; nothing is thrown for a mismatch.
 */
export function verifyDatasets(
  dir: string = defaultDatasetDir(),
  sums: Record<string, string> = readChecksums(
    path.join(findProjectRoot(), 'Requirements', 'datasets.sha256'),
  ),
): DatasetCheck[] {
  return Object.entries(sums).map(([name, expected]) => {
    const file = path.join(dir, name);
    const actual = existsSync(file) ? sha256File(file) : null;
    return { name, path: file, expected, actual, ok: actual === expected };
  });
}

function checkLimit(name: string, value: number | undefined): number {
  if (value === undefined) return Infinity;
  if (!Number.isInteger(value) || value < 1) {
    throw new ArgumentError(name, 'a positive integer (examples to keep)', value);
  }
  return value;
}

function checkDatasetDir(dir: string): void {
  if (!existsSync(dir)) {
    throw new DataError(
      `SIGNS dataset folder not found: ${path.resolve(dir)}. ${SETUP_HINT}`,
      dir,
    );
  }
  if (!statSync(dir).isDirectory()) {
    throw new DataError(
      `SIGNS dataset path ${path.resolve(dir)} is a file, not a folder; pass the folder ` +
        'that holds train_signs.h5 and test_signs.h5.',
      dir,
    );
  }
  const missing = Object.values(SIGNS_FILES).filter((f) => !existsSync(path.join(dir, f)));
  if (missing.length > 0) {
    throw new DataError(
      `SIGNS folder ${path.resolve(dir)} lacks ${missing.join(' and ')}. ${SETUP_HINT}`,
      dir,
    );
  }
}

/** The file as an ArrayBuffer of its own, which is what jsfive reads. */
function readWholeFile(file: string): ArrayBuffer {
  const bytes = readFileSync(file);
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  // Small files may sit inside Node's shared buffer pool; copy those out.
  const buffer = whole
    ? bytes.buffer
    : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return buffer as ArrayBuffer;
}

/**
 * Checks the signature, then the file length the superblock records, so a
 * truncated download is named as such before jsfive trips over it.
 */
function checkHdf5Header(buffer: ArrayBuffer, file: string): void {
  const head = new Uint8Array(buffer, 0, Math.min(buffer.byteLength, 32));
  if (head.length < 8 || HDF5_SIGNATURE.some((b, i) => head[i] !== b)) {
    const text = Buffer.from(head).toString('latin1');
    const kind = text.startsWith('version https://git-lfs')
      ? ' It is a Git LFS pointer: fetch the real file with `git lfs pull`.'
      : /^\s*</.test(text)
        ? ' It looks like a web page: the download probably failed.'
        : '';
    const start = head.length === 0 ? 'it is empty' : `it starts with ${JSON.stringify(text)}`;
    throw new DataError(
      `${file} is not an HDF5 file: ${start}, not the HDF5 ` +
        `signature "\\x89HDF\\r\\n\\x1a\\n" (${buffer.byteLength} bytes in all).${kind} ` +
        SETUP_HINT,
      file,
    );
  }
  const view = new DataView(buffer);
  const version = buffer.byteLength > 8 ? view.getUint8(8) : -1;
  // Where the superblock stores its end-of-file address, by version.
  const eofOffset = version === 0 ? 40 : version === 1 ? 44 : version >= 2 ? 28 : -1;
  if (eofOffset < 0 || buffer.byteLength < eofOffset + 8) {
    throw truncated(file, buffer.byteLength, 'its superblock is cut short');
  }
  const eof = view.getBigUint64(eofOffset, true);
  if (eof > BigInt(buffer.byteLength)) {
    throw truncated(file, buffer.byteLength, `its header says ${eof} bytes`);
  }
}

function truncated(file: string, length: number, why: string): DataError {
  return new DataError(
    `${file} is truncated: it has ${length} bytes but ${why}. The download or copy ` +
      `stopped early. ${SETUP_HINT}`,
    file,
  );
}

/** Turns whatever jsfive throws (often a bare string) into a message. */
function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function openHdf5(buffer: ArrayBuffer, file: string): hdf5.File {
  try {
    return new hdf5.File(buffer, path.basename(file));
  } catch (error) {
    throw new DataError(
      `${file} has the HDF5 signature but could not be read (jsfive: ${reason(error)}); ` +
        `it is damaged or uses an HDF5 feature jsfive lacks. ${SETUP_HINT}`,
      file,
    );
  }
}

function getDataset(
  h5: hdf5.File,
  name: string,
  file: string,
  split: SignsSplitName,
): hdf5.Dataset {
  const expected = `${split}_set_x, ${split}_set_y and list_classes`;
  if (!h5.keys.includes(name)) {
    throw new DataError(
      `${file} has no dataset \`${name}\`; it holds ${describe(h5.keys)} where the ` +
        `course's ${SIGNS_FILES[split]} holds ${expected}. ${SETUP_HINT}`,
      file,
    );
  }
  let item: hdf5.Group | hdf5.Dataset | null;
  try {
    item = h5.get(name);
  } catch (error) {
    throw new DataError(
      `\`${name}\` in ${file} could not be read (jsfive: ${reason(error)}); the file is ` +
        `damaged or truncated. ${SETUP_HINT}`,
      file,
    );
  }
  if (!(item instanceof hdf5.Dataset)) {
    throw new DataError(
      `\`${name}\` in ${file} is a group, not a dataset; expected the course's layout ` +
        `(${expected}). ${SETUP_HINT}`,
      file,
    );
  }
  return item;
}

/** A numpy-style type string split into its parts: `<i8` is i, 8 bytes. */
interface NumericType {
  kind: string;
  size: number;
  littleEndian: boolean;
}

function parseDtype(dtype: string | unknown[]): NumericType | undefined {
  if (typeof dtype !== 'string') return undefined;
  const match = /^([<>|=]?)([iuf])(\d+)$/.exec(dtype);
  if (!match) return undefined;
  return { kind: match[2], size: Number(match[3]), littleEndian: match[1] !== '>' };
}

function isInteger(t: NumericType): boolean {
  return (t.kind === 'i' || t.kind === 'u') && [1, 2, 4, 8].includes(t.size);
}

function checkDtype(
  ds: hdf5.Dataset,
  name: string,
  file: string,
  expected: string,
  accept: (t: NumericType) => boolean,
): NumericType {
  const parsed = parseDtype(ds.dtype);
  if (!parsed || !accept(parsed)) {
    throw new DataError(
      `\`${name}\` in ${file} must hold ${expected}; received dtype ` +
        `${describe(ds.dtype)}. ${SETUP_HINT}`,
      file,
    );
  }
  return parsed;
}

/**
 * The bytes of a contiguous dataset, as a view into the file's buffer, or
 * undefined when the dataset is chunked (jsfive must then decode it).
 */
function contiguousBytes(
  ds: hdf5.Dataset,
  name: string,
  file: string,
  itemSize: number,
): Uint8Array | undefined {
  const objects = ds._dataobjects;
  const layout = objects.find_msg_type(DATA_LAYOUT_MESSAGE)[0];
  const msgOffset = layout?.get('offset_to_message');
  if (msgOffset === undefined) return undefined;
  const [version, , layoutClass, propertyOffset] =
    objects._get_data_message_properties(msgOffset);
  // Layout versions 1 and 2 store the address elsewhere; leave them to jsfive.
  if (version < 3 || layoutClass !== CONTIGUOUS_LAYOUT) return undefined;

  const buffer = objects.fh;
  const address = new DataView(buffer).getBigUint64(propertyOffset, true);
  const byteLength = ds.shape.reduce((a, b) => a * b, 1) * itemSize;
  if (address === UNDEFINED_ADDRESS) {
    throw new DataError(
      `\`${name}\` in ${file} has no data stored (it was created but never written). ` +
        SETUP_HINT,
      file,
    );
  }
  if (address + BigInt(byteLength) > BigInt(buffer.byteLength)) {
    throw truncated(
      file,
      buffer.byteLength,
      `\`${name}\` needs bytes up to ${address + BigInt(byteLength)}`,
    );
  }
  return new Uint8Array(buffer, Number(address), byteLength);
}

/** jsfive's own decoding: slow, but handles chunked and compressed data. */
function decodeWithJsfive(ds: hdf5.Dataset, name: string, file: string): unknown[] {
  try {
    return ds.value;
  } catch (error) {
    throw new DataError(
      `\`${name}\` in ${file} could not be decoded (jsfive: ${reason(error)}); the file is ` +
        `damaged or truncated. ${SETUP_HINT}`,
      file,
    );
  }
}

function readUint8(ds: hdf5.Dataset, name: string, file: string): Uint8Array {
  return (
    contiguousBytes(ds, name, file, 1) ??
    Uint8Array.from(decodeWithJsfive(ds, name, file) as number[])
  );
}

/** Reads an integer dataset into doubles (exact for every label we accept). */
function readIntegers(ds: hdf5.Dataset, name: string, file: string): Float64Array {
  const type = parseDtype(ds.dtype) as NumericType;
  const bytes = contiguousBytes(ds, name, file, type.size);
  if (!bytes) return Float64Array.from(decodeWithJsfive(ds, name, file) as number[]);

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float64Array(bytes.byteLength / type.size);
  const signed = type.kind === 'i';
  const le = type.littleEndian;
  for (let i = 0; i < out.length; i++) {
    const at = i * type.size;
    switch (type.size) {
      case 1:
        out[i] = signed ? view.getInt8(at) : view.getUint8(at);
        break;
      case 2:
        out[i] = signed ? view.getInt16(at, le) : view.getUint16(at, le);
        break;
      case 4:
        out[i] = signed ? view.getInt32(at, le) : view.getUint32(at, le);
        break;
      default:
        // Beyond 2^53 Number() rounds, but such a value fails the range check anyway.
        out[i] = Number(signed ? view.getBigInt64(at, le) : view.getBigUint64(at, le));
    }
  }
  return out;
}
