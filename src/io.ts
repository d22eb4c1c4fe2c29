/**
 * Saving and loading models in the TensorFlow.js format (`model.json` plus
 * `weights.bin`) on the local disk, without `@tensorflow/tfjs-node`, whose
 * `file://` handler this project cannot count on. Writes are atomic: each
 * file goes to a temporary name first and is renamed over the old one, so a
 * crash mid-write leaves the previous file whole.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdirSync, readFileSync, renameSync, writeFileSync, rmSync } from 'node:fs';
import path from 'node:path';

import { DataError, TrainingError } from './errors.js';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/**
 * Writes `data` to `file` atomically (temporary file, then rename).
 *
 * @throws TrainingError saying what to do when the disk is full or the folder
 *   is not writable; the previous file, if any, is untouched.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const temporary = `${file}.tmp-${process.pid}`;
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(temporary, data);
    renameSync(temporary, file);
  } catch (error) {
    rmSync(temporary, { force: true });
    const e = error as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOSPC'
        ? 'the disk is full; free some space'
        : e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS'
          ? 'the folder is not writable; choose another with --out'
          : e.message;
    throw new TrainingError(`Could not write ${file}: ${why}. Nothing earlier was lost.`);
  }
}

/** Saves `model` (topology and weights) into the folder `dir`. */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weights = new Uint8Array(artifacts.weightData as ArrayBuffer);
      // Weights first: model.json names them, so it must not point at a
      // weights file that is not complete yet.
      writeFileAtomic(path.join(dir, WEIGHTS_BIN), weights);
      const modelJson = {
        format: 'layers-model',
        generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
        convertedBy: null,
        modelTopology: artifacts.modelTopology,
        trainingConfig: artifacts.trainingConfig,
        weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs }],
      };
      writeFileAtomic(path.join(dir, MODEL_JSON), JSON.stringify(modelJson));
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          weightDataBytes: weights.byteLength,
        },
      };
    }),
  );
}

/**
 * Loads a model saved by `saveModel` (or any TensorFlow.js layers model with
 * one weights file) from the folder `dir`.
 *
 * @throws DataError when the folder holds no readable model.
 */
export async function loadModel(dir: string): Promise<tf.LayersModel> {
  const jsonPath = path.join(dir, MODEL_JSON);
  let modelJson: tf.io.ModelJSON;
  try {
    modelJson = JSON.parse(readFileSync(jsonPath, 'utf8')) as tf.io.ModelJSON;
  } catch (error) {
    throw new DataError(
      `No TensorFlow.js model at ${dir}: cannot read ${MODEL_JSON} ` +
        `(${(error as Error).message}). Pass the model folder a training run wrote ` +
        '(runs/<run>/model).',
      jsonPath,
    );
  }
  if (!modelJson || typeof modelJson !== 'object' || !modelJson.modelTopology) {
    throw new DataError(
      `${jsonPath} is not a TensorFlow.js layers model (no modelTopology). Pass the model ` +
        'folder a training run wrote (runs/<run>/model).',
      jsonPath,
    );
  }
  const manifest = modelJson.weightsManifest ?? [];
  const specs = manifest.flatMap((group) => group.weights);
  const buffers = manifest.flatMap((group) =>
    group.paths.map((p) => {
      const file = path.join(dir, p);
      try {
        return readFileSync(file);
      } catch (error) {
        throw new DataError(
          `The model at ${dir} names weights ${p} that cannot be read: ` +
            `${(error as Error).message}.`,
          file,
        );
      }
    }),
  );
  const joined = Buffer.concat(buffers);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
  try {
    return await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: modelJson.modelTopology,
        weightSpecs: specs,
        weightData,
        trainingConfig: modelJson.trainingConfig,
      }),
    );
  } catch (error) {
    // A truncated weights file, a layer TensorFlow.js does not know, weights
    // that do not fit the layers: all say the folder is damaged.
    const first = String((error as Error).message ?? error).split('\n')[0];
    throw new DataError(
      `The model at ${dir} could not be loaded: ${first}. Its files are damaged or do not ` +
        'belong together; retrain, or use another run.',
      dir,
    );
  }
}
