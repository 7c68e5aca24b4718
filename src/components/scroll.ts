import * as React from 'react';

/**
 * A ref whose element is scrolled into view when it first appears in the sidebar (the review
 * after staging, an error): at 900 px height it would otherwise start below the fold.
 */
export function useScrolledIntoView<T extends HTMLElement>(
  block: ScrollLogicalPosition = 'nearest'
): React.RefObject<T> {
  const ref = React.useRef<T>(null);
  React.useEffect(() => {
    ref.current?.scrollIntoView({ block, behavior: 'auto' });
  }, []);
  return ref;
}
