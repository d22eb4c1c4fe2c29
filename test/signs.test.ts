/**
 * The SIGNS loader on the real files (from ../shared/datasets, skipped where
 * that folder is absent), on the tiny committed fixtures, and on each kind of
 * bad input. The fixtures come from scripts/make-fixtures.py; truncated and
 * non-HDF5 files are made here from them.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';

import * as tf from '@tensorflow/tfjs';
import * as hdf5 from 'jsfive';

import {
  SIGNS_FILES,
  loadSigns,
  readChecksums,
  readSignsFile,
  sha256File,
  verifyDatasets,
} from '../src/data/signs.js';
import { ArgumentError, DataError } from '../src/errors.js';
import { defaultDatasetDir, findProjectRoot } from '../src/paths.js';

const ROOT = findProjectRoot();
const REAL_DIR = path.join(ROOT, '..', 'shared', 'datasets');
const HAS_REAL = existsSync(path.join(REAL_DIR, SIGNS_FILES.train));
const SKIP_REAL = HAS_REAL ? false : `no SIGNS files at ${REAL_DIR}`;
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'signs');

const scratch = mkdtempSync(path.join(tmpdir(), 'signs-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/**
 * A fresh folder holding the valid fixture pair, with the train file replaced
 * by `train` (bytes, or a fixture under bad/) or removed when it is null.
 */
function datasetDir(train?: Buffer | string | null): string {
  const dir = mkdtempSync(path.join(scratch, 'case-'));
  copyFileSync(path.join(FIXTURES, 'valid', SIGNS_FILES.test), path.join(dir, SIGNS_FILES.test));
  const trainPath = path.join(dir, SIGNS_FILES.train);
  if (train === undefined) {
    copyFileSync(path.join(FIXTURES, 'valid', SIGNS_FILES.train), trainPath);
  } else if (typeof train === 'string') {
    copyFileSync(path.join(FIXTURES, 'bad', train), trainPath);
  } else if (train !== null) {
    writeFileSync(trainPath, train);
  }
  return dir;
}

/** Asserts `fn` throws a DataError whose message matches every pattern. */
function assertDataError(fn: () => unknown, ...patterns: RegExp[]): DataError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof DataError, `expected a DataError, got ${String(caught)}`);
  for (const pattern of patterns) assert.match(caught.message, pattern);
  return caught;
}

function disposeAll(data: ReturnType<typeof loadSigns>): void {
  tf.dispose([data.xTrain, data.yTrain, data.xTest, data.yTest]);
}

describe('loadSigns on the real SIGNS files', { skip: SKIP_REAL }, () => {
  it('returns the documented shapes, dtypes and classes', () => {
    const data = loadSigns(REAL_DIR);
    try {
      assert.deepEqual(data.xTrain.shape, [1080, 64, 64, 3]);
      assert.deepEqual(data.yTrain.shape, [1080, 6]);
      assert.deepEqual(data.xTest.shape, [120, 64, 64, 3]);
      assert.deepEqual(data.yTest.shape, [120, 6]);
      for (const t of [data.xTrain, data.yTrain, data.xTest, data.yTest]) {
        assert.equal(t.dtype, 'float32');
      }
      assert.ok(data.trainImages.data instanceof Uint8Array);
      assert.deepEqual(data.trainImages.shape, [1080, 64, 64, 3]);
      assert.equal(data.trainImages.data.length, 1080 * 64 * 64 * 3);
      assert.deepEqual(data.testImages.shape, [120, 64, 64, 3]);
      assert.ok(data.trainLabels instanceof Int32Array);
      assert.equal(data.trainLabels.length, 1080);
      assert.equal(data.testLabels.length, 120);
      assert.deepEqual(data.classes, [0, 1, 2, 3, 4, 5]);
    } finally {
      disposeAll(data);
    }
  });

  it('scales pixels to x/255 in [0, 1] and one-hot encodes the labels', () => {
    const data = loadSigns(REAL_DIR);
    try {
      const x = data.xTest.dataSync();
      const raw = data.testImages.data;
      assert.equal(x.length, raw.length);
      for (const i of [0, 1, 777, raw.length - 1]) {
        assert.equal(x[i], Math.fround(raw[i] / 255), `element ${i}`);
      }
      assert.ok(tf.min(data.xTrain).dataSync()[0] >= 0);
      const max = tf.max(data.xTrain).dataSync()[0];
      assert.ok(max <= 1 && max > 0.9, `max pixel ${max}`);

      const argMax = data.yTrain.argMax(1).dataSync();
      assert.deepEqual(Array.from(argMax), Array.from(data.trainLabels));
      const rowSums = data.yTrain.sum(1).dataSync();
      assert.ok(rowSums.every((s) => s === 1), 'every one-hot row sums to 1');
      assert.deepEqual(
        Array.from(data.yTest.argMax(1).dataSync()),
        Array.from(data.testLabels),
      );
    } finally {
      disposeAll(data);
    }
  });

  it('has 180 training images of each class', () => {
    const { labels } = readSignsFile(path.join(REAL_DIR, SIGNS_FILES.train), 'train');
    const counts = [0, 0, 0, 0, 0, 0];
    labels.forEach((label) => counts[label]++);
    assert.deepEqual(counts, [180, 180, 180, 180, 180, 180]);
  });

  it('keeps the first N examples with `limit`, per split with trainLimit/testLimit', () => {
    const full = readSignsFile(path.join(REAL_DIR, SIGNS_FILES.test), 'test');
    const data = loadSigns(REAL_DIR, { limit: 10, trainLimit: 7 });
    try {
      assert.deepEqual(data.xTrain.shape, [7, 64, 64, 3]);
      assert.deepEqual(data.yTrain.shape, [7, 6]);
      assert.deepEqual(data.xTest.shape, [10, 64, 64, 3]);
      assert.deepEqual(data.testImages.shape, [10, 64, 64, 3]);
      assert.deepEqual(data.testLabels, full.labels.subarray(0, 10));
      assert.deepEqual(data.testImages.data, full.images.data.subarray(0, 10 * 64 * 64 * 3));
    } finally {
      disposeAll(data);
    }
    const all = loadSigns(REAL_DIR, { testLimit: 500, trainLimit: 1 });
    try {
      assert.equal(all.testLabels.length, 120, 'a limit above n keeps all n');
    } finally {
      disposeAll(all);
    }
  });

  it('reads the same bytes directly as jsfive decodes', () => {
    const file = path.join(REAL_DIR, SIGNS_FILES.test);
    const bytes = readFileSync(file);
    const h5 = new hdf5.File(new Uint8Array(bytes).buffer, 'test');
    const x = h5.get('test_set_x') as hdf5.Dataset;
    const y = h5.get('test_set_y') as hdf5.Dataset;
    const split = readSignsFile(file, 'test');
    assert.deepEqual(split.images.data, Uint8Array.from(x.value as number[]));
    assert.deepEqual(split.labels, Int32Array.from(y.value as number[]));
  });

  it('matches the reference SHA-256 sums', () => {
    const checks = verifyDatasets(REAL_DIR);
    assert.deepEqual(
      checks.map((c) => [c.name, c.ok]),
      [
        ['train_signs.h5', true],
        ['test_signs.h5', true],
      ],
    );
  });
});

describe('loadSigns on the tiny fixtures', () => {
  it('loads a chunked, gzip-compressed file through jsfive and a contiguous one', () => {
    const data = loadSigns(path.join(FIXTURES, 'valid'));
    try {
      assert.deepEqual(data.xTrain.shape, [6, 64, 64, 3]);
      assert.deepEqual(data.xTest.shape, [1, 64, 64, 3]);
      assert.deepEqual(Array.from(data.trainLabels), [5, 0, 1, 2, 3, 4]);
      assert.deepEqual(Array.from(data.testLabels), [3]);
      // make-fixtures.py starts image k at 40 * label (mod 256), then counts up.
      const pixels = data.trainImages.data;
      data.trainLabels.forEach((label, k) => {
        assert.equal(pixels[k * 64 * 64 * 3], (40 * label) % 256, `image ${k}`);
        assert.equal(pixels[k * 64 * 64 * 3 + 5], (40 * label + 5) % 256, `image ${k}`);
      });
      assert.equal(data.testImages.data[1], 121);
    } finally {
      disposeAll(data);
    }
  });
});

describe('loadSigns on bad input', () => {
  it('names a missing folder and says to run setup', () => {
    const missing = path.join(scratch, 'no-such-folder');
    const error = assertDataError(
      () => loadSigns(missing),
      /SIGNS dataset folder not found/,
      /no-such-folder/,
      /npm run setup/,
      /Requirements\/datasets\//,
    );
    assert.equal(error.path, missing);
  });

  it('names a missing file', () => {
    assertDataError(
      () => loadSigns(datasetDir(null)),
      /lacks train_signs\.h5\./,
      /npm run setup/,
    );
  });

  it('rejects a file passed as the folder', () => {
    const dir = datasetDir();
    assertDataError(() => loadSigns(path.join(dir, SIGNS_FILES.test)), /is a file, not a folder/);
  });

  it('says a file cut short is truncated', () => {
    const valid = readFileSync(path.join(FIXTURES, 'valid', SIGNS_FILES.train));
    assertDataError(
      () => loadSigns(datasetDir(valid.subarray(0, valid.length >> 1))),
      /train_signs\.h5 is truncated: it has \d+ bytes but its header says \d+ bytes/,
    );
    assertDataError(
      () => loadSigns(datasetDir(valid.subarray(0, 20))),
      /is truncated: it has 20 bytes but its superblock is cut short/,
    );
  });

  it('says a file that is not HDF5 is not HDF5', () => {
    assertDataError(
      () => loadSigns(datasetDir(Buffer.from('<!DOCTYPE html><p>Not found</p>'))),
      /train_signs\.h5 is not an HDF5 file: it starts with "<!DOCTYPE html>/,
      /looks like a web page/,
      /npm run setup/,
    );
    assertDataError(
      () => loadSigns(datasetDir(Buffer.alloc(0))),
      /is not an HDF5 file: it is empty, not the HDF5 signature/,
    );
  });

  it('names a dataset missing from a file and lists what is there', () => {
    assertDataError(
      () => loadSigns(datasetDir('missing-y.h5')),
      /has no dataset `train_set_y`; it holds \["list_classes","train_set_x"\]/,
    );
  });

  it('names the expected and received shape', () => {
    assertDataError(
      () => loadSigns(datasetDir('x-shape.h5')),
      /`train_set_x` in .* must have shape \[n,64,64,3\]; received \[2,8,8,3\]/,
    );
  });

  it('names the expected and received dtype', () => {
    assertDataError(
      () => loadSigns(datasetDir('x-dtype.h5')),
      /`train_set_x` in .* must hold uint8; received dtype "<f4"/,
    );
  });

  it('names a label outside 0..5 and where it is', () => {
    assertDataError(
      () => loadSigns(datasetDir('label-range.h5')),
      /`train_set_y` in .* holds label 7 at index 1; labels must be integers 0\.\.5/,
    );
  });

  it('names a mismatch between image and label counts', () => {
    assertDataError(
      () => loadSigns(datasetDir('count-mismatch.h5')),
      /has 3 images in `train_set_x` but 2 labels in `train_set_y`/,
    );
  });

  it('rejects a limit that is not a positive integer', () => {
    const dir = datasetDir();
    for (const limit of [0, -1, 2.5, NaN]) {
      assert.throws(() => loadSigns(dir, { limit }), ArgumentError);
    }
    assert.throws(() => loadSigns(dir, { testLimit: 0 }), /`testLimit` must be a positive/);
  });
});

describe('checksums and paths', () => {
  it('hashes a file as sha256sum does', () => {
    const file = path.join(scratch, 'abc.txt');
    writeFileSync(file, 'abc');
    assert.equal(
      sha256File(file),
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });

  it('reports each file as ok, changed or missing', () => {
    const dir = datasetDir(null);
    const testSum = sha256File(path.join(dir, SIGNS_FILES.test));
    const checks = verifyDatasets(dir, {
      [SIGNS_FILES.test]: testSum,
      [SIGNS_FILES.train]: '0'.repeat(64),
      'other.h5': '1'.repeat(64),
    });
    assert.deepEqual(
      checks.map((c) => [c.name, c.ok, c.actual === null]),
      [
        ['test_signs.h5', true, false],
        ['train_signs.h5', false, true],
        ['other.h5', false, true],
      ],
    );
  });

  it('reads the committed checksum list', () => {
    const sums = readChecksums(path.join(ROOT, 'Requirements', 'datasets.sha256'));
    assert.deepEqual(Object.keys(sums).sort(), ['test_signs.h5', 'train_signs.h5']);
    const bad = path.join(scratch, 'bad.sha256');
    writeFileSync(bad, 'not a sum\n');
    assertDataError(() => readChecksums(bad), /Line 1 of .* must read/);
  });

  it('finds the project root from a subfolder and fails clearly outside it', () => {
    const sub = path.join(ROOT, 'test', 'fixtures');
    assert.equal(findProjectRoot(sub), ROOT);
    assert.equal(defaultDatasetDir(), path.join(ROOT, 'Requirements', 'datasets'));
    const outside = path.join(scratch, 'elsewhere');
    mkdirSync(outside);
    assertDataError(() => findProjectRoot(outside), /no package\.json named "resnet-ts"/);
  });
});
