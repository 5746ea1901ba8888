"""The app as Tickerbell's processes run it: the web app, plus the commands that start the
background processes (`flask worker`, `listener`, `scheduler`) and `flask demo`."""

from devtools.demo import demo
from webapp import create_app
from webapp.core import commands
from worker.cli import register

app = create_app()
register(app)
commands.register(app, [demo])
