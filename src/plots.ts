/**
 * The notebooks' figures, all drawn by the project: plotly.js figure specs
 * (training curves, confusion matrix, class counts, probabilities, gradient
 * sizes), SVG diagrams of the blocks and of ResNet50, and HTML image grids
 * with the images inline as data URIs.
 *
 * Figures are plain data and HTML strings, so they can be tested without a
 * notebook; `showPlot` and `showHtml` display them in the tslab kernel.
 * plotly.js is embedded once per notebook by `showPlotlyLibrary` (from the
 * installed plotly.js-dist-min, nothing from a CDN), so that an exported
 * report opens offline.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { DataError } from './errors.js';
import { RgbImage, pngDataUri } from './images.js';
import { tslabDisplay } from './notebook.js';
import { findProjectRoot } from './paths.js';
import { RESNET50_STAGES, StagePlan } from './resnet50.js';

/** A plotly.js figure: traces, layout and config, as `Plotly.newPlot` takes them. */
export interface PlotlyFigure {
  data: Array<Record<string, unknown>>;
  layout?: Record<string, unknown>;
  config?: Record<string, unknown>;
}

/** Where HTML goes: tslab's `display`, or anything with an `html` method. */
export interface HtmlDisplay {
  html(html: string): void;
}

/** The class names of SIGNS: the digits 0 to 5. */
export const SIGNS_CLASS_NAMES = ['0', '1', '2', '3', '4', '5'];

/** Colours of the figures and diagrams (colour-blind-safe Okabe–Ito hues). */
export const COLORS = {
  blue: '#0072B2',
  orange: '#E69F00',
  green: '#009E73',
  vermillion: '#D55E00',
  purple: '#CC79A7',
  sky: '#56B4E9',
  grey: '#666666',
} as const;

const BASE_LAYOUT = {
  font: { family: 'Helvetica, Arial, sans-serif', size: 13 },
  margin: { l: 60, r: 20, t: 50, b: 50 },
  paper_bgcolor: 'white',
  plot_bgcolor: 'white',
  height: 360,
};

const BASE_CONFIG = { displaylogo: false, responsive: true };

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** JSON that is safe inside a <script> element (no `</script>`, no `<!--`). */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** Merges nested plain objects, `b` winning. */
type Json = Record<string, unknown>;

function merge(a: Json, b: Json = {}): Json {
  const out: Record<string, unknown> = { ...a };
  for (const [key, value] of Object.entries(b)) {
    const old = out[key];
    const bothObjects =
      typeof old === 'object' && old !== null && !Array.isArray(old) &&
      typeof value === 'object' && value !== null && !Array.isArray(value);
    out[key] = bothObjects
      ? merge(old as Record<string, unknown>, value as Record<string, unknown>)
      : value;
  }
  return out;
}

/** The path of the installed plotly.min.js. */
export function plotlyPath(): string {
  const require = createRequire(path.join(findProjectRoot(), 'package.json'));
  try {
    return require.resolve('plotly.js-dist-min');
  } catch (error) {
    throw new DataError(
      `plotly.js-dist-min is not installed (${(error as Error).message}). ` +
        'Run `npm ci` (or `bash scripts/setup.sh npm`) in the project folder.',
    );
  }
}

/**
 * A <script> element holding plotly.js itself, for a notebook's setup cell.
 * While it runs, a module loader's `define` (require.js in the classic
 * notebook) is hidden, so that plotly.js sets `window.Plotly` instead of
 * registering itself as an anonymous module.
 */
export function plotlyLibraryHtml(): string {
  const source = readFileSync(plotlyPath(), 'utf8').replace(/<\/script/gi, '<\\/script');
  return (
    '<script type="text/javascript">' +
    'window.__resnetDefine = window.define; window.define = undefined;\n' +
    `${source}\n` +
    'window.define = window.__resnetDefine;' +
    '</script>'
  );
}

/** The style of the project's HTML figures (image grids, diagrams, banners). */
const STYLE = `<style>
.resnet-grid { display: grid; gap: 8px; font: 12px Helvetica, Arial, sans-serif; }
.resnet-grid figure { margin: 0; text-align: center; }
.resnet-grid img { image-rendering: pixelated; border: 3px solid transparent; }
.resnet-grid figure.wrong img { border-color: ${COLORS.vermillion}; }
.resnet-grid figcaption { margin-top: 2px; line-height: 1.3; }
.resnet-banner { padding: 10px 14px; margin: 6px 0; border-left: 6px solid ${COLORS.orange};
  background: #fff6e0; font: 14px Helvetica, Arial, sans-serif; }
.resnet-banner.info { border-left-color: ${COLORS.blue}; background: #eaf3fa; }
.resnet-diagram svg { max-width: 100%; height: auto; }
</style>`;

/**
 * Embeds plotly.js and the figures' style in the notebook. Call it once, in
 * the first code cell: every later figure needs it.
 */
export function showPlotlyLibrary(display: HtmlDisplay = notebookDisplay()): void {
  display.html(STYLE + plotlyLibraryHtml());
}

let plotCounter = 0;

/** A fresh element id, unique across cells and re-runs. */
function freshId(prefix: string): string {
  plotCounter += 1;
  return `${prefix}-${plotCounter}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * The HTML that draws a figure: a <div> and a script calling
 * `Plotly.newPlot` (which needs `showPlotlyLibrary` to have run).
 */
export function plotHtml(figure: PlotlyFigure): string {
  const id = freshId('resnet-plot');
  const layout = merge(BASE_LAYOUT, figure.layout);
  const config = merge(BASE_CONFIG, figure.config);
  const height = typeof layout.height === 'number' ? layout.height : BASE_LAYOUT.height;
  return (
    `<div id="${id}" class="resnet-plot" style="width:100%;min-height:${height}px"></div>` +
    '<script type="text/javascript">(function () {' +
    `var el = document.getElementById(${scriptJson(id)});` +
    "if (!window.Plotly) { el.textContent = 'plotly.js is not loaded: run the setup cell " +
    "(showPlotlyLibrary) first.'; return; }" +
    `window.Plotly.newPlot(el, ${scriptJson(figure.data)}, ${scriptJson(layout)}, ` +
    `${scriptJson(config)});` +
    '})();</script>'
  );
}

/** tslab's `display`, as an `HtmlDisplay`. @throws DataError outside the kernel. */
export function notebookDisplay(): HtmlDisplay {
  return tslabDisplay();
}

/** Displays a plotly figure in the notebook. */
export function showPlot(figure: PlotlyFigure, display: HtmlDisplay = notebookDisplay()): void {
  display.html(plotHtml(figure));
}

/** Displays HTML (an image grid, a diagram, a banner) in the notebook. */
export function showHtml(html: string, display: HtmlDisplay = notebookDisplay()): void {
  display.html(html);
}

/** A highlighted note: `warning` (orange) or `info` (blue). */
export function bannerHtml(title: string, text: string, tone: 'warning' | 'info' = 'warning') {
  const cls = tone === 'info' ? 'resnet-banner info' : 'resnet-banner';
  return `<div class="${cls}"><strong>${escapeHtml(title)}</strong> ${escapeHtml(text)}</div>`;
}

// --- Figures ------------------------------------------------------------------

/** One named series of values, for `lineFigure`. */
export interface Series {
  name: string;
  y: number[];
  /** Defaults to 1, 2, 3, … */
  x?: number[];
  color?: string;
  dash?: 'solid' | 'dash' | 'dot';
}

/** A line chart of several series, optionally with a logarithmic y axis. */
export function lineFigure(
  series: Series[],
  options: { title: string; xTitle: string; yTitle: string; logY?: boolean },
): PlotlyFigure {
  return {
    data: series.map((s) => ({
      type: 'scatter',
      mode: 'lines+markers',
      name: s.name,
      x: s.x ?? s.y.map((_, i) => i + 1),
      y: s.y,
      line: { color: s.color, dash: s.dash ?? 'solid', width: 2 },
      marker: { size: 5 },
    })),
    layout: {
      title: { text: options.title },
      xaxis: { title: { text: options.xTitle }, zeroline: false },
      yaxis: {
        title: { text: options.yTitle },
        type: options.logY ? 'log' : 'linear',
        exponentformat: 'power',
      },
      legend: { orientation: 'h', y: -0.2 },
      height: 400,
    },
  };
}

/** A point on a training curve: x in epochs (fractional within an epoch). */
export interface CurvePoint {
  x: number;
  loss: number;
  accuracy: number;
}

/**
 * Loss (left) and accuracy (right) during training: the running values after
 * every step, a marker at the end of every epoch, and, if given, the test
 * set's figures after training as a dashed level.
 */
export function trainingCurvesFigure(
  steps: CurvePoint[],
  epochs: Array<{ epoch: number; loss: number; accuracy: number }>,
  test?: { loss: number; accuracy: number },
): PlotlyFigure {
  const data: Array<Record<string, unknown>> = [];
  const panels: Array<['loss' | 'accuracy', string]> = [
    ['loss', ''],
    ['accuracy', '2'],
  ];
  const lastX = Math.max(1, ...steps.map((s) => s.x), ...epochs.map((e) => e.epoch));
  for (const [key, axis] of panels) {
    const axes = { xaxis: `x${axis}`, yaxis: `y${axis}` };
    data.push({
      type: 'scatter',
      mode: 'lines',
      name: `training ${key}, running mean in the epoch`,
      x: steps.map((s) => s.x),
      y: steps.map((s) => s[key]),
      line: { color: COLORS.sky, width: 1.5 },
      showlegend: key === 'loss',
      legendgroup: 'steps',
      ...axes,
    });
    data.push({
      type: 'scatter',
      mode: 'lines+markers',
      name: `training ${key} per epoch`,
      x: epochs.map((e) => e.epoch),
      y: epochs.map((e) => e[key]),
      line: { color: COLORS.blue, width: 2.5 },
      marker: { size: 8 },
      showlegend: key === 'loss',
      legendgroup: 'epochs',
      ...axes,
    });
    if (test) {
      data.push({
        type: 'scatter',
        mode: 'lines',
        name: 'test set, after training',
        x: [0, lastX],
        y: [test[key], test[key]],
        line: { color: COLORS.vermillion, dash: 'dash', width: 2 },
        showlegend: key === 'loss',
        legendgroup: 'test',
        ...axes,
      });
    }
  }
  return {
    data,
    layout: {
      title: { text: 'Training curves' },
      grid: { rows: 1, columns: 2, pattern: 'independent' },
      xaxis: { title: { text: 'epoch' } },
      xaxis2: { title: { text: 'epoch' } },
      yaxis: { title: { text: 'loss (cross-entropy)' } },
      yaxis2: { title: { text: 'accuracy' }, range: [0, 1.02] },
      legend: { orientation: 'h', y: -0.25 },
      height: 420,
    },
  };
}

/**
 * A confusion matrix as a heatmap: rows the true class, columns the
 * predicted one, each cell its count.
 */
export function confusionMatrixFigure(
  confusion: number[][],
  classNames: string[] = SIGNS_CLASS_NAMES,
): PlotlyFigure {
  return {
    data: [
      {
        type: 'heatmap',
        z: confusion,
        x: classNames,
        y: classNames,
        colorscale: [
          [0, '#ffffff'],
          [1, COLORS.blue],
        ],
        texttemplate: '%{z}',
        hovertemplate: 'true %{y}, predicted %{x}: %{z}<extra></extra>',
        showscale: false,
        xgap: 2,
        ygap: 2,
      },
    ],
    layout: {
      title: { text: 'Confusion matrix (test set)' },
      xaxis: { title: { text: 'predicted class' }, type: 'category', side: 'bottom' },
      yaxis: { title: { text: 'true class' }, type: 'category', autorange: 'reversed' },
      width: 460,
      height: 440,
    },
  };
}

/** Counts of each class, one bar group per split. */
export function classCountsFigure(
  splits: Array<{ name: string; labels: ArrayLike<number> }>,
  classNames: string[] = SIGNS_CLASS_NAMES,
): PlotlyFigure {
  const palette = [COLORS.blue, COLORS.orange, COLORS.green];
  return {
    data: splits.map((split, i) => {
      const counts = classNames.map(() => 0);
      for (let k = 0; k < split.labels.length; k++) counts[split.labels[k]]++;
      return {
        type: 'bar',
        name: `${split.name} (${split.labels.length} images)`,
        x: classNames,
        y: counts,
        text: counts.map(String),
        textposition: 'outside',
        marker: { color: palette[i % palette.length] },
      };
    }),
    layout: {
      title: { text: 'Images per class' },
      barmode: 'group',
      xaxis: { title: { text: 'class (fingers shown)' }, type: 'category' },
      yaxis: { title: { text: 'images' } },
      legend: { orientation: 'h', y: -0.25 },
    },
  };
}

/** The model's probability for each class, the most likely one highlighted. */
export function probabilitiesFigure(
  probabilities: ArrayLike<number>,
  classNames: string[] = SIGNS_CLASS_NAMES,
  title = 'Predicted probabilities',
): PlotlyFigure {
  const p = Array.from(probabilities);
  const best = p.indexOf(Math.max(...p));
  return {
    data: [
      {
        type: 'bar',
        x: classNames,
        y: p,
        text: p.map((v) => v.toFixed(3)),
        textposition: 'outside',
        marker: { color: p.map((_, i) => (i === best ? COLORS.vermillion : COLORS.sky)) },
        hovertemplate: 'class %{x}: %{y:.4f}<extra></extra>',
      },
    ],
    layout: {
      title: { text: title },
      xaxis: { title: { text: 'class' }, type: 'category' },
      yaxis: { title: { text: 'probability' }, range: [0, 1.1] },
      height: 340,
    },
  };
}

// --- Image grids ----------------------------------------------------------------

/** One image of a grid, with its caption; `wrong` frames it in red. */
export interface GridItem {
  image: RgbImage;
  caption: string;
  wrong?: boolean;
  /** Width to draw it at, in pixels. Defaults to the grid's `scale` times its width. */
  width?: number;
}

/**
 * A grid of images with captions, each image inline as a PNG data URI and
 * drawn `scale` times its size with its pixels kept sharp.
 */
export function imageGridHtml(
  items: GridItem[],
  options: { columns?: number; scale?: number; title?: string } = {},
): string {
  const { columns = 8, scale = 1.5 } = options;
  const figures = items.map((item) => {
    const width = item.width ?? Math.round(item.image.width * scale);
    const caption = escapeHtml(item.caption).replace(/\n/g, '<br>');
    return (
      `<figure${item.wrong ? ' class="wrong"' : ''}>` +
      `<img src="${pngDataUri(item.image)}" width="${width}" alt="${escapeHtml(item.caption)}">` +
      `<figcaption>${caption}</figcaption></figure>`
    );
  });
  const title = options.title ? `<p><strong>${escapeHtml(options.title)}</strong></p>` : '';
  return (
    `${title}<div class="resnet-grid" style="grid-template-columns:repeat(${columns}, ` +
    `max-content)">${figures.join('')}</div>`
  );
}

// --- Diagrams -------------------------------------------------------------------

/** What `blockDiagramSvg` draws. */
export interface BlockDiagramOptions {
  kind: 'identity' | 'convolutional';
  /** Kernel size of the middle convolution (a number, or a letter). Defaults to 'f'. */
  f?: number | string;
  /** Filter counts (numbers or names). Defaults to ['F1', 'F2', 'F3']. */
  filters?: Array<number | string>;
  /** Stride of the convolutional block. Defaults to 's'. */
  s?: number | string;
  /** The input's height, width and channels, to write the shape after each group. */
  inputShape?: [number, number, number];
}

const BOX = { conv: 118, bn: 80, relu: 50, gap: 16, height: 44 };

function svgText(x: number, y: number, text: string, attrs = ''): string {
  return `<text x="${x}" y="${y}" text-anchor="middle" ${attrs}>${escapeHtml(text)}</text>`;
}

function svgBox(x: number, y: number, w: number, color: string, lines: string[]): string {
  const h = BOX.height;
  const rect =
    `<rect x="${x}" y="${y - h / 2}" width="${w}" height="${h}" rx="6" ` +
    `fill="${color}" fill-opacity="0.18" stroke="${color}" stroke-width="1.5"/>`;
  const first = lines.length === 1 ? y + 4 : y - 3;
  const text = lines
    .map((line, i) => svgText(x + w / 2, first + i * 15, line, i > 0 ? 'font-size="11"' : ''))
    .join('');
  return rect + text;
}

function arrow(x1: number, y1: number, x2: number, y2: number): string {
  return (
    `<line x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" stroke="#333" stroke-width="1.5" ` +
    'marker-end="url(#resnet-arrow)"/>'
  );
}

const ARROW_DEF =
  '<defs><marker id="resnet-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" ' +
  'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/>' +
  '</marker></defs>';

function shapeText(shape: Array<number | string>): string {
  return `(${shape.join(', ')})`;
}

/**
 * An SVG diagram of a residual block: the main path's three
 * Conv → BatchNorm (→ ReLU) groups, the shortcut above it (the input itself,
 * or a strided 1×1 convolution and BatchNorm), the add and the final ReLU.
 * With `inputShape`, the shape after each group is written under it.
 */
export function blockDiagramSvg(options: BlockDiagramOptions): string {
  const { kind, f = 'f', filters = ['F1', 'F2', 'F3'], s = 's' } = options;
  const conv = kind === 'convolutional';
  const [F1, F2, F3] = filters;
  const stride = conv ? s : 1;
  const strideText = conv ? `, stride ${s}` : '';

  // Shapes after each group, when the input shape is known.
  let shapes: string[] | undefined;
  let inputText = 'X';
  if (options.inputShape) {
    const [h, w, c] = options.inputShape;
    const sh = typeof stride === 'number' ? Math.ceil(h / stride) : `⌈${h}/${stride}⌉`;
    const sw = typeof stride === 'number' ? Math.ceil(w / stride) : `⌈${w}/${stride}⌉`;
    shapes = [shapeText([sh, sw, F1]), shapeText([sh, sw, F2]), shapeText([sh, sw, F3])];
    inputText = `X ${shapeText([h, w, c])}`;
  }

  const y = 150;
  const parts: string[] = [];
  let x = 20;
  parts.push(svgText(x + 45, y + 4, inputText, 'font-weight="bold"'));
  const split = x + 100;
  x = split;
  const groups: Array<[string, string, number | string]> = [
    ['Conv2D 1×1', `${F1} filters${strideText}`, F1],
    [`Conv2D ${f}×${f}`, `${F2} filters, 'same'`, F2],
    ['Conv2D 1×1', `${F3} filters`, F3],
  ];
  groups.forEach(([title, detail], g) => {
    parts.push(arrow(x, y, x + BOX.gap, y));
    x += BOX.gap;
    const start = x;
    parts.push(svgBox(x, y, BOX.conv, COLORS.blue, [title, detail]));
    x += BOX.conv;
    parts.push(arrow(x, y, x + BOX.gap, y));
    x += BOX.gap;
    parts.push(svgBox(x, y, BOX.bn, COLORS.orange, ['BatchNorm']));
    x += BOX.bn;
    if (g < 2) {
      parts.push(arrow(x, y, x + BOX.gap, y));
      x += BOX.gap;
      parts.push(svgBox(x, y, BOX.relu, COLORS.green, ['ReLU']));
      x += BOX.relu;
    }
    if (shapes) {
      parts.push(svgText((start + x) / 2, y + 44, shapes[g], 'font-size="12" fill="#555"'));
    }
  });
  // The add, then the final ReLU.
  parts.push(arrow(x, y, x + BOX.gap + 4, y));
  x += BOX.gap + 4;
  const addX = x + 14;
  parts.push(
    `<circle cx="${addX}" cy="${y}" r="14" fill="white" stroke="#333" stroke-width="1.5"/>` +
      svgText(addX, y + 6, '+', 'font-size="20"'),
  );
  x = addX + 14;
  parts.push(arrow(x, y, x + BOX.gap, y));
  x += BOX.gap;
  parts.push(svgBox(x, y, BOX.relu, COLORS.green, ['ReLU']));
  x += BOX.relu;
  parts.push(arrow(x, y, x + BOX.gap + 6, y));
  x += BOX.gap + 6;
  parts.push(svgText(x + 22, y + 4, 'output', 'font-weight="bold"'));

  // The shortcut: up from the split point, along the top, down into the add.
  const top = 50;
  const mid = (split + addX) / 2;
  if (conv) {
    const w = BOX.conv + BOX.gap + BOX.bn;
    const left = mid - w / 2;
    parts.push(
      `<polyline points="${split},${y} ${split},${top} ${left - BOX.gap},${top}" fill="none" ` +
        'stroke="#333" stroke-width="1.5"/>',
    );
    parts.push(arrow(left - BOX.gap, top, left, top));
    const shortcutLines = ['Conv2D 1×1', `${F3} filters, stride ${s}`];
    parts.push(svgBox(left, top, BOX.conv, COLORS.purple, shortcutLines));
    parts.push(arrow(left + BOX.conv, top, left + BOX.conv + BOX.gap, top));
    parts.push(svgBox(left + BOX.conv + BOX.gap, top, BOX.bn, COLORS.orange, ['BatchNorm']));
    parts.push(
      `<polyline points="${left + w},${top} ${addX},${top} ${addX},${y - 16}" fill="none" ` +
        'stroke="#333" stroke-width="1.5" marker-end="url(#resnet-arrow)"/>',
    );
    parts.push(svgText(mid, top - 30, 'shortcut: a strided 1×1 convolution', 'fill="#555"'));
  } else {
    parts.push(
      `<polyline points="${split},${y} ${split},${top} ${addX},${top} ${addX},${y - 16}" ` +
        'fill="none" stroke="#333" stroke-width="1.5" marker-end="url(#resnet-arrow)"/>',
    );
    parts.push(svgText(mid, top - 10, 'shortcut: the input, unchanged', 'fill="#555"'));
  }
  parts.push(svgText(mid, y + 75, 'main path', 'fill="#555"'));
  const width = x + 70;
  const title = kind === 'identity' ? 'Identity block' : 'Convolutional block';
  return (
    `<div class="resnet-diagram"><svg xmlns="http://www.w3.org/2000/svg" ` +
    `viewBox="0 0 ${width} 240" width="${width}" role="img" aria-label="${title}" ` +
    'font-family="Helvetica, Arial, sans-serif" font-size="13">' +
    `<title>${title}</title>${ARROW_DEF}${parts.join('')}</svg></div>`
  );
}

/** Height/width after the stem (7×7/2 convolution on the padded input, 3×3/2 pooling). */
function stemSize(size: number): number {
  const conv = Math.floor((size + 6 - 7) / 2) + 1;
  return Math.floor((conv - 3) / 2) + 1;
}

/**
 * An SVG diagram of ResNet50, stage by stage: the stem, each stage's
 * convolutional block (C) and identity blocks (I) with its filters and
 * stride, and the head, with the output shape after each.
 */
export function resnet50DiagramSvg(
  stages: readonly StagePlan[] = RESNET50_STAGES,
  inputShape: [number, number, number] = [64, 64, 3],
  classes = 6,
): string {
  const [h0, w0, c0] = inputShape;
  let h = stemSize(h0);
  let w = stemSize(w0);
  const y = 110;
  const parts: string[] = [];
  let x = 10;

  const column = (width: number, color: string, lines: string[], shape: string) => {
    const boxHeight = 96;
    parts.push(
      `<rect x="${x}" y="${y - boxHeight / 2}" width="${width}" height="${boxHeight}" rx="8" ` +
        `fill="${color}" fill-opacity="0.15" stroke="${color}" stroke-width="1.5"/>`,
    );
    lines.forEach((line, i) => {
      const attrs = i === 0 ? 'font-weight="bold"' : 'font-size="11"';
      parts.push(svgText(x + width / 2, y - 26 + i * 16, line, attrs));
    });
    parts.push(svgText(x + width / 2, y + 68, shape, 'font-size="12" fill="#555"'));
    x += width;
  };
  const link = () => {
    parts.push(arrow(x, y, x + 18, y));
    x += 18;
  };

  column(86, COLORS.grey, ['Input', `${h0}×${w0}×${c0}`], '');
  link();
  column(
    128,
    COLORS.blue,
    ['Stage 1 (stem)', 'ZeroPad 3', 'Conv 7×7, 64, /2', 'BN, ReLU', 'MaxPool 3×3, /2'],
    shapeText([h, w, 64]),
  );
  for (const stage of stages) {
    link();
    h = Math.ceil(h / stage.stride);
    w = Math.ceil(w / stage.stride);
    const width = Math.max(120, 18 * stage.blocks + 24);
    const start = x;
    column(
      width,
      COLORS.purple,
      [`Stage ${stage.stage}`, '', `filters ${stage.filters.join(', ')}`, `stride ${stage.stride}`],
      shapeText([h, w, stage.filters[2]]),
    );
    // One small square per block: C for the convolutional, I for identity.
    const left = start + (width - 18 * stage.blocks + 4) / 2;
    for (let b = 0; b < stage.blocks; b++) {
      const color = b === 0 ? COLORS.purple : COLORS.green;
      parts.push(
        `<rect x="${left + b * 18}" y="${y - 18}" width="14" height="14" rx="2" fill="${color}"/>` +
          svgText(left + b * 18 + 7, y - 7, b === 0 ? 'C' : 'I', 'font-size="10" fill="white"'),
      );
    }
  }
  link();
  const last = stages[stages.length - 1]?.filters[2] ?? 2048;
  const pooled = [Math.floor(h / 2), Math.floor(w / 2), last];
  column(96, COLORS.orange, ['AvgPool', '2×2'], shapeText(pooled));
  link();
  const flat = Math.floor(h / 2) * Math.floor(w / 2) * last;
  column(74, COLORS.orange, ['Flatten'], shapeText([flat]));
  link();
  column(96, COLORS.vermillion, ['Dense', `${classes}, softmax`], shapeText([classes]));
  const width = x + 10;
  const key = 'C: convolutional block · I: identity block · /2: stride 2';
  const legend = svgText(width / 2, 215, key, 'fill="#555"');
  return (
    `<div class="resnet-diagram"><svg xmlns="http://www.w3.org/2000/svg" ` +
    `viewBox="0 0 ${width} 230" width="${width}" role="img" aria-label="ResNet50" ` +
    'font-family="Helvetica, Arial, sans-serif" font-size="13">' +
    `<title>ResNet50</title>${ARROW_DEF}${parts.join('')}${legend}</svg></div>`
  );
}
