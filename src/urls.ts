import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { API_NAMESPACE } from './tokens';

/** `<base_url>modelsave/<parts>` as an absolute URL of this page's origin. */
export function apiUrl(...parts: string[]): string {
  const { baseUrl } = ServerConnection.makeSettings();
  return new URL(URLExt.join(baseUrl, API_NAMESPACE, ...parts), location.href)
    .href;
}

/** The bytes of a staged export: `artifact` (download) or `graph` (Netron). */
export function stagedUrl(id: string, which: 'artifact' | 'graph'): string {
  return apiUrl('staged', id, which);
}

/** A written artifact, by its path relative to the server root. */
export function downloadUrl(path: string): string {
  return apiUrl('download', ...path.split('/').map(encodeURIComponent));
}

/** Netron's viewer on a model URL; `identifier` (a file name) tells Netron the format. */
export function netronUrl(modelUrl: string, identifier: string): string {
  const query = URLExt.objectToQueryString({ url: modelUrl, identifier });
  return apiUrl('netron/') + query;
}

/**
 * Let the browser save `url` (a same-origin URL; the login cookie goes with it)
 * under the name the server gives (a folder artifact comes as `<name>.zip`).
 */
export function saveToComputer(url: string): void {
  const link = document.createElement('a');
  link.href = url;
  link.download = '';
  link.rel = 'noopener';
  document.body.appendChild(link);
  link.click();
  link.remove();
}
