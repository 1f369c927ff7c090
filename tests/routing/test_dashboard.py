"""The model's deployments page: list with health and traffic, add, change, remove, refusals (CSRF included)."""
from __future__ import annotations

import re

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import ModelDeployment

from ..admin.conftest import admin_web, member_web, people  # noqa: F401 - dashboard fixtures
from .conftest import chat, deploy


def deployments(app) -> list[tuple]:
    with app.app_context():
        return [(d.provider.name, d.upstream_model, d.weight, d.priority, d.rpm)
                for d in manage.get_model("gpt-4o-mini").deployments]


def test_admin_adds_changes_and_removes_a_deployment(admin_web, app, seeded, client, second):  # noqa: F811
    with app.app_context():
        pid = manage.create_provider("t", "second", "openai", second.url + "/v1", api_key="sk-2").id
        model_id = manage.get_model("gpt-4o-mini").id
        db.session.commit()
    url = f"/admin/models/{model_id}/deployments"
    resp = admin_web.post(url, {"provider": str(pid), "upstream_model": "m2", "weight": "3", "priority": "0"})
    assert resp.status_code == 303
    assert deployments(app)[1] == ("second", "m2", 3, 0, None)
    admin_web.post(url, {"provider": str(pid), "upstream_model": "m2", "weight": "2", "rpm": "50"})
    assert deployments(app)[1] == ("second", "m2", 2, 0, 50)
    app.extensions["promptproxy"].catalog.invalidate()
    for _ in range(4):
        assert chat(client, seeded.key).status_code == 200
    app.extensions["promptproxy"].logs.flush()
    page = admin_web.get(url).get_data(as_text=True)
    assert "second → <code>m2</code>" in page and "healthy" in page
    assert page.count("<td data-label=\"Requests\">") == 2
    with app.app_context():
        dep_id = db.session.query(ModelDeployment).filter_by(upstream_model="m2").one().id
    assert admin_web.post(f"{url}/{dep_id}/delete", {}).status_code == 303
    assert [d[0] for d in deployments(app)] == ["local"]


def test_bad_input_and_the_last_deployment_change_nothing(admin_web, app, seeded):  # noqa: F811
    with app.app_context():
        model = manage.get_model("gpt-4o-mini")
        model_id, dep_id, pid = model.id, model.deployments[0].id, model.provider_id
    url = f"/admin/models/{model_id}/deployments"
    resp = admin_web.post(url, {"provider": str(pid), "upstream_model": "", "weight": "-1"})
    assert resp.status_code == 422 and "Choose a provider" in resp.get_data(as_text=True)
    no_token = admin_web.client.post(url, data={"provider": str(pid), "upstream_model": "m9"})
    assert no_token.status_code == 400  # CSRF
    resp = admin_web.post(f"{url}/{dep_id}/delete", {})
    assert resp.status_code == 303
    assert "at least one deployment" in admin_web.get(url).get_data(as_text=True)
    assert deployments(app) == [("local", "real-model-name:latest", 1, 0, None)]


def test_members_cannot_see_or_change_deployments(member_web, app, seeded):  # noqa: F811
    with app.app_context():
        model_id = manage.get_model("gpt-4o-mini").id
    assert member_web.get(f"/admin/models/{model_id}/deployments").status_code in (403, 404)
    assert member_web.post(f"/admin/models/{model_id}/deployments", {"upstream_model": "x"}).status_code in (403, 404)
    assert len(deployments(app)) == 1


def row_cells(page: str, dep_id: int) -> dict[str, str]:
    """One deployment's row as {column: text}."""
    found = re.search(rf'<tr id="deployment-{dep_id}">(.*?)</tr>', page, re.S)
    assert found, f"no row for deployment {dep_id}"
    return {name: re.sub(r"<[^>]+>|\s+", " ", value).strip()
            for name, value in re.findall(r'<td data-label="([^"]+)">(.*?)</td>', found.group(1), re.S)}


def test_the_page_counts_requests_errors_and_failed_attempts_per_deployment(
        admin_web, app, seeded, client, upstream, second):  # noqa: F811
    second.handler = lambda req: (500, {"Content-Type": "application/json"}, '{"error": {"message": "down"}}')
    second_id = deploy(app, second.url, priority=0)
    with app.app_context():
        model = manage.get_model("gpt-4o-mini")
        local_id, model_id = model.deployments[0].id, model.id
        manage.deploy("t", model, model.deployments[0].provider, model.deployments[0].upstream_model, priority=1)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    for _ in range(5):  # `second` is tried first until it is ejected (3 failures); each call then succeeds on local
        assert chat(client, seeded.key).status_code == 200
    upstream.handler = second.handler  # now local fails too: the call ends in an error on local
    assert chat(client, seeded.key).status_code == 500
    app.extensions["promptproxy"].logs.flush()
    page = admin_web.get(f"/admin/models/{model_id}/deployments").get_data(as_text=True)
    local, other = row_cells(page, local_id), row_cells(page, second_id)
    assert (local["Requests"], local["Errors"]) == ("6", "1")
    assert (other["Requests"], other["Errors"], other["Failed attempts"]) == ("0", "0", "3")
    assert other["Health"].startswith("ejected")
    assert int(local["Failed attempts"]) >= 1
