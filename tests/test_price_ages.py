"""Every price on the pages carries its age, so a quiet or dead feed never looks live."""

from webapp import clock, keys
from webapp.alerts import service as alerts
from webapp.extensions import get_redis
from webapp.market import tickers


def test_age_text_reads_like_a_person():
    now = 10_000_000
    assert tickers.age_text(None) == "no trade seen yet"
    assert tickers.age_text(now - 4_000, now) == "4 s ago"
    assert tickers.age_text(now - 180_000, now) == "3 min ago"
    assert tickers.age_text(now - 7_200_000, now) == "2 h ago"
    assert tickers.volume_text("95216.03110674") == "95,216.03"


def test_alerts_table_shows_each_value_with_its_age(client, app, auth):
    uid = auth.create()
    auth.login()
    with app.app_context():
        alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 70000})
        alerts.create_alert(uid, {"symbol": "ETHUSDT", "type": "volume_above", "price": 1e6})
        alerts.create_alert(uid, {"symbol": "SOLUSDT", "type": "below", "price": 100})
        now = clock.now_ms()
        get_redis().hset(keys.price("BTCUSDT"), mapping={"price": "65000.1", "ts": now - 120_000})
        get_redis().hset(keys.price("ETHUSDT"), mapping={
            "price": "2500", "ts": now, "volume": "95216.03110674", "vts": now - 5_000})
    page = client.get("/alerts/").get_data(as_text=True)
    assert "65000.1" in page and "2 min ago" in page
    assert "95,216.03" in page and "2500" not in page  # a volume alert shows the volume
    assert "no trade seen yet" in page  # SOLUSDT
    assert page.count("data-age") == 3


def test_times_are_entered_and_shown_in_the_users_zone(client, app, auth):
    from datetime import datetime

    from tests.conftest import csrf_token
    from webapp.extensions import db
    from webapp.models import Alert, Preference

    uid = auth.create()
    auth.login()
    with app.app_context():
        db.session.add(Preference(user_id=uid, timezone="Asia/Tokyo"))
        db.session.commit()
    page = client.get("/alerts/").get_data(as_text=True)
    assert '<meta name="tz" content="Asia/Tokyo">' in page and "your time: Asia/Tokyo" in page
    answer = client.post("/alerts/", data={
        "csrf_token": csrf_token(client, "/alerts/"), "symbol": "BTCUSDT", "type": "above",
        "price": "70000", "expires_at": "2030-01-01T09:00"})
    assert answer.status_code == 302
    with app.app_context():
        alert = db.session.scalar(db.select(Alert).where(Alert.user_id == uid))
        assert alert.expires_at == datetime(2030, 1, 1, 0, 0)  # 09:00 in Tokyo is 00:00 UTC
    page = client.get("/alerts/").get_data(as_text=True)
    assert '<time datetime="2030-01-01T00:00:00Z"' in page
