"""The package's layering holds: no import circles (even counting imports inside functions), no library module
importing a CLI tool, the engine built in one place and runtime names listed in one place."""

from __future__ import annotations

import os
import re

from import_map import ROOT, circles, cli_imports, import_graph, modules


def test_no_import_circles_and_no_library_module_imports_a_cli_tool():
    for inside in (False, True):
        graph = import_graph(inside_functions=inside)
        assert circles(graph) == [], inside
        assert cli_imports(graph) == [], inside


def test_the_scan_finds_a_circle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def _sources() -> dict[str, str]:
    out = {}
    for name, path in modules().items():
        with open(path, encoding="utf-8") as f:
            out[name] = f.read()
    return out


def test_the_engine_is_built_in_one_place_and_runtime_names_are_listed_in_one_place():
    sources = _sources()
    builds = sorted(m for m, text in sources.items() if re.search(r"\bEngine\(backend", text))
    assert builds == ["sdsd.inference"]
    assert len(re.findall(r"\bEngine\(", sources["sdsd.inference"])) == 1  # in build_engine
    listing = re.compile(r"\(\s*\"auto\",\s*\"torch\"|\"torch\",\s*\"openvino\",\s*\"onnxruntime\"")
    assert sorted(m for m, text in sources.items() if listing.search(text)) == []
    assert os.path.isfile(os.path.join(ROOT, "sdsd", "runtimes", "registry.py"))
