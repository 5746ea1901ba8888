import redis

from worker import redisd


def test_private_redis_starts_answers_ping_keeps_aof_and_stops(tmp_path):
    process, url = redisd.start(tmp_path / "redis")
    try:
        with redis.Redis.from_url(url) as client:
            assert client.ping()
            client.set("k", "v")
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("dir")["dir"] == str(tmp_path / "redis")
    finally:
        redisd.stop(process)
    assert process.returncode is not None
    assert any((tmp_path / "redis").glob("appendonly*"))
    with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
        try:
            client.ping()
        except redis.ConnectionError:
            pass
        else:
            raise AssertionError("redis still answers after stop")


def test_data_survives_a_restart(tmp_path):
    process, url = redisd.start(tmp_path / "redis")
    with redis.Redis.from_url(url) as client:
        client.set("kept", "yes")
    redisd.stop(process)
    process, url = redisd.start(tmp_path / "redis")
    try:
        with redis.Redis.from_url(url) as client:
            assert client.get("kept") == b"yes"
    finally:
        redisd.stop(process)


def test_bundled_binary_is_found_when_not_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = redisd.find_binary()
    assert binary is None or binary.endswith("redis-server")
