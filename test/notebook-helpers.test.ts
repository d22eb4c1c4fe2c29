/**
 * The modules the notebooks import: image decoding and resizing, the
 * figures and diagrams, shape checks and progress, and the gradient
 * experiment. None of these tests needs Jupyter or a browser.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import * as tf from '@tensorflow/tfjs';
import * as jpeg from 'jpeg-js';

import { initBackend } from '../src/backend/index.js';
import { gradientNorms } from '../src/depth.js';
import { DataError } from '../src/errors.js';
import {
  cropToSquare,
  decodeImage,
  encodePng,
  imageToTensor,
  resizeImage,
  RgbImage,
  signsImage,
} from '../src/images.js';
import {
  expectShape,
  explainAccuracyGap,
  isQuickRun,
  NotebookProgress,
  ShapeError,
} from '../src/notebook.js';
import {
  blockDiagramSvg,
  confusionMatrixFigure,
  imageGridHtml,
  plotHtml,
  plotlyLibraryHtml,
  resnet50DiagramSvg,
  showPlot,
  trainingCurvesFigure,
} from '../src/plots.js';

/** A width × height image whose every pixel is `rgb`. */
function solid(width: number, height: number, rgb: [number, number, number]): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) data.set(rgb, p * 3);
  return { width, height, data };
}

before(async () => {
  await initBackend({ log: () => {} });
});

describe('images', () => {
  it('decodes a PNG it encoded, pixel for pixel', () => {
    const image = solid(5, 3, [10, 200, 30]);
    image.data[0] = 255;
    const back = decodeImage(encodePng(image));
    assert.deepEqual(back, image);
  });

  it('decodes a JPEG (close to the original colours)', () => {
    const rgba = new Uint8Array(8 * 8 * 4);
    for (let p = 0; p < 64; p++) rgba.set([200, 120, 40, 255], p * 4);
    const bytes = jpeg.encode({ width: 8, height: 8, data: rgba }, 95).data;
    const back = decodeImage(new Uint8Array(bytes));
    assert.equal(back.width, 8);
    assert.ok(Math.abs(back.data[0] - 200) <= 4 && Math.abs(back.data[2] - 40) <= 4);
  });

  it('names a file that is neither JPEG nor PNG', () => {
    assert.throws(
      () => decodeImage(new Uint8Array([0x47, 0x49, 0x46, 0x38]), 'x.gif'),
      (e: Error) => e instanceof DataError && /x\.gif is neither a JPEG nor a PNG/.test(e.message),
    );
  });

  it('crops to the centred square and resizes by averaging', () => {
    // Left half black, right half white, 8 wide and 4 high: the centred
    // 4×4 square is 2 black columns then 2 white ones.
    const image = solid(8, 4, [0, 0, 0]);
    for (let y = 0; y < 4; y++) image.data.fill(255, (y * 8 + 4) * 3, (y * 8 + 8) * 3);
    const square = cropToSquare(image);
    assert.equal(square.width, 4);
    assert.equal(square.data[0], 0);
    assert.equal(square.data[3 * 3], 255);
    const one = resizeImage(image, 1);
    assert.deepEqual(Array.from(one.data), [128, 128, 128]);
    const big = resizeImage(solid(300, 200, [9, 99, 199]), 64);
    assert.equal(big.width, 64);
    assert.ok(big.data.every((v, i) => v === [9, 99, 199][i % 3]));
    assert.equal(resizeImage(solid(2, 2, [1, 2, 3]), 64).data.length, 64 * 64 * 3);
  });

  it('makes a [1, h, w, 3] tensor scaled to [0, 1]', () => {
    const t = imageToTensor(solid(4, 2, [255, 0, 51]));
    assert.deepEqual(t.shape, [1, 2, 4, 3]);
    assert.deepEqual(Array.from(t.dataSync().slice(0, 3)), [1, 0, Math.fround(51 / 255)]);
    t.dispose();
  });

  it('takes one image out of a SIGNS split, and checks the index', () => {
    const data = new Uint8Array(2 * 2 * 2 * 3).map((_, i) => i);
    const images = { data, shape: [2, 2, 2, 3] as [number, number, number, number] };
    assert.deepEqual(Array.from(signsImage(images, 1).data), Array.from(data.slice(12)));
    assert.throws(() => signsImage(images, 2), /`index` must be an integer from 0 to 1/);
  });
});

describe('figures', () => {
  it('plotHtml keeps data from closing its script element', () => {
    const html = plotHtml({ data: [{ type: 'bar', name: '</script><b>', y: [1] }] });
    assert.equal(html.match(/<\/script>/g)?.length, 1);
    assert.match(html, /\\u003c\/script>/);
    assert.match(html, /class="resnet-plot"/);
  });

  it('embeds plotly.js with require.js hidden while it loads', () => {
    const html = plotlyLibraryHtml();
    assert.ok(html.length > 1_000_000);
    assert.equal(html.match(/<\/script/gi)?.length, 1);
    assert.match(html, /window\.define = undefined/);
  });

  it('showPlot hands the HTML to the display', () => {
    const shown: string[] = [];
    showPlot(confusionMatrixFigure([[1, 0], [2, 3]], ['a', 'b']), { html: (h) => shown.push(h) });
    assert.equal(shown.length, 1);
    assert.match(shown[0], /"z":\[\[1,0\],\[2,3\]\]/);
  });

  it('draws training curves in two panels, with the test level', () => {
    const figure = trainingCurvesFigure(
      [{ x: 0.5, loss: 2, accuracy: 0.2 }, { x: 1, loss: 1, accuracy: 0.5 }],
      [{ epoch: 1, loss: 1, accuracy: 0.5 }],
      { loss: 1.2, accuracy: 0.4 },
    );
    assert.equal(figure.data.length, 6);
    assert.deepEqual(figure.data[2].y, [1.2, 1.2]);
    assert.equal(figure.data[3].yaxis, 'y2');
  });

  it('puts the stride on the convolutional block only, and writes the shapes', () => {
    const identity = blockDiagramSvg({
      kind: 'identity',
      inputShape: [4, 4, 6],
      filters: [2, 4, 6],
    });
    assert.doesNotMatch(identity, /stride/);
    assert.match(identity, /\(4, 4, 2\)/);
    const conv = blockDiagramSvg({
      kind: 'convolutional',
      s: 2,
      inputShape: [5, 5, 6],
      filters: [2, 4, 8],
    });
    assert.equal(conv.match(/stride 2/g)?.length, 2);
    assert.match(conv, /\(3, 3, 8\)/);
  });

  it('follows ResNet50 from 15×15 down to 2×2', () => {
    const svg = resnet50DiagramSvg();
    const shapes = ['(15, 15, 64)', '(15, 15, 256)', '(8, 8, 512)', '(4, 4, 1024)', '(2, 2, 2048)'];
    for (const shape of [...shapes, '(6)']) {
      assert.ok(svg.includes(shape), shape);
    }
  });

  it('escapes captions in image grids', () => {
    const item = { image: solid(2, 2, [0, 0, 0]), caption: '<x>\nsecond', wrong: true };
    const html = imageGridHtml([item]);
    assert.match(html, /&lt;x&gt;<br>second/);
    assert.match(html, /class="wrong"/);
    assert.match(html, /src="data:image\/png;base64,/);
  });
});

describe('notebook helpers', () => {
  it('expectShape prints one line, or names both shapes', () => {
    const lines: string[] = [];
    expectShape('y', tf.zeros([3, 4]), [3, 4], (l) => lines.push(l));
    expectShape('s', tf.input({ shape: [4] }), [null, 4], (l) => lines.push(l));
    assert.deepEqual(lines, [
      '[shape] y: (3, 4), as expected',
      '[shape] s: (None, 4), as expected',
    ]);
    assert.throws(
      () => expectShape('y', [3, 5], [3, 4], () => {}),
      (e: Error) =>
        e instanceof ShapeError && /y has shape \(3, 5\); expected \(3, 4\)/.test(e.message),
    );
  });

  it('tells overfitting from lagging BatchNorm statistics', () => {
    const base = { training: 0.95, steps: 340 };
    assert.match(explainAccuracyGap({ ...base, trainingInference: 0.94, test: 0.9 }), /no sign/);
    assert.match(explainAccuracyGap({ ...base, trainingInference: 0.93, test: 0.5 }), /overfitted/);
    const lagging = explainAccuracyGap({ ...base, trainingInference: 0.17, test: 0.17 });
    assert.match(lagging, /not overfitting/);
    assert.match(lagging, /after 340 steps they still hold 3\.3 %/);
  });

  it('reads RESNET_QUICK', () => {
    assert.equal(isQuickRun({ RESNET_QUICK: '1' }), true);
    assert.equal(isQuickRun({ RESNET_QUICK: '0' }), false);
    assert.equal(isQuickRun({}), false);
  });

  it('NotebookProgress redraws one line per epoch and keeps every step', () => {
    const printed: string[] = [];
    const bars: string[][] = [];
    const progress = new NotebookProgress(
      (l) => printed.push(l),
      () => {
        const bar: string[] = [];
        bars.push(bar);
        return { html: () => {}, text: (t) => bar.push(t) };
      },
    );
    const step = {
      epochs: 2,
      batches: 2,
      loss: 1,
      accuracy: 0.5,
      imagesPerSecond: 3,
      etaSeconds: 1,
    };
    progress.batch({ ...step, epoch: 1, batch: 1 });
    progress.batch({ ...step, epoch: 1, batch: 2 });
    progress.epoch({ epoch: 1, loss: 1, accuracy: 0.5, seconds: 2, imagesPerSecond: 3 }, 2);
    progress.batch({ ...step, epoch: 2, batch: 1 });
    assert.deepEqual(progress.steps.map((s) => s.x), [0.5, 1, 1.5]);
    assert.deepEqual(bars.map((b) => b.length), [2, 1]);
    assert.match(printed[0], /^\[epoch 1\/2\] loss 1\.0000 accuracy 0\.5000/);
  });
});

describe('gradient experiment', () => {
  it('gradients vanish through a plain stack and not through a residual one', () => {
    const { plain, residual } = gradientNorms({ depth: 20, width: 16 });
    assert.equal(plain.length, 20);
    assert.equal(residual.length, 20);
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[10];
    assert.ok(median(plain) < 1e-2 * median(residual), `${median(plain)} vs ${median(residual)}`);
  });
});
