/** Small display helpers shared by the components. */

import { formatFileSize } from '@jupyterlab/filebrowser';

/**
 * A byte count as the file browser writes it (`97.7 MB`: powers of 1024, one decimal): the file
 * browser's own function, so the sidebar, the file browser, the magic and the widget agree
 * (`jupyter_modelsave/_display.py` is its Python twin).
 */
export function formatBytes(bytes: number): string {
  return formatFileSize(bytes, 1, 1024);
}

/** `1.2M`-style count. */
export function formatCount(n: number): string {
  if (n < 1000) {
    return String(n);
  }
  const units = ['K', 'M', 'B'];
  let value = n;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toPrecision(3)}${units[unit]}`;
}

/** A number from a report (which writes `inf`/`nan` as strings). */
export function formatNumber(value: number | string | null): string {
  if (value === null) {
    return '–';
  }
  if (typeof value === 'string') {
    return value;
  }
  if (value === 0) {
    return '0';
  }
  return Math.abs(value) >= 0.01 && Math.abs(value) < 1000
    ? value.toPrecision(3)
    : value.toExponential(2);
}

/** `[2, 3, 32, 32]`. */
export function formatShape(shape: number[]): string {
  return `[${shape.join(', ')}]`;
}

/** The shapes of a call's tensors: `[2, 3, 32, 32], [2, 16]`. */
export function formatShapes(specs: { shape: number[] }[]): string {
  return specs.map(s => formatShape(s.shape)).join(', ');
}
