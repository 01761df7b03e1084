// A small SVG line chart (one series over training steps): a title with the latest value, the y range,
// the step range. Plain SVG keeps Plotly out of the bundle; redrawn on each new point.
import { el, formatNumber } from './dom';

const NS = 'http://www.w3.org/2000/svg';
const W = 320;
const H = 150;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: { [name: string]: string | number }): SVGElementTagNameMap[K] {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, String(value));
  }
  return node;
}

export class LineChart {
  readonly node = el('figure', 'mistudio-chart');
  private readonly caption = el('figcaption', 'mistudio-chart-title');
  private readonly plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
  private readonly line = svg('polyline', { class: 'mistudio-chart-line', fill: 'none' });
  private readonly labels = {
    yMax: svg('text', { x: PAD.left - 4, y: PAD.top + 8, 'text-anchor': 'end' }),
    yMin: svg('text', { x: PAD.left - 4, y: H - PAD.bottom, 'text-anchor': 'end' }),
    xMin: svg('text', { x: PAD.left, y: H - 4, 'text-anchor': 'start' }),
    xMax: svg('text', { x: W - PAD.right, y: H - 4, 'text-anchor': 'end' })
  };
  private points: [number, number][] = [];

  constructor(readonly key: string, private readonly label: string) {
    this.node.dataset.metric = key;
    const frame = svg('rect', {
      class: 'mistudio-chart-frame', x: PAD.left, y: PAD.top,
      width: W - PAD.left - PAD.right, height: H - PAD.top - PAD.bottom, fill: 'none'
    });
    this.plot.append(frame, this.line, ...Object.values(this.labels));
    for (const text of Object.values(this.labels)) {
      text.setAttribute('class', 'mistudio-chart-label');
    }
    this.node.append(this.caption, this.plot);
    this.draw();
  }

  get size(): number {
    return this.points.length;
  }

  /** A point at step x; a repeated step (a redelivered run resuming) replaces the later ones. */
  add(x: number, y: number): void {
    if (!isFinite(x) || !isFinite(y)) {
      return;
    }
    while (this.points.length && this.points[this.points.length - 1][0] >= x) {
      this.points.pop();
    }
    this.points.push([x, y]);
    this.draw();
  }

  private draw(): void {
    const last = this.points[this.points.length - 1];
    this.caption.textContent = last ? `${this.label}: ${formatNumber(last[1])}` : `${this.label}: no data yet`;
    this.node.dataset.points = String(this.points.length);
    if (!this.points.length) {
      this.line.setAttribute('points', '');
      Object.values(this.labels).forEach(t => (t.textContent = ''));
      return;
    }
    const xs = this.points.map(p => p[0]);
    const ys = this.points.map(p => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    // A range under 1 % of the values (a flat curve, or TopK's L0 of 16 dipping to 15.998) is
    // drawn in a window of 10 % around it: stretched to full height, float noise would look like a
    // fall between two axis labels that both read "16".
    const magnitude = Math.max(Math.abs(y0), Math.abs(y1)) || 1;
    if (y1 - y0 < magnitude * 0.01) {
      const mid = (y0 + y1) / 2;
      [y0, y1] = [mid - magnitude * 0.05, mid + magnitude * 0.05];
    }
    const sx = (x: number) => PAD.left + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
    const sy = (y: number) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
    this.line.setAttribute('points', this.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' '));
    this.labels.yMax.textContent = formatNumber(y1);
    this.labels.yMin.textContent = formatNumber(y0);
    this.labels.xMin.textContent = `step ${x0}`;
    this.labels.xMax.textContent = `${x1}`;
  }
}
