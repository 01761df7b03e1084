// A training's live curves in the main area, fed by the events WebSocket: history first, then live,
// deduplicated by seq (the protocol of mistudio.events.Subscription). Works for any training,
// whoever started it (a notebook, `mistudio train` in a terminal, another server).
import { Widget } from '@lumino/widgets';

import { Job, WireEvent, eventsSocketUrl, requestAPI } from './api';
import { LineChart } from './chart';
import { el, formatAge, formatNumber } from './dom';

const CURVES: [string, string][] = [
  ['loss', 'loss'],
  ['l0', 'L0'],
  ['dead_fraction', 'dead features (fraction)'],
  ['explained_variance', 'explained variance']
];
const RECONNECT_MS = [500, 1000, 2000, 5000];

export class TrainingView extends Widget {
  private readonly headline = el('div', 'mistudio-training-headline');
  private readonly stateLine = el('div', 'mistudio-training-state');
  private readonly metricsLine = el('div', 'mistudio-training-metrics');
  private readonly charts = CURVES.map(([key, label]) => new LineChart(key, label));
  private socket: WebSocket | null = null;
  private lastSeq = 0;
  private ended = false;
  private failures = 0;
  private timer: number | undefined;

  constructor(readonly trainingId: string, readonly channel: string = `training:${trainingId}`) {
    super();
    this.addClass('mistudio-training');
    this.id = `mistudio-training-${trainingId}`;
    this.title.label = `Training ${trainingId}`;
    this.title.closable = true;
    this.headline.textContent = `Training ${trainingId}`;
    const grid = el('div', 'mistudio-charts');
    grid.append(...this.charts.map(c => c.node));
    this.node.append(this.headline, this.stateLine, this.metricsLine, grid);
    this.node.dataset.trainingId = trainingId;
    this.setState('connecting');
    void this.loadJob();
    this.connect();
  }

  /** After a retry: the run goes on under the same id and channel; follow it again. */
  resume(): void {
    if (!this.ended || this.isDisposed) {
      return;
    }
    this.ended = false;
    this.failures = 0;
    this.setState('queued', 'retried');
    this.connect();
  }

  dispose(): void {
    this.ended = true;
    window.clearTimeout(this.timer);
    this.socket?.close();
    this.socket = null;
    super.dispose();
  }

  private async loadJob(): Promise<void> {
    try {
      const { job } = await requestAPI<{ job: Job }>(`jobs/${encodeURIComponent(this.trainingId)}`);
      if (!this.ended && this.node.dataset.state === 'connecting') {
        this.setState(job.state, job.error ?? undefined);
      }
    } catch (error) {
      this.metricsLine.textContent = `job record: ${(error as Error).message}`;
    }
  }

  private connect(): void {
    if (this.ended || this.isDisposed) {
      return;
    }
    const socket = new WebSocket(eventsSocketUrl(this.channel, this.lastSeq));
    this.socket = socket;
    socket.onopen = () => {
      this.failures = 0;
    };
    socket.onmessage = message => {
      let event: WireEvent;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (typeof event.seq !== 'number' || event.seq <= this.lastSeq) {
        return; // already shown (a reconnect's history overlapping what came live)
      }
      this.lastSeq = event.seq;
      this.node.dataset.lastSeq = String(event.seq);
      this.apply(event);
    };
    socket.onclose = () => {
      if (this.socket !== socket || this.ended || this.isDisposed) {
        return;
      }
      // The server went away (restarted, or Redis did): reopen after the last seq shown.
      const delay = RECONNECT_MS[Math.min(this.failures++, RECONNECT_MS.length - 1)];
      this.stateLine.dataset.reconnecting = 'true';
      if (this.failures > 1) {
        this.stateLine.textContent = `${this.node.dataset.state}: connection lost, reconnecting`;
      }
      this.timer = window.setTimeout(() => this.connect(), delay);
    };
  }

  private apply(event: WireEvent): void {
    const data = event.data ?? {};
    switch (event.type) {
      case 'training.progress':
        this.progress(data);
        break;
      case 'training.checkpoint':
        this.metricsLine.dataset.checkpoint = String(data.step);
        break;
      case 'training.completed':
        this.end('succeeded', data.duration ? `in ${formatAge(data.duration)}` : '');
        this.showMetrics(data.final_metrics ?? {}, data.step);
        break;
      case 'training.stopped':
        this.end('stopped', `${data.reason ?? ''} at step ${data.step}`);
        break;
      case 'training.error':
        this.end('failed', String(data.error ?? data.message ?? ''));
        break;
    }
  }

  private progress(data: { [key: string]: any }): void {
    delete this.stateLine.dataset.reconnecting;
    if (data.phase && data.phase !== 'training') {
      const done = data.phase_done ?? 0;
      const of = data.phase_total ? ` ${formatNumber(done)} of ${formatNumber(data.phase_total)}` : '';
      this.setState('running', `${data.phase}${of} ${data.phase_unit ?? ''}`.trim());
      return;
    }
    const eta = data.estimated_remaining_seconds;
    this.setState('running', `step ${data.step}/${data.total_steps}` + (eta ? ` · ETA ${formatAge(eta)}` : ''));
    const metrics = data.metrics ?? {};
    for (const chart of this.charts) {
      if (typeof metrics[chart.key] === 'number') {
        chart.add(data.step, metrics[chart.key]);
      }
    }
    this.showMetrics(metrics, data.step);
  }

  private showMetrics(metrics: { [key: string]: any }, step?: number): void {
    const parts = Object.entries(metrics)
      .filter(([, v]) => typeof v === 'number')
      .map(([k, v]) => `${k} ${formatNumber(v)}`);
    this.metricsLine.textContent = (step !== undefined ? `step ${step}: ` : '') + parts.join(' · ');
  }

  private end(state: string, detail: string): void {
    this.ended = true;
    this.setState(state, detail);
    this.socket?.close();
  }

  private setState(state: string, detail?: string): void {
    this.node.dataset.state = state;
    this.stateLine.textContent = detail ? `${state}: ${detail}` : state;
  }
}
