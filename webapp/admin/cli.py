"""`flask status`: the operations page's facts on the command line, for a second shell beside
`make run` or a monitoring check (exit 1 when something is unhealthy, and it says what)."""

import json

import click
from flask.cli import with_appcontext

from webapp.admin import jobs as failed_jobs
from webapp.admin import rates
from webapp.admin import status as ops
from webapp.exceptions import NotFound


def _age(ms):
    if ms is None:
        return "never"
    ms = max(ms, 0)  # a beat stamped by another host's clock, a little ahead of this one's
    return f"{ms / 1000:.1f} s ago" if ms < 60_000 else f"{ms // 60_000} min ago"


def _lag(ms):
    return "none yet" if ms is None else f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _rate(line):
    if line["rate"] is None:
        return "nothing tried"
    return f"{rates.percent(line['rate'])} of {line['finished']}"


def lines(facts):
    """The facts as text, a section a block."""
    out = [f"Tickerbell {facts['version']}: {facts['status']} (checked {facts['checked_at']})"]
    out += [f"  ! {problem}" for problem in facts["problems"]]
    out.append(f"Redis: {facts['redis_url']} ({facts['redis_url_from']})")
    cluster = facts["cluster"]
    if cluster and "nodes" in cluster:  # the data plane's, when it answers
        out.append(f"Redis Cluster: {cluster['state']}, {cluster['up']} of {cluster['nodes']} "
                   f"nodes up, {cluster['masters']} masters")
    listener = facts["listener"]
    if listener:
        out.append(f"Listener: {listener['connections']} connections, {listener['streams']} "
                   f"streams, last trade {_age(listener['trade_age_ms'])}, lag "
                   f"{_lag(listener['lag_ms'])}")
        out += [f"  shard {s['shard']}: {s['state']}, {s['connections']} connections, heartbeat "
                f"{_age(s['heartbeat_age_ms'])}, last trade {_age(s['trade_age_ms'])}, lag "
                f"{_lag(s['lag_ms'])}"
                for s in listener["shards"]]
    if facts["processes"]:
        out.append("Processes: " + ", ".join(f"{role} {r['alive']} alive ({r['restarts']} "
                                             "restarts)" for role, r in facts["processes"].items()))
    if facts["breakers"]:
        out.append("Breakers:")
        out += [f"  {b['name']:<24} {b['state']:<9} {b['failures']} failures"
                + (f"  last error{' (since recovered)' if b['recovered'] else ''}: "
                   f"{b['last_error'][:80]}"
                   if b["last_error"] else "")
                for b in facts["breakers"]]
    if facts["queues"]:
        out.append("Queues: " + ", ".join(f"{name} {q['waiting']} waiting / {q['failed']} failed"
                                          for name, q in facts["queues"].items()))
    if facts["deliveries"]:
        out.append("Deliveries (success, last hour | last day):")
        hour, day = facts["deliveries"]["hour"], facts["deliveries"]["day"]
        waiting = facts["deliveries"]["waiting"]
        out += [f"  {channel:<14} {_rate(hour.get(channel) or day[channel]):<18} | "
                f"{_rate(day[channel])}"
                + (f"  ({waiting[channel]} waiting to go out)" if waiting.get(channel) else "")
                for channel in day]
    out.append(f"Failed jobs: {len(facts['failed_jobs'])}")
    out += [f"  {j['ended_at'] or '?'}  {j['queue']:<8} {j['id']}  {j['function']}  {j['error']}"
            for j in facts["failed_jobs"]]
    return out


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="The facts as one JSON document.")
@with_appcontext
def status_command(as_json):
    """Listener, processes, breakers, queues, delivery success and failed jobs; exit status 1
    when something is unhealthy."""
    facts = ops.gather()
    if as_json:
        click.echo(json.dumps(facts, default=str, indent=2))
    else:
        click.echo("\n".join(lines(facts)))
    if facts["problems"]:
        raise SystemExit(1)


status_command.callback.explains_redis_errors = True  # a Redis away is a fact it reports


@click.group("jobs")
def jobs_group():
    """RQ's failed jobs, as the operations page shows them."""


@jobs_group.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every failed job, however many.")
@with_appcontext
def retry_command(job_ids, every):
    """Put failed jobs back on their queues (JOB_ID as flask status lists it), as the
    operations page's Retry does."""
    if every == bool(job_ids):
        raise click.UsageError("give JOB_ID ... or --all")
    missing, ids = 0, failed_jobs.failed_ids() if every else job_ids
    if not ids:
        click.echo("no failed jobs")
    for job_id in ids:
        try:
            failed_jobs.retry(job_id)
            click.echo(f"retried {job_id}")
        except NotFound:
            click.echo(f"no failed job {job_id}", err=True)
            missing += 1
    if missing:
        raise SystemExit(1)


COMMANDS = (status_command, jobs_group)
