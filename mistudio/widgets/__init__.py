"""Notebook widgets: live views that listen on the kernel's event loop."""

from mistudio.widgets.job_view import JobProgressView
from mistudio.widgets.jobs_view import JobsView
from mistudio.widgets.monitor import TrainingMonitor
from mistudio.widgets.sweep_monitor import SweepMonitor
from mistudio.widgets.system_view import SystemView

__all__ = ["JobProgressView", "JobsView", "SweepMonitor", "SystemView", "TrainingMonitor"]
from mistudio.widgets.browser import FeatureBrowser  # noqa: E402

__all__ += ["FeatureBrowser"]
from mistudio.widgets.steering import SteeringPanel  # noqa: E402

__all__ += ["SteeringPanel"]
