"""docs/design.md describes the code as it is: routes, settings, states, tables and diagrams.

The diagrams' sources live in docs/diagrams (Graphviz); docs/render.sh regenerates the committed
SVGs, and the last tests here fail when a rendering is out of date. Without Graphviz those tests
skip, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from services import unavailable

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DIAGRAMS = DOCS / "diagrams"
DESIGN = DOCS / "design.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def design() -> str:
    return DESIGN.read_text()


def section(text: str, heading: str) -> str:
    """The body of the markdown section titled ``heading`` (a leading "7. " is ignored)."""
    match = re.search(rf"^(#+) (?:\d+\. )?{re.escape(heading)}\s*\n", text, re.M)
    assert match, f"no section {heading!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row in ``text`` (header and separator rows included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.strip().startswith("|")
    ]


# --- the API table ------------------------------------------------------------------------------


def documented_routes() -> set[tuple[str, str]]:
    rows = table_rows(section(design(), "API"))
    return {(row[0], row[1].strip("`")) for row in rows if len(row) > 1 and row[0] in METHODS}


def app_routes(app) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def test_the_api_table_lists_every_route_of_the_app_and_no_other(app):
    documented, served = documented_routes(), app_routes(app)
    assert documented, "no | METHOD | `/path` | rows found in the API section of docs/design.md"
    assert not served - documented, (
        f"routes missing from the API table of docs/design.md: {sorted(served - documented)}"
    )
    assert not documented - served, f"documented routes the app does not have: {sorted(documented - served)}"


# --- the configuration tables -------------------------------------------------------------------


def settings_read_by_config() -> set[str]:
    """Names of the environment variables pixshift/config.py reads through _env/_int/_float/_bool/_seconds."""
    tree = ast.parse((ROOT / "pixshift" / "config.py").read_text())
    names = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"_env", "_int", "_float", "_bool", "_seconds"}
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
    assert len(names) > 20, names  # the parse found the settings
    return names


def variables_in_table(text: str) -> set[str]:
    """Backquoted upper-case names in the first column of the tables in ``text``."""
    return {name for row in table_rows(text) for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0])}


def test_the_configuration_table_lists_every_setting_and_no_other():
    read, documented = settings_read_by_config(), variables_in_table(section(design(), "Configuration"))
    assert not read - documented, (
        f"settings missing from the configuration table of docs/design.md: {sorted(read - documented)}"
    )
    assert not documented - read, f"documented settings pixshift/config.py does not read: {sorted(documented - read)}"


def test_readme_documents_every_setting():
    documented = variables_in_table(section((ROOT / "README.md").read_text(), "Configuration"))
    missing = settings_read_by_config() - documented
    assert not missing, f"settings missing from README.md's configuration table: {sorted(missing)}"


# --- state machines and data model --------------------------------------------------------------


def dot_source(name: str) -> str:
    return (DIAGRAMS / name).read_text()


@pytest.mark.parametrize(
    "prefix, source, enum_name",
    [
        ("request", "states-request.dot", "RequestState"),
        ("image", "states-image.dot", "ImageState"),
        ("delivery", "states-delivery.dot", "DeliveryState"),
    ],
)
def test_each_state_machine_diagram_has_exactly_the_states_of_its_enum(prefix, source, enum_name):
    from pixshift.db import models

    drawn = set(re.findall(rf"^\s*{prefix}_([a-z_]+)\s*\[", dot_source(source), re.M)) - {"start"}
    states = {state.value for state in getattr(models, enum_name)}
    assert drawn == states, (
        f"{source}: states {sorted(states - drawn)} are not drawn, {sorted(drawn - states)} do not exist in {enum_name}"
    )


def test_the_data_model_diagram_has_exactly_the_tables_and_columns_of_the_models():
    from pixshift.db import models  # noqa: F401  (registers the tables)
    from pixshift.db.extensions import db

    source = dot_source("data-model.dot")
    drawn = {}
    for table, body in re.findall(r"^\s*(\w+) \[label=<(.*?)>\];", source, re.M | re.S):
        drawn[table] = set(re.findall(r'<td port="(\w+)"[^>]*>\1</td>', body))
    tables = {table.name: {column.name for column in table.columns} for table in db.metadata.sorted_tables}
    assert set(drawn) == set(tables), f"tables drawn {sorted(drawn)}, in the models {sorted(tables)}"
    for name, columns in tables.items():
        assert drawn[name] == columns, (
            f"{name}: columns {sorted(columns - drawn[name])} are not drawn, "
            f"{sorted(drawn[name] - columns)} do not exist"
        )


# --- the component boundary ---------------------------------------------------------------------

# Every module below the web layer: uploads, pipeline, webhooks, imaging, net and the foundations.
SERVICES = sorted(
    str(path.relative_to(ROOT / "pixshift"))
    for path in (ROOT / "pixshift").rglob("*.py")
    if path.relative_to(ROOT / "pixshift").parts[0]
    not in {"web", "cli", "__init__.py", "__main__.py", "server.py", "worker.py"}
)


@pytest.mark.parametrize("module", SERVICES)
def test_services_know_no_http_request(module):
    """Section 1: services run in workers as well as in the web process, so nothing request-bound."""
    tree = ast.parse((ROOT / "pixshift" / module).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "flask"
        for alias in node.names
    }
    assert not imported & {"request", "session", "g"}, f"pixshift/{module} imports {imported} from flask"


# --- the diagrams -------------------------------------------------------------------------------


def test_every_diagram_source_has_a_rendering_shown_in_the_document():
    text = design()
    sources = sorted(DIAGRAMS.glob("*.dot"))
    assert len(sources) >= 7
    for source in sources:
        svg = source.with_suffix(".svg")
        assert svg.exists(), f"{svg.name} is missing: run docs/render.sh"
        assert f"](diagrams/{svg.name})" in text, f"docs/design.md does not show diagrams/{svg.name}"
    for shown in re.findall(r"\]\(diagrams/([^)]+)\)", text):
        assert (DIAGRAMS / shown).exists(), f"docs/design.md shows diagrams/{shown}, which does not exist"


def test_the_sequence_source_is_what_its_generator_prints():
    printed = subprocess.run(
        [sys.executable, str(DIAGRAMS / "sequence.py")], capture_output=True, text=True, check=True
    ).stdout
    assert printed == dot_source("sequence.dot"), "docs/diagrams/sequence.dot is stale: run docs/render.sh"


def _graphviz() -> str:
    dot = shutil.which("dot")
    if dot is None:
        unavailable("Graphviz's dot is not installed (apt-get install graphviz fonts-liberation2)")
    return dot


_VERSION_COMMENT = re.compile(r"<!-- Generated by graphviz version .*?-->\n", re.S)


@pytest.mark.parametrize("source", sorted(p.name for p in DIAGRAMS.glob("*.dot")))
def test_each_committed_rendering_matches_its_source(source, tmp_path):
    dot = _graphviz()
    out = tmp_path / "out.svg"
    result = subprocess.run([dot, "-Tsvg", str(DIAGRAMS / source), "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), f"dot on {source}: {result.stderr}"
    fresh = _VERSION_COMMENT.sub("", out.read_text())
    committed = _VERSION_COMMENT.sub("", (DIAGRAMS / source).with_suffix(".svg").read_text())
    assert fresh == committed, (
        f"docs/diagrams/{Path(source).stem}.svg does not match {source}: run docs/render.sh "
        "(and install fonts-liberation2: labels are measured in Arial/Liberation Sans)"
    )
