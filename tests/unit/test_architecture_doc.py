"""docs/architecture.md's module map matches the package (regenerate with `make docs`)."""

from tests.harness import module_map


def test_module_map_is_current():
    # GIVEN the architecture page and the package as it is now
    doc = module_map.DOC.read_text(encoding="utf-8")
    # WHEN the module map is generated from the modules' docstrings
    fresh = module_map.render(module_map.module_rows())
    # THEN the page holds exactly that map (a new, removed or re-described module shows up here)
    assert module_map.current_section(doc) == fresh, "docs/architecture.md is stale: run `make docs`"


def test_every_module_says_what_it_is_for():
    missing = [name for name, text in module_map.module_rows() if not text]
    assert not missing, f"modules without a docstring: {missing}"
