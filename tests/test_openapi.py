"""The OpenAPI document says exactly what /api/v1 serves: every rule, every method."""

import re

PREFIX = "/api/v1"
IGNORED = {"HEAD", "OPTIONS"}


def served(app):
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len(PREFIX):])
        out |= {(path, method.lower()) for method in rule.methods - IGNORED}
    return out


def documented(doc):
    return {(path, method) for path, ops in doc["paths"].items() for method in ops}


def test_the_document_matches_the_routes(client, app):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1") and doc["servers"] == [{"url": PREFIX}]
    missing = served(app) - documented(doc)
    stale = documented(doc) - served(app)
    assert not missing, f"routes missing from webapp/api/openapi.py: {sorted(missing)}"
    assert not stale, f"documented but not served: {sorted(stale)}"


def test_every_path_parameter_is_declared(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)


def test_every_reference_resolves(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', str(doc).replace("'", '"')))
    assert refs and refs <= set(doc["components"]["schemas"])
