"""Single script calls sent straight to the node of their slot (webapp/core/scripting.py
SlotCalls): right after a slot moves to another master, and after a master fails over, each
call runs once, on the node that owns its slot now."""

import time

import redis

from tests.cluster import data_plane
from webapp.core.scripting import SlotCalls

# counts its runs on the node it runs on
COUNT = "return redis.call('INCR', KEYS[1])"


def node_id(client, node):
    return node.redis_connection.execute_command("CLUSTER MYID")


def test_a_slot_moved_to_another_master_is_followed(doomed_cluster):
    client = data_plane(doomed_cluster)
    call, script, key = SlotCalls(client), client.register_script(COUNT), "{moving}runs"
    assert call(script, [key], []) == 1
    source = client.get_node_from_key(key)
    target = next(n for n in client.get_primaries() if n.name != source.name)
    slot = client.keyslot(key)
    client.delete(key)  # an empty slot moves without MIGRATE
    for node in client.get_primaries() + client.get_replicas():
        node.redis_connection.execute_command("CLUSTER SETSLOT", slot, "NODE",
                                              node_id(client, target))
    # the client's map still names the source, which now answers MOVED: the call is not run
    # there, it is sent on, and runs once on the target
    assert call(script, [key], []) == 1
    assert client.get_node_from_key(key).name == target.name
    assert call(script, [key], []) == 2
    client.close()


def test_after_a_master_fails_over_the_calls_reach_its_replica(doomed_cluster):
    client = data_plane(doomed_cluster)
    call, script, key = SlotCalls(client), client.register_script(COUNT), "{failing}runs"
    assert call(script, [key], []) == 1
    old = client.get_node_from_key(key)
    doomed_cluster.kill(int(old.port))
    failures, deadline = 0, time.monotonic() + 30
    while True:  # what the matcher does: a failed call is retried with the next tick
        try:
            runs = call(script, [key], [])
            break
        except redis.RedisError:
            failures += 1
            assert time.monotonic() < deadline, "the cluster never failed over"
            time.sleep(0.05)
    assert 1 <= failures and runs in (1, 2)  # the replica may have lost the first INCR
    assert client.get_node_from_key(key).name != old.name
    assert call(script, [key], []) == runs + 1
    client.close()
