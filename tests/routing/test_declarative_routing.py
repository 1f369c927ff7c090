"""`apply` and `export` carry a model's deployments, routing strategy and response-cache settings."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml

from promptproxy import declarative, manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Model, ModelDeployment, Provider

PROVIDERS = [{"name": n, "base_url": f"https://{n}.example.com/v1"} for n in ("a", "b", "c")]


def config(**model) -> dict:
    """Three providers and one model `m` with the given fields."""
    return {"providers": PROVIDERS, "models": [{"slug": "m", **model}]}


TWO = {"deployments": [{"provider": "a", "upstream_model": "m-a", "weight": 2, "rpm": 100},
                       {"provider": "b", "upstream_model": "m-b", "weight": 1, "priority": 1, "tpm": 5000}],
       "strategy": "least-busy", "cache_ttl": 60, "cache_scope": "shared"}


@pytest.fixture
def run(app, tmp_path):
    """Apply a dict as a file through the CLI; returns (exit code, output lines)."""
    runner = app.test_cli_runner()

    def invoke(data: dict):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        out = runner.invoke(cli, ["apply", str(path)], catch_exceptions=False)
        return out.exit_code, out.output.splitlines()

    return invoke


def state(app) -> dict:
    """Every model with its mapping, strategy, cache settings and deployments (field by field, no ids)."""
    with app.app_context():
        return {m.slug: (m.provider.name, m.upstream_model, m.strategy, m.cache_ttl, m.cache_scope,
                         [(d.provider.name, d.upstream_model, d.weight, d.priority, d.rpm, d.tpm)
                          for d in m.deployments])
                for m in db.session.scalars(sa.select(Model).order_by(Model.slug))}


def audits(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))


def test_apply_creates_deployments_strategy_and_cache_then_changes_nothing(run, app):
    code, lines = run(config(**TWO))
    assert code == 0, lines
    assert ("+ model m: provider a; upstream_model m-a; strategy least-busy; cache_ttl 60; cache_scope shared; "
            "deployments a / m-a, b / m-b") in lines
    assert state(app)["m"] == ("a", "m-a", "least-busy", 60, "shared",
                               [("a", "m-a", 2, 0, 100, None), ("b", "m-b", 1, 1, None, 5000)])
    before = audits(app)
    assert run(config(**TWO)) == (0, ["no changes"])
    assert audits(app) == before


def test_apply_changes_adds_and_removes_deployments_and_reports_each(run, app):
    run(config(**TWO))
    changed = {"deployments": [{"provider": "a", "upstream_model": "m-a", "weight": 3},
                               {"provider": "c", "upstream_model": "m-c", "weight": 0}],
               "strategy": "weighted", "cache_ttl": 0}
    code, lines = run(config(**changed))
    assert code == 0, lines
    assert lines == [
        "~ model m: strategy 'least-busy' -> 'weighted'; cache_ttl 60 -> 0; deployment a / m-a weight 2 -> 3, "
        "rpm 100 -> None; deployment c / m-c added (weight 0, priority 0); deployment b / m-b removed",
        "applied 1 change(s)"]
    assert state(app)["m"] == ("a", "m-a", "weighted", None, "shared",
                               [("a", "m-a", 3, 0, None, None), ("c", "m-c", 0, 0, None, None)])
    assert run(config(**changed)) == (0, ["no changes"])


def test_a_new_first_deployment_becomes_the_models_own_mapping(run, app):
    run(config(**TWO))
    swapped = {"deployments": [TWO["deployments"][1], TWO["deployments"][0]]}
    code, lines = run(config(**swapped))
    assert code == 0, lines
    model = state(app)["m"]
    assert model[:2] == ("b", "m-b")  # the model list shows the first deployment
    assert sorted(model[5]) == [("a", "m-a", 2, 0, 100, None), ("b", "m-b", 1, 1, None, 5000)]
    assert model[5][0][0] == "b"
    assert run(config(**swapped)) == (0, ["no changes"])


def test_the_single_upstream_form_still_moves_the_first_deployment(run, app):
    run(config(provider="a", upstream_model="m1", input_price=1.0))
    code, lines = run(config(provider="b", upstream_model="m2"))
    assert code == 0 and "~ model m: upstream_model 'm1' -> 'm2'; provider a -> b" in lines
    assert state(app)["m"][0:2] == ("b", "m2") and state(app)["m"][5] == [("b", "m2", 1, 0, None, None)]
    # onto a target another deployment already has: that one is folded into the first, not duplicated
    with app.app_context():
        manage.deploy("t", manage.get_model("m"), manage.get_provider("c"), "m3", weight=5, rpm=7)
        db.session.commit()
    code, lines = run(config(provider="c", upstream_model="m3"))
    assert code == 0, lines
    assert state(app)["m"][5] == [("c", "m3", 5, 0, 7, None)]
    # a file without `deployments` leaves the others as they are
    with app.app_context():
        manage.deploy("t", manage.get_model("m"), manage.get_provider("a"), "m4")
        db.session.commit()
    assert run(config(provider="c", upstream_model="m3")) == (0, ["no changes"])
    assert len(state(app)["m"][5]) == 2


def dep(**fields) -> dict:
    return {"provider": "a", "upstream_model": "m-a", **fields}


@pytest.mark.parametrize(("model", "message"), [
    ({"deployments": [dep(), {"provider": "nosuch", "upstream_model": "x"}]}, "models[0] (m): no provider `nosuch`"),
    ({"deployments": [dep(weight=-1)]}, "models[0] (m): weight must be a whole number of at least 0"),
    ({"deployments": [dep(weight="heavy")]}, "models[0] (m) deployments[0] (a): `weight` has the wrong type"),
    ({"deployments": [dep(weight=0)]}, "models[0] (m): at least one deployment needs a weight above 0"),
    ({"deployments": [dep(), dep()]}, "models[0] (m) deployments[1]: a / m-a appears twice"),
    ({"deployments": [dep(speed=3)]}, "models[0] (m) deployments[0] (a): unknown field(s): speed"),
    ({"deployments": [{"provider": "a"}]}, "models[0] (m) deployments[0] needs `upstream_model`"),
    ({"deployments": []}, "models[0] (m): `deployments` needs at least one entry"),
    ({"deployments": "a"}, "models[0] (m): `deployments` has the wrong type"),
    ({"provider": "b", "deployments": [dep()]}, "`provider` and `upstream_model` must be those of the first"),
    ({"strategy": "fastest"}, "models[0] (m): strategy must be one of weighted, least-busy"),
    ({"cache_ttl": -5}, "models[0] (m): cache TTL must be 0 (off) to 2592000 seconds"),
    ({"cache_scope": "team"}, "models[0] (m): cache scope must be one of user, shared"),
])
def test_a_bad_model_entry_is_refused_and_changes_nothing(run, app, model, message):
    run(config(**TWO))
    before, events = state(app), audits(app)
    code, lines = run({"providers": PROVIDERS, "models": [{"slug": "m", "cache_ttl": 120, **model}]})
    assert code == 1 and message in "\n".join(lines), lines
    assert "Traceback" not in "\n".join(lines)
    assert state(app) == before and audits(app) == events


def test_export_then_apply_on_an_empty_database_reproduces_the_deployments(app):
    with app.app_context():
        for entry in PROVIDERS:
            manage.create_provider("t", entry["name"], "openai", entry["base_url"])
        m = manage.create_model("t", "m", manage.get_provider("a"), "m-a", strategy="least-busy", cache_ttl=300,
                                cache_scope="shared")
        manage.deploy("t", m, manage.get_provider("b"), "m-b:latest", weight=3, priority=2, rpm=10, tpm=2000)
        manage.deploy("t", m, manage.get_provider("c"), "m-c", weight=0)
        manage.create_model("t", "plain", manage.get_provider("c"), "p")
        db.session.commit()
    before = state(app)
    with app.app_context():
        text = declarative.export_text()
        entry = yaml.safe_load(text)["models"][0]
        assert entry["deployments"][1] == {"provider": "b", "upstream_model": "m-b:latest", "weight": 3,
                                           "priority": 2, "rpm": 10, "tpm": 2000}
        assert (entry["strategy"], entry["cache_ttl"], entry["cache_scope"]) == ("least-busy", 300, "shared")
        plain = yaml.safe_load(text)["models"][1]
        assert "deployments" not in plain and "cache_ttl" not in plain  # one default deployment: the short form
        for table in (ModelDeployment, Model, Provider):
            db.session.execute(sa.delete(table))
        db.session.commit()
        assert state(app) == {}
        declarative.apply(declarative.load(text))
        db.session.commit()
    assert state(app) == before
    with app.app_context():
        assert declarative.export_text() == text
        assert declarative.apply(declarative.load(text)).changes == []
