// The left-sidebar panel: jobs (live progress, state, attempts, worker, age, cancel/retry), workers
// (heartbeat age, leader) and current alerts, from one `GET overview` every ~3 s while it is shown.
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { Alert, ApiError, Job, Overview, Queue, Worker, postJob, requestAPI } from './api';
import { el, formatAge, now } from './dom';
import { mistudioIcon } from './icon';

const POLL_MS = 3000;
const ACTIVE = new Set(['queued', 'running']);
const RETRYABLE = new Set(['failed', 'cancelled', 'dead']);

/** A job with a training channel has a curve view. */
export function isTraining(job: Job): boolean {
  return typeof job.channel === 'string' && job.channel.startsWith('training:');
}

/** What the panel asks of the rest of the extension (index.ts wires these to the training views). */
export interface SidebarEvents {
  open(job: Job): void; // a training's id was clicked
  retried(job: Job): void; // a training was retried: an open view follows the new attempt
}

class JobRow {
  readonly node = el('li', 'mistudio-job');
  private readonly title = el('span', 'mistudio-job-title');
  private readonly state = el('span', 'mistudio-state');
  private readonly bar = el('div', 'mistudio-progress-bar');
  private readonly barLabel = el('span', 'mistudio-progress-label');
  private readonly meta = el('div', 'mistudio-job-meta');
  private readonly summary = el('div', 'mistudio-job-summary');
  private readonly error = el('div', 'mistudio-job-error');
  private readonly cancel = el('button', 'jp-Button mistudio-button mistudio-cancel', 'Cancel');
  private readonly retry = el('button', 'jp-Button mistudio-button mistudio-retry', 'Retry');
  job: Job;

  constructor(job: Job, private readonly panel: JobsSidebar) {
    this.job = job;
    this.node.dataset.jobId = job.id;
    const head = el('div', 'mistudio-job-head');
    head.append(this.title, this.state);
    const progress = el('div', 'mistudio-progress');
    progress.append(this.bar, this.barLabel);
    const actions = el('div', 'mistudio-job-actions');
    actions.append(this.cancel, this.retry);
    this.node.append(head, progress, this.meta, this.summary, this.error, actions);
    this.title.addEventListener('click', () => {
      if (isTraining(this.job)) {
        this.panel.openTraining(this.job);
      }
    });
    this.cancel.addEventListener('click', () => void this.act('cancel'));
    this.retry.addEventListener('click', () => void this.act('retry'));
    this.update(job);
  }

  update(job: Job): void {
    this.job = job;
    this.title.textContent = job.id;
    this.title.title = isTraining(job) ? 'Open its live curves' : job.id;
    this.title.classList.toggle('mistudio-link', isTraining(job));
    this.state.textContent = job.state;
    this.state.dataset.state = job.state;
    this.node.dataset.state = job.state;
    const fraction = typeof job.progress === 'number' ? Math.min(1, Math.max(0, job.progress)) : null;
    this.bar.style.width = `${fraction === null ? 0 : fraction * 100}%`;
    // One decimal under 10 %, so the first steps of a long run show as moving.
    const percent = fraction === null ? '' : (fraction * 100).toFixed(fraction < 0.1 ? 1 : 0);
    this.barLabel.textContent = fraction === null ? '' : `${percent} %`;
    this.node.dataset.progress = fraction === null ? '' : fraction.toFixed(4);
    const age = job.created_at ? formatAge(now() - job.created_at) : '?';
    const where = job.worker ? `worker ${job.worker}` : 'no worker yet';
    const parts = [job.task, `attempt ${job.attempts ?? 0}`, where, job.device, `age ${age}`];
    this.meta.textContent = parts.filter(Boolean).join(' · ');
    const summary = [job.summary, job.note].filter(Boolean).join(' · ');
    this.summary.textContent = summary;
    this.summary.hidden = !summary;
    this.error.textContent = job.error ?? '';
    this.error.title = job.error ?? ''; // the whole error on hover (the row shows three lines)
    this.error.hidden = !job.error;
    this.cancel.hidden = !ACTIVE.has(job.state);
    this.retry.hidden = !RETRYABLE.has(job.state);
  }

  private async act(action: 'cancel' | 'retry'): Promise<void> {
    this.cancel.disabled = this.retry.disabled = true;
    try {
      const { job } = await postJob(this.job.id, action);
      this.update(job);
      if (action === 'retry' && isTraining(job)) {
        this.panel.events.retried(job);
      }
      this.panel.say('');
    } catch (error) {
      this.panel.say(`${action} ${this.job.id}: ${(error as Error).message}`);
    } finally {
      this.cancel.disabled = this.retry.disabled = false;
      void this.panel.refresh();
    }
  }
}

export class JobsSidebar extends Widget {
  private readonly status = el('div', 'mistudio-status');
  private readonly jobsList = el('ul', 'mistudio-jobs');
  private readonly workersList = el('ul', 'mistudio-workers');
  private readonly alertsList = el('ul', 'mistudio-alerts');
  private readonly leaderLine = el('div', 'mistudio-leader');
  private readonly queuesLine = el('div', 'mistudio-queues');
  private readonly rows = new Map<string, JobRow>();
  private readonly poll: Poll;
  private lastError = '';

  constructor(readonly events: SidebarEvents) {
    super();
    this.id = 'mistudio-sidebar';
    this.addClass('mistudio-sidebar');
    this.title.icon = mistudioIcon;
    this.title.caption = 'miStudio: jobs, workers, alerts';
    const header = el('div', 'mistudio-header');
    header.append(el('h2', '', 'miStudio'), this.status);
    this.node.append(
      header,
      this.section('Jobs', this.jobsList),
      this.section('Workers', this.leaderLine, this.queuesLine, this.workersList),
      this.section('Alerts', this.alertsList)
    );
    this.poll = new Poll({
      factory: () => this.load(),
      frequency: { interval: POLL_MS, backoff: true, max: 30_000 },
      // Hidden panel or hidden browser tab: no requests (they count against the API tier).
      standby: () => !this.isVisible || document.hidden,
      name: 'mistudio-lab:overview'
    });
  }

  openTraining(job: Job): void {
    this.events.open(job);
  }

  /** A line under the title: why the panel is stale, or a refused action. */
  say(text: string): void {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  refresh(): Promise<void> {
    return this.poll.refresh();
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  private section(name: string, ...children: HTMLElement[]): HTMLElement {
    const section = el('section', `mistudio-section mistudio-section-${name.toLowerCase()}`);
    section.append(el('h3', '', name), ...children);
    return section;
  }

  private async load(): Promise<void> {
    let overview: Overview;
    try {
      overview = await requestAPI<Overview>('overview');
    } catch (error) {
      const e = error as ApiError;
      this.lastError = e.status === 429 && e.retryAfter !== null
        ? `rate limited: retrying in ${e.retryAfter} s`
        : `not updated: ${e.message}`;
      this.say(this.lastError);
      throw error; // the poll backs off
    }
    if (this.lastError) {
      this.lastError = '';
      this.say('');
    }
    this.renderJobs(overview.jobs ?? []);
    this.renderWorkers(overview.workers ?? [], overview.leader, overview.queues ?? []);
    this.renderAlerts(overview.alerts ?? []);
  }

  private renderJobs(jobs: Job[]): void {
    const seen = new Set<string>();
    jobs.forEach((job, index) => {
      seen.add(job.id);
      let row = this.rows.get(job.id);
      if (row) {
        row.update(job);
      } else {
        row = new JobRow(job, this);
        this.rows.set(job.id, row);
      }
      // Keep the server's order (newest first) without rebuilding rows a click may be on.
      if (this.jobsList.children[index] !== row.node) {
        this.jobsList.insertBefore(row.node, this.jobsList.children[index] ?? null);
      }
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.node.remove();
        this.rows.delete(id);
      }
    }
    this.jobsList.dataset.empty = jobs.length ? '' : 'No jobs yet: `mistudio train` or jobs.submit(...)';
  }

  private renderWorkers(workers: Worker[], leader: Overview['leader'], queues: Queue[]): void {
    const leaderId = leader ? String(leader.node ?? leader.id ?? '') : '';
    this.leaderLine.textContent = leaderId
      ? `leader: ${leaderId}` + (leader?.term !== undefined ? ` (term ${leader.term})` : '')
      : 'leader: none (no worker is coordinating)';
    this.queuesLine.replaceChildren(...queues.map(q => el('div', 'mistudio-queue', describeQueue(q))));
    const items = workers.map(worker => {
      const item = el('li', 'mistudio-worker');
      item.dataset.workerId = worker.id;
      const name = el('span', 'mistudio-worker-name', worker.id);
      item.append(name);
      if (worker.leader || (leaderId && worker.id === leaderId)) {
        item.append(el('span', 'mistudio-badge mistudio-leader-badge', 'leader'));
      }
      const details = [
        worker.device,
        (worker.queues ?? []).join(', '),
        worker.busy ? 'busy' : 'idle',
        `heartbeat ${formatAge(worker.heartbeat_age_s)} ago`
      ].filter(Boolean);
      item.append(el('div', 'mistudio-worker-meta', details.join(' · ')));
      return item;
    });
    this.workersList.replaceChildren(...items);
    this.workersList.dataset.empty = workers.length ? '' : 'No worker is alive: `mistudio up`';
  }

  private renderAlerts(alerts: Alert[]): void {
    const items = alerts.map(alert => {
      const item = el('li', 'mistudio-alert');
      item.dataset.level = String(alert.level ?? '');
      item.title = String(alert.name ?? '');
      item.append(
        el('span', 'mistudio-badge', String(alert.level ?? 'alert')),
        el('span', 'mistudio-alert-text', String(alert.message || alert.name || ''))
      );
      return item;
    });
    this.alertsList.replaceChildren(...items);
    this.alertsList.dataset.empty = alerts.length ? '' : 'No alerts';
  }
}

/** "queue gpu: 2 queued, 1 running" */
function describeQueue(queue: Queue): string {
  const parts = [`${queue.queued ?? 0} queued`, `${queue.in_flight ?? 0} running`];
  if (queue.scheduled) {
    parts.push(`${queue.scheduled} scheduled`);
  }
  if (queue.dead) {
    parts.push(`${queue.dead} dead`);
  }
  return `queue ${queue.name}: ${parts.join(', ')}`;
}
