/** Small display helpers shared by the components. */

/** `12.3 MB`-style size. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toPrecision(3)} ${units[unit]}`;
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
