"""Groups in the dashboard: the Groups page, groups on the user form, effective access, log filter, CSV, overview."""
from __future__ import annotations

from promptproxy import groups, manage
from promptproxy.extensions import db
from promptproxy.models import RequestLog

from ..test_groups_cli import group_row


def test_dashboard_groups_page_create_edit_delete(admin_web, app, people):
    resp = admin_web.post("/admin/groups", {"name": "research", "allowed_models": [], "rpm": "10",
                                            "budget": "12.5", "period": "day"}, hx="create-form")
    assert resp.status_code == 200 and "Created group research." in resp.get_data(as_text=True)
    assert resp.headers["HX-Trigger"] == "rows-changed"
    page = admin_web.get("/admin/groups").get_data(as_text=True)
    assert "research" in page and "$12.5/day shared" in page
    bad = admin_web.post("/admin/groups", {"name": "research"}, hx="create-form")
    assert bad.status_code == 422 and "group `research` already exists" in bad.get_data(as_text=True)
    with app.app_context():
        gid = groups.get_group("research").id
    bad = admin_web.post(f"/admin/groups/{gid}/edit", {"name": "two words", "rpm": "3"}, hx=f"row-{gid}")
    assert bad.status_code == 422 and "group name must be" in bad.get_data(as_text=True)
    assert group_row(app)["rpm"] == 10  # refused: nothing changed
    ok = admin_web.post(f"/admin/groups/{gid}/edit", {"name": "research", "rpm": "20", "all_prompts": "y"},
                        hx=f"row-{gid}")
    assert ok.status_code == 200 and "20 rpm" in ok.get_data(as_text=True)
    assert admin_web.post(f"/admin/groups/{gid}/delete").status_code == 303
    assert group_row(app) is None


def test_dashboard_user_form_sets_groups_and_shows_effective_access(admin_web, app, people):
    with app.app_context():
        p = manage.create_provider("t", "p", "openai", "http://127.0.0.1:9/v1")
        manage.create_model("t", "m1", p, "u1")
        manage.create_model("t", "m2", p, "u2")
        manage.update_user("t", manage.get_user("mia"), allow_models=["m1"])
        groups.create_group("t", "research", allow_models=["m2"])
        db.session.commit()
    uid = people["mia"]
    form = admin_web.get(f"/admin/users/{uid}/edit").get_data(as_text=True)
    assert 'name="groups"' in form and ">research</option>" in form
    resp = admin_web.post(f"/admin/users/{uid}/edit", {"email": "mia@example.com", "role": "member",
                                                       "active": "y", "allowed_models": ["m1"],
                                                       "groups": ["research"]}, hx=f"row-{uid}")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "models: m1, m2" in html and "groups: research" in html  # the union, with where it comes from
    bad = admin_web.post(f"/admin/users/{uid}/edit", {"email": "mia@example.com", "role": "member",
                                                      "active": "y", "groups": ["nope"], "rpm": "5"},
                         hx=f"row-{uid}")
    assert bad.status_code == 422 and "no group `nope`" in bad.get_data(as_text=True)
    with app.app_context():
        mia = manage.get_user("mia")
        assert ([g.name for g in mia.groups], mia.rpm) == (["research"], None)


def test_request_log_filter_and_csv_by_group(admin_web, app, people):
    with app.app_context():
        groups.create_group("t", "research")
        groups.set_memberships("t", manage.get_user("mia"), add=["research"])
        for i, uid in enumerate((people["mia"], people["otto"])):
            db.session.add(RequestLog(request_id=f"req_{i}", user_id=uid, endpoint="chat", status=200,
                                      model="m1", cost=0.5))
        db.session.commit()
        gid = groups.get_group("research").id
    html = admin_web.get(f"/admin/requests?group={gid}").get_data(as_text=True)
    assert '<p class="muted count">1 shown</p>' in html
    csv_text = admin_web.get(f"/admin/requests.csv?group={gid}").get_data(as_text=True)
    header, *lines = csv_text.strip().splitlines()
    assert header.split(",")[3] == "groups" and len(lines) == 1
    assert lines[0].split(",")[1:4] == ["req_0", str(people["mia"]), "research"]
    overview = admin_web.get("/admin/?range=24h").get_data(as_text=True)
    assert "Top groups" in overview and "research" in overview
