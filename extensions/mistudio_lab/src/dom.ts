// DOM helpers: every piece of text goes in through textContent, never innerHTML (job ids, errors and
// alert messages are user or worker text).

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** "4 s", "3 min", "2 h 5 min", "3 d": an age or duration as a person reads it. */
export function formatAge(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '?';
  }
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min`;
  }
  if (s < 86400) {
    const m = Math.floor((s % 3600) / 60);
    return m ? `${Math.floor(s / 3600)} h ${m} min` : `${Math.floor(s / 3600)} h`;
  }
  return `${Math.floor(s / 86400)} d`;
}

/** A number for a metric line: 3 significant digits, no exponent for ordinary values. */
export function formatNumber(value: unknown): string {
  if (typeof value !== 'number' || !isFinite(value)) {
    return String(value ?? '?');
  }
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) {
    return value.toExponential(2);
  }
  return Number(value.toPrecision(3)).toString();
}

export function now(): number {
  return Date.now() / 1000;
}
