"""Running one Lua script many times in one round trip, on one Redis or a Redis Cluster."""

from redis.exceptions import NoScriptError

from webapp.extensions import is_cluster


def run_all(r, script, calls):
    """Run `script` (from r.register_script) once per (keys, args) of `calls`, pipelined;
    returns the replies in order and raises the first error.

    EVALSHA goes in as a plain command: a Script in a pipeline would cost a SCRIPT EXISTS
    round trip on every execute, and on a cluster redis-py lets no Script run in one (there
    the command goes to the node that owns its first key, named, or redis-py would ask the
    server for every command's keys). A server that does not know the script yet (first
    use, a restart, a replica promoted by a failover) answers NOSCRIPT: the script is loaded
    (on every master) and those calls run again.
    """
    calls = list(calls)
    if not calls:
        return []
    if len(calls) == 1:  # one user's call (a single event): no pipeline to build and read
        script_keys, args = calls[0]
        return [script(keys=script_keys, args=args, client=r)]  # it loads itself on NOSCRIPT
    replies = _pipelined(r, script, calls)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        r.script_load(script.script)
        again = _pipelined(r, script, [calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _pipelined(r, script, calls):
    cluster = is_cluster(r)
    with r.pipeline(transaction=False) as pipe:
        for script_keys, args in calls:
            route = {"target_nodes": r.get_node_from_key(script_keys[0])} if cluster else {}
            pipe.execute_command("EVALSHA", script.sha, len(script_keys), *script_keys,
                                 *args, **route)
        return pipe.execute(raise_on_error=False)
