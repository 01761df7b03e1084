// The plugin: the miStudio panel in the left area, and a command that opens a training's live view.
import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';

import { mistudioIcon } from './icon';
import { JobsSidebar } from './sidebar';
import { TrainingView } from './training';

const OPEN_TRAINING = 'mistudio:open-training';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mistudio-lab:plugin',
  description: 'miStudio jobs, workers and alerts in the sidebar; live training curves.',
  autoStart: true,
  requires: [ILabShell],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const tracker = new WidgetTracker<MainAreaWidget<TrainingView>>({ namespace: 'mistudio-training' });

    app.commands.addCommand(OPEN_TRAINING, {
      label: args => (args.id ? `miStudio: training ${args.id}` : 'miStudio: open a training'),
      icon: mistudioIcon,
      execute: args => {
        const id = String(args.id ?? '');
        if (!id) {
          return;
        }
        const open = tracker.find(w => w.content.trainingId === id);
        if (open) {
          shell.activateById(open.id);
          return open;
        }
        const channel = typeof args.channel === 'string' ? args.channel : undefined;
        const widget = new MainAreaWidget({ content: new TrainingView(id, channel) });
        widget.id = `mistudio-training-panel-${id}`;
        widget.title.label = `Training ${id}`;
        widget.title.icon = mistudioIcon;
        void tracker.add(widget);
        shell.add(widget, 'main');
        shell.activateById(widget.id);
        return widget;
      }
    });

    const sidebar = new JobsSidebar({
      open: job => void app.commands.execute(OPEN_TRAINING, { id: job.id, channel: job.channel ?? undefined }),
      retried: job => tracker.find(w => w.content.trainingId === job.id)?.content.resume()
    });
    shell.add(sidebar, 'left', { rank: 300 });

    if (restorer) {
      restorer.add(sidebar, sidebar.id);
      void restorer.restore(tracker, {
        command: OPEN_TRAINING,
        args: w => ({ id: w.content.trainingId, channel: w.content.channel }),
        name: w => w.content.trainingId
      });
    }
    if (palette) {
      palette.addItem({ command: 'mistudio:show-sidebar', category: 'miStudio' });
    }
    app.commands.addCommand('mistudio:show-sidebar', {
      label: 'miStudio: show the jobs panel',
      execute: () => shell.activateById(sidebar.id)
    });
  }
};

export default plugin;
