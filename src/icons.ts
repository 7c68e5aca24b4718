import { LabIcon } from '@jupyterlab/ui-components';

import modelSaveSvg from '../style/icons/modelsave.svg';

/** The sidebar tab icon: a floppy disk holding a small network graph. */
export const modelSaveIcon = new LabIcon({
  name: 'jupyter_modelsave:icon',
  svgstr: modelSaveSvg
});
