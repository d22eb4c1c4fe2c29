/**
 * The layer table of a model, in the format of the course's reference
 * (`Requirements/reference/resnet50-summary.json`), its comparison with that
 * reference, and a printout in the shape of Keras's `model.summary()`.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * One row: class name, output shape (null for the batch), parameter count,
 * then per class: Conv2D padding, activation and kernel initialiser;
 * ZeroPadding2D padding; MaxPooling2D pool size, strides and padding; Dense
 * activation.
 */
export type LayerRow = [string, Array<number | null>, number, ...unknown[]];

/** The reference file's layout. */
export interface LayerTableReference {
  total_params: number;
  trainable_params: number;
  non_trainable_params: number;
  layers: LayerRow[];
}

type Config = Record<string, unknown>;

/**
 * The initialiser's own class name. Its serialised config says
 * `VarianceScaling` for Glorot and He initialisers, which hides the choice.
 */
function initializerName(layer: tf.layers.Layer): string | undefined {
  const init = (layer as unknown as { kernelInitializer?: object }).kernelInitializer;
  return (init?.constructor as { className?: string } | undefined)?.className;
}

function details(layer: tf.layers.Layer): unknown[] {
  const config = layer.getConfig() as Config;
  switch (layer.getClassName()) {
    case 'Conv2D':
      return [config.padding, config.activation, initializerName(layer)];
    case 'ZeroPadding2D':
      return [config.padding];
    case 'MaxPooling2D':
      return [config.poolSize, config.strides, config.padding];
    case 'Dense':
      return [config.activation];
    default:
      return [];
  }
}

/** The model's layer table, row by row in the model's layer order. */
export function layerTable(model: tf.LayersModel): LayerRow[] {
  return model.layers.map((layer) => {
    const shape = layer.outputShape as Array<number | null>;
    return [layer.getClassName(), shape, layer.countParams(), ...details(layer)];
  });
}

/** Total, trainable and non-trainable parameter counts. */
export function parameterCounts(model: tf.LayersModel): {
  total: number;
  trainable: number;
  nonTrainable: number;
} {
  const count = (weights: tf.LayerVariable[]) =>
    weights.reduce((sum, w) => sum + w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0);
  const trainable = count(model.trainableWeights);
  const nonTrainable = count(model.nonTrainableWeights);
  return { total: trainable + nonTrainable, trainable, nonTrainable };
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Compares a model's layer table with the reference, row for row. Within a
 * convolutional block, frameworks list the shortcut convolution and its
 * BatchNorm in different orders, so rows that differ only by such a swap of
 * identical-looking neighbours still match: each row is matched against the
 * reference rows of the same class in a window of four.
 *
 * @returns one message per mismatch; empty when the tables agree.
 */
export function compareLayerTable(model: tf.LayersModel, reference: LayerTableReference): string[] {
  const rows = layerTable(model);
  const messages: string[] = [];
  const counts = parameterCounts(model);
  const totals: Array<[string, number, number]> = [
    ['total parameters', counts.total, reference.total_params],
    ['trainable parameters', counts.trainable, reference.trainable_params],
    ['non-trainable parameters', counts.nonTrainable, reference.non_trainable_params],
  ];
  for (const [what, got, want] of totals) {
    if (got !== want) messages.push(`Your model has ${got} ${what}; the reference has ${want}.`);
  }
  if (rows.length !== reference.layers.length) {
    messages.push(
      `Your model has ${rows.length} layers; the reference has ${reference.layers.length}.`,
    );
  }
  const used = new Set<number>();
  const WINDOW = 4;
  for (let i = 0; i < rows.length; i++) {
    let match = -1;
    for (let j = Math.max(0, i - WINDOW); j <= i + WINDOW && j < reference.layers.length; j++) {
      if (!used.has(j) && same(rows[i], reference.layers[j])) {
        match = j;
        break;
      }
    }
    if (match >= 0) {
      used.add(match);
      continue;
    }
    const want = reference.layers[i];
    messages.push(
      `Layer ${i} (${model.layers[i].name}): yours is ${JSON.stringify(rows[i])}, ` +
        `the reference expects ${want ? JSON.stringify(want) : 'no layer here'}.`,
    );
    if (messages.length >= 20) {
      messages.push('… further differences left out.');
      break;
    }
  }
  return messages;
}

/**
 * Prints the model's table as Keras's `model.summary()` does: layer name and
 * class, output shape, parameters, then the totals.
 */
export function printSummary(
  model: tf.LayersModel,
  print: (line: string) => void = (line) => console.log(line),
): void {
  const widths = [38, 26, 12];
  const cell = (text: string, width: number) =>
    text.length >= width ? `${text.slice(0, width - 2)}… ` : text.padEnd(width);
  const rule = (char: string) => char.repeat(widths.reduce((a, b) => a + b, 0));
  const shape = (s: Array<number | null>) =>
    `(${s.map((d) => (d === null ? 'None' : String(d))).join(', ')})`;

  print(`Model: "${model.name}"`);
  print(rule('_'));
  print(cell('Layer (type)', widths[0]) + cell('Output Shape', widths[1]) + 'Param #');
  print(rule('='));
  model.layers.forEach((layer, i) => {
    const name = `${layer.name} (${layer.getClassName()})`;
    print(
      cell(name, widths[0]) +
        cell(shape(layer.outputShape as Array<number | null>), widths[1]) +
        layer.countParams().toLocaleString('en-US'),
    );
    if (i < model.layers.length - 1) print('');
  });
  print(rule('='));
  const counts = parameterCounts(model);
  print(`Total params: ${counts.total.toLocaleString('en-US')}`);
  print(`Trainable params: ${counts.trainable.toLocaleString('en-US')}`);
  print(`Non-trainable params: ${counts.nonTrainable.toLocaleString('en-US')}`);
  print(rule('_'));
}
