// The server extension's REST + WebSocket contract (mistudio_lab/handlers.py), typed for the frontend.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const API_PATH = 'mistudio/api';

export interface Job {
  id: string;
  task: string;
  state: string;
  attempts: number;
  worker: string | null;
  device: string | null;
  progress: number | null; // 0..1
  created_at: number | null; // epoch seconds
  updated_at: number | null;
  channel: string | null; // e.g. "training:tr_abc"
  error: string | null;
  summary: string | null;
  note?: string | null; // why it was requeued ("requeued: lease expired on attempt 1")
}

export interface Worker {
  id: string;
  device: string | null;
  heartbeat_age_s: number | null;
  queues: string[] | null;
  busy: boolean | null;
  leader?: boolean;
  host?: string | null;
}

export interface Queue {
  name: string;
  queued?: number | null;
  in_flight?: number | null;
  scheduled?: number | null;
  dead?: number | null;
}

export interface Alert {
  name?: string;
  level?: string;
  message?: string;
  [key: string]: unknown;
}

export interface Overview {
  jobs: Job[];
  workers: Worker[];
  leader: { node?: string; term?: number; ttl?: number; [key: string]: unknown } | null;
  alerts: Alert[];
  queues: Queue[];
}

/** An event as mistudio.events publishes it (its wire dict). */
export interface WireEvent {
  seq: number;
  type: string;
  data: { [key: string]: any };
  timestamp?: number;
  channel?: string;
}

/** A refused or failed request: the server's error body, and Retry-After on a 429. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: { field?: string; problem?: string; fix?: string },
    readonly retryAfter: number | null
  ) {
    super(ApiError.describe(status, detail));
  }

  static describe(status: number, detail: { field?: string; problem?: string; fix?: string }): string {
    const what = [detail.field, detail.problem].filter(Boolean).join(': ');
    const text = what || `HTTP ${status}`;
    return detail.fix ? `${text}. Fix: ${detail.fix}` : text;
  }
}

/** One REST call under {base_url}mistudio/api/; makeRequest adds the XSRF header to writes. */
export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, API_PATH, path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(0, { problem: `the Jupyter server is unreachable (${error})` }, null);
  }
  const text = await response.text();
  let body: any = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { error: { problem: text.slice(0, 200) } };
  }
  if (!response.ok) {
    const retry = response.headers.get('Retry-After');
    throw new ApiError(response.status, body.error ?? {}, retry === null ? null : Number(retry));
  }
  return body as T;
}

export function postJob(id: string, action: 'cancel' | 'retry'): Promise<{ job: Job }> {
  return requestAPI<{ job: Job }>(`jobs/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: '{}' });
}

/** The socket of one channel: history after `after` first, then live. */
export function eventsSocketUrl(channel: string, after: number): string {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.wsUrl, API_PATH, 'events') +
    `?channel=${encodeURIComponent(channel)}&after=${after}`;
  // As Lab's own kernel sockets: the token goes in the URL where the page was opened with one.
  if (settings.appendToken && settings.token) {
    url += `&token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}
