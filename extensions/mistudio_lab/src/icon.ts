// The sidebar tab's icon: three bars (jobs at work), coloured by Lab's theme (jp-icon3).
import { LabIcon } from '@jupyterlab/ui-components';

import svg from '../style/icon.svg';

export const mistudioIcon = new LabIcon({ name: 'mistudio-lab:icon', svgstr: svg });
