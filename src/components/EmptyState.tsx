import * as React from 'react';

export interface IEmptyStateProps {
  message: string;
}

/** A centred hint shown when there is nothing to list. */
export function EmptyState({ message }: IEmptyStateProps): JSX.Element {
  return <p className="jp-ModelSave-empty">{message}</p>;
}
