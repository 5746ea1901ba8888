"""The app as Tickerbell's processes run it: the web app, plus the commands that start the
background processes (`flask worker`, `listener`, `scheduler`) and `flask demo`."""

from webapp.config import join_running_metrics

join_running_metrics()  # first: a command from a second shell counts into make run's /metrics

from devtools.demo import demo  # noqa: E402
from webapp import create_app  # noqa: E402
from webapp.core import commands  # noqa: E402
from worker.cli import register  # noqa: E402

app = create_app()
register(app)
commands.register(app, [demo])
