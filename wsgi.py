"""The app as Tickerbell's processes run it: the web app, plus the commands that start the
background processes (`flask worker`, `listener`, `scheduler`) and `flask demo`."""

from webapp.core.logs import json_from_the_start

json_from_the_start()  # first: LOG_FORMAT=json holds even for a start that fails

from webapp.config import join_running_metrics  # noqa: E402

join_running_metrics()  # first: a command from a second shell counts into make run's /metrics

from devtools.demo import demo  # noqa: E402
from webapp import create_app  # noqa: E402
from webapp.core import commands  # noqa: E402
from worker.cli import register  # noqa: E402

app = create_app()
register(app)
commands.register(app, [demo])
