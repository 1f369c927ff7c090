"""Alert settings and secrets: thresholds parsed or refused at start-up, webhook secrets rotate with the key."""
from __future__ import annotations

import pytest

from promptproxy.alerts.worker import thresholds
from promptproxy.config import ConfigError
from promptproxy.crypto import Box
from promptproxy.extensions import db
from promptproxy.models import Webhook
from promptproxy.rotation import rotate_secrets

from ..conftest import ENC_KEY
from .conftest import make_hook


def test_thresholds_are_parsed_and_sorted():
    assert thresholds("80, 50,100,50") == (50.0, 80.0, 100.0)
    assert thresholds("90") == (90.0,)


@pytest.mark.parametrize("raw", ["50,eighty", "0,50", "-5"])
def test_bad_thresholds_refuse_to_start(raw):
    with pytest.raises(ConfigError, match="PROMPTPROXY_ALERT_BUDGET_THRESHOLDS"):
        thresholds(raw)


def test_threshold_setting_comes_from_the_environment(app, monkeypatch):
    from promptproxy import create_app

    from ..conftest import base_config

    monkeypatch.setenv("PROMPTPROXY_ALERT_BUDGET_THRESHOLDS", "25,75")
    other = create_app(base_config(app.config["DATABASE_URL"], app.instance_path))
    try:
        assert other.extensions["promptproxy"].alerts.thresholds == (25.0, 75.0)
    finally:
        other.extensions["promptproxy"].close()


def test_webhook_secrets_are_rotated_with_the_encryption_key(app, receiver):
    hook = make_hook(app, receiver.url, secret="rotate-me-secret")
    new = Box("a-brand-new-encryption-key-0123456789", (ENC_KEY,))
    with app.app_context():
        counts = rotate_secrets(new)
        db.session.commit()
        token = db.session.get(Webhook, hook).secret_encrypted
    assert counts["rotated"] == 1 and new.is_current(token) and new.decrypt(token) == "rotate-me-secret"
