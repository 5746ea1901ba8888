"""A real Redis Cluster: where keys land, what Lua may touch, and a master lost to a crash."""

import time

import pytest
import redis
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from devtools import rediscluster
from tests.cluster import connect

# Both keys name the alert in one hash tag, so they share a slot: the shape Lua needs.
SET_BOTH = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1"


def direct(address):
    host, port = address.split(":")
    return redis.Redis(host, int(port), decode_responses=True, single_connection_client=True)


def tag_per_master(rc):
    """One hash tag owned by each master: {alert:0}, {alert:1}, ... until all are covered."""
    tags = {}
    for i in range(1000):
        tags.setdefault(rc.get_node_from_key(f"{{alert:{i}}}").name, f"{{alert:{i}}}")
    return tags


def test_hash_tags_spread_keys_over_every_master(redis_cluster, rc):
    tags = tag_per_master(rc)
    assert sorted(tags) == sorted(redis_cluster.masters())
    for master, tag in tags.items():
        key = f"{tag}:last"
        assert rc.cluster_keyslot(key) == rc.cluster_keyslot(tag)  # the server hashes the tag
        rc.set(key, master)
        with direct(master) as owner:
            assert owner.get(key) == master  # stored on that master, not merely routed
        assert rc.get(key) == master


def test_lua_runs_when_its_keys_share_a_hash_tag(rc):
    assert rc.eval(SET_BOTH, 2, "{alert:7}:state", "{alert:7}:fired", "yes") == 1
    assert rc.mget_nonatomic("{alert:7}:state", "{alert:7}:fired") == ["yes", "yes"]


def test_lua_is_refused_when_its_keys_are_in_different_slots(rc):
    keys = ["{alert:7}:state", "{alert:8}:state"]
    owner = rc.get_node_from_key(keys[0]).name
    assert rc.keyslot(keys[0]) != rc.keyslot(keys[1])
    with pytest.raises(RedisClusterException, match="same key slot"):
        rc.eval(SET_BOTH, 2, *keys, "yes")  # redis-py refuses before sending
    with direct(owner) as node, pytest.raises(ClusterCrossSlotError):  # the CROSSSLOT reply
        node.eval(SET_BOTH, 2, *keys, "yes")  # and so does the server, slots not nodes


def replica_of(cluster, master_port):
    """The port of the live replica following the master on `master_port`."""
    for port, role in cluster.roles().items():
        if role[0] == "slave" and int(role[2]) == master_port:
            return port
    raise AssertionError(f"no replica follows {master_port}")


def test_keys_survive_their_master_killed_once_its_replica_acknowledged(doomed_cluster):
    rc = connect(doomed_cluster)
    keys = [f"price:{i}" for i in range(300)]
    for key in keys:
        rc.set(key, key)
    victim = rc.get_node_from_key(keys[0])
    lost_with_victim = [key for key in keys if rc.get_node_from_key(key).name == victim.name]
    successor = replica_of(doomed_cluster, victim.port)
    # WAIT blocks this connection until 1 replica has acknowledged every write the master
    # made up to this client's last one (the stream is ordered, so the fence covers all
    # the writes above), or until the timeout. It costs one replica round-trip per call and
    # does not make Redis consistent: it guarantees nothing on disk, and a failover may still
    # promote a replica that had not acknowledged. Here the only replica acknowledged.
    with direct(victim.name) as master:
        master.set(f"{{{keys[0]}}}:fence", "1")
        assert master.wait(1, 5000) == 1
    started = time.monotonic()
    doomed_cluster.kill(victim.port)
    rediscluster.wait_until(
        lambda: f"127.0.0.1:{successor}" in doomed_cluster.masters(), 30.0, "replica promoted"
    )
    doomed_cluster.wait_healthy(30.0)
    print(f"failover took {time.monotonic() - started:.2f} s")
    assert lost_with_victim
    # Single commands re-read the slot map after a refused connection and retry; redis-py
    # 8.1's pipelines (mget_nonatomic too) raise that first ConnectionError instead.
    assert [rc.get(key) for key in lost_with_victim] == lost_with_victim
    assert rc.get_node_from_key(keys[0]).name == f"127.0.0.1:{successor}"
    rc.close()
