import { Clipboard } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { copyIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatBytes } from '../format';
import { KernelAPI } from '../protocol';
import { DivergencePanel } from './DivergencePanel';
import { ParityTable } from './ParityTable';
import { useScrolledIntoView } from './scroll';
import { DiffView, ReleaseFacts } from './ReleaseCheck';

export interface IReviewPanelProps {
  staged: KernelAPI.IStagedReply;
  /** The folder the form starts with (relative to the Jupyter root). */
  defaultFolder: string;
  written: KernelAPI.IWrittenReply | null;
  error: KernelAPI.IErrorInfo | null;
  /** Open the graph; with `nodes`, select and centre them. Resolves to the count selected. */
  onGraph: (nodes?: string[]) => Promise<number>;
  onDownload: () => void;
  onDownloadWritten: (path: string) => void;
  onWrite: (args: Omit<KernelAPI.IWriteArgs, 'id'>) => Promise<void>;
  onDiscard: () => void;
  /** The staged export against the newest artifact of its name in a folder (null: none). */
  onDiff: (folder: string) => Promise<KernelAPI.IDiff | null>;
  /** Precisions offered as variants of this export, and how to stage one. */
  variants: string[];
  onVariant: (precision: string) => void;
  trans: TranslationBundle;
}

/** Wait this long after the folder was typed before comparing with it. */
const DIFF_DELAY_MS = 400;

const VERSION = /^\d+\.\d+\.\d+$/;

/** The staged export: parity, exporter, warnings, size and sha256; Graph, Write, Download, Discard. */
export function ReviewPanel(props: IReviewPanelProps): JSX.Element {
  const { staged, written, error, trans } = props;
  const report = staged.report;
  const failed = report !== null && !report.passed;
  const [folder, setFolder] = React.useState(props.defaultFolder);
  const [version, setVersion] = React.useState('');
  const [overwrite, setOverwrite] = React.useState(false);
  const [allowMismatch, setAllowMismatch] = React.useState(false);
  const [writing, setWriting] = React.useState(false);
  const ref = useScrolledIntoView<HTMLElement>('start');
  const [diff, setDiff] = React.useState<{
    folder: string;
    diff: KernelAPI.IDiff | null;
    error: string | null;
  } | null>(null);
  const folderError =
    folder.startsWith('/') || folder.split('/').includes('..')
      ? trans.__('A folder inside the Jupyter root, e.g. exports.')
      : '';
  const versionError =
    version && !VERSION.test(version)
      ? trans.__('A version looks like 1.2.3; empty: the next one.')
      : '';
  React.useEffect(() => {
    if (folderError || written) {
      return; // after Write the written artifact is the newest: keep what was shown
    }
    let live = true;
    const timer = setTimeout(() => {
      props.onDiff(folder).then(
        found => live && setDiff({ folder, diff: found, error: null }),
        (error: unknown) =>
          live &&
          setDiff({
            folder,
            diff: null,
            error: (error as Error).message ?? String(error)
          })
      );
    }, DIFF_DELAY_MS);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [folder, folderError]);
  const canWrite =
    !written &&
    !writing &&
    !folderError &&
    !versionError &&
    (!failed || allowMismatch);

  return (
    <section
      className="jp-ModelSave-review"
      aria-label={trans.__('Staged export')}
      data-staging-id={staged.id}
      ref={ref}
    >
      <div
        className="jp-ModelSave-verdictLine"
        data-passed={report ? report.passed : true}
        role="status"
      >
        <span aria-hidden="true" className="jp-ModelSave-mark">
          {report === null || report.passed ? '✓' : '✗'}
        </span>
        <span>
          {report === null
            ? trans.__('Staged (no parity check)')
            : report.passed
              ? trans.__('Parity passed on %1 probes', report.probes.length)
              : trans.__('Parity FAILED')}
        </span>
      </div>

      {report && <ParityTable report={report} trans={trans} />}

      {report && (report.localization || report.first_divergence) && (
        <DivergencePanel
          report={report}
          hasGraph={!!staged.graph}
          onShowNodes={nodes => props.onGraph(nodes)}
          trans={trans}
        />
      )}

      {report && report.diagnosis.length > 0 && (
        <ul
          className="jp-ModelSave-diagnosis"
          aria-label={trans.__('Diagnosis')}
          role="alert"
        >
          {report.diagnosis.map((d, i) => (
            <li key={i}>{d}</li>
          ))}
        </ul>
      )}

      <dl className="jp-ModelSave-facts">
        <dt>{trans.__('Format')}</dt>
        <dd>
          {staged.format}
          {staged.opset !== null && trans.__(', opset %1', staged.opset)}
        </dd>
        <dt>{trans.__('Exporter')}</dt>
        <dd>{staged.exporter}</dd>
        <dt>{trans.__('Size')}</dt>
        <dd title={trans.__('%1 bytes', staged.size_bytes.toLocaleString())}>
          {formatBytes(staged.size_bytes)}
        </dd>
        <dt>{trans.__('sha256')}</dt>
        <dd className="jp-ModelSave-shaLine">
          <code
            className="jp-ModelSave-sha"
            aria-label={trans.__('sha256')}
            title={staged.sha256}
          >
            {staged.sha256}
          </code>
          <button
            type="button"
            className="jp-ModelSave-iconButton"
            aria-label={trans.__('Copy the sha256')}
            title={trans.__('Copy the sha256')}
            onClick={() => Clipboard.copyToSystem(staged.sha256)}
          >
            <copyIcon.react tag="span" elementSize="small" />
          </button>
        </dd>
      </dl>

      <ReleaseFacts
        staged={staged}
        variants={props.variants}
        onVariant={props.onVariant}
        trans={trans}
      />

      {staged.warnings.length > 0 && (
        <details className="jp-ModelSave-warnings">
          <summary>
            {trans._n('%1 warning', '%1 warnings', staged.warnings.length)}
          </summary>
          <ul>
            {staged.warnings.map((w, i) => (
              <li key={i}>{w}</li>
            ))}
          </ul>
        </details>
      )}

      <div className="jp-ModelSave-actions">
        {staged.graph && (
          <button
            type="button"
            className="jp-Button jp-mod-styled"
            onClick={() => void props.onGraph()}
          >
            {trans.__('Graph')}
          </button>
        )}
        <button
          type="button"
          className="jp-Button jp-mod-styled"
          onClick={props.onDownload}
          title={
            staged.folder_artifact
              ? trans.__('Save to this computer as one zip of its files.')
              : trans.__(
                  'Save to this computer; check it against the sha256 above.'
                )
          }
        >
          {trans.__('Download')}
        </button>
      </div>

      {!folderError && (
        <DiffView
          diff={diff?.folder === folder ? diff.diff : undefined}
          error={diff?.folder === folder ? diff.error : null}
          name={staged.name}
          folder={folder}
          trans={trans}
        />
      )}

      <fieldset className="jp-ModelSave-destination" disabled={!!written}>
        <legend>{trans.__('Write to the Jupyter root')}</legend>
        <div className="jp-ModelSave-field">
          <label htmlFor="jp-ModelSave-folder">{trans.__('Folder')}</label>
          <input
            id="jp-ModelSave-folder"
            type="text"
            className="jp-mod-styled"
            value={folder}
            aria-invalid={!!folderError}
            onChange={e => setFolder(e.target.value)}
          />
          <small
            className={folderError ? 'jp-ModelSave-error' : 'jp-ModelSave-hint'}
          >
            {folderError ||
              trans.__('Relative to the Jupyter root; created if missing.')}
          </small>
        </div>
        <div className="jp-ModelSave-field">
          <label htmlFor="jp-ModelSave-version">{trans.__('Version')}</label>
          <input
            id="jp-ModelSave-version"
            type="text"
            className="jp-mod-styled"
            placeholder={trans.__('next')}
            value={version}
            aria-invalid={!!versionError}
            onChange={e => setVersion(e.target.value)}
          />
          <small
            className={
              versionError ? 'jp-ModelSave-error' : 'jp-ModelSave-hint'
            }
          >
            {versionError ||
              trans.__('Empty: the next one (1.0.0 for a new name).')}
          </small>
        </div>
        <label className="jp-ModelSave-check">
          <input
            type="checkbox"
            checked={overwrite}
            onChange={e => setOverwrite(e.target.checked)}
          />
          {trans.__('Overwrite an existing file')}
        </label>
        {failed && (
          <label className="jp-ModelSave-check">
            <input
              type="checkbox"
              checked={allowMismatch}
              onChange={e => setAllowMismatch(e.target.checked)}
            />
            {trans.__('Write although parity failed')}
          </label>
        )}
      </fieldset>

      {error && (
        <div className="jp-ModelSave-errorBox" role="alert">
          <strong>{error.type}</strong>: {error.message}
        </div>
      )}

      {written && (
        <div className="jp-ModelSave-written" role="status">
          {trans.__('Written to')} <PathText path={written.path} />
          <button
            type="button"
            className="jp-Button jp-mod-styled"
            onClick={() => props.onDownloadWritten(written.path)}
          >
            {trans.__('Download file')}
          </button>
        </div>
      )}

      <div className="jp-ModelSave-actions">
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-accept"
          disabled={!canWrite}
          onClick={async () => {
            setWriting(true);
            await props.onWrite({
              folder,
              version: version || undefined,
              overwrite,
              allow_mismatch: allowMismatch
            });
            setWriting(false);
          }}
        >
          {trans.__('Write')}
        </button>
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-reject"
          onClick={props.onDiscard}
        >
          {written ? trans.__('Done') : trans.__('Discard')}
        </button>
      </div>
    </section>
  );
}

/** A path that wraps after a `/`, never inside a file name (unless one name is wider than the
 * sidebar). */
function PathText({ path }: { path: string }): JSX.Element {
  const parts = path.split('/');
  return (
    <code className="jp-ModelSave-path">
      {parts.map((part, i) => (
        <React.Fragment key={i}>
          {i < parts.length - 1 ? (
            <>
              {part}/<wbr />
            </>
          ) : (
            <span className="jp-ModelSave-fileName">{part}</span>
          )}
        </React.Fragment>
      ))}
    </code>
  );
}
