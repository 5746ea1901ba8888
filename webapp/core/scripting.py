"""Running one Lua script many times in one round trip, on one Redis or a Redis Cluster."""

from redis.exceptions import NoScriptError

from webapp.extensions import is_cluster


def run_all(r, script, calls):
    """Run `script` (from r.register_script) once per (keys, args) of `calls`, pipelined;
    returns the replies in order and raises the first error.

    On a cluster the pipeline splits by node, and redis-py neither loads scripts for it nor
    lets a Script run in it: EVALSHA goes in as a plain command, and a node that does not
    know the script yet (first use, a restart, a replica promoted by a failover) answers
    NOSCRIPT; those calls run again one by one, which loads it.
    """
    calls = list(calls)
    if not calls:
        return []
    cluster = is_cluster(r)
    with r.pipeline(transaction=False) as pipe:
        for script_keys, args in calls:
            if cluster:
                pipe.execute_command("EVALSHA", script.sha, len(script_keys), *script_keys, *args)
            else:
                script(keys=script_keys, args=args, client=pipe)
        replies = pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            replies[i] = script(keys=calls[i][0], args=calls[i][1])
        elif isinstance(reply, Exception):
            raise reply
    return replies
