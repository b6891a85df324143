"""Static checks of the Slicer modules that need no Slicer: .ui files, parameter nodes, CMake lists, imports.

What would otherwise only fail inside Slicer (a widget name typo, a ``SlicerParameterName`` without
a parameter-node field or with a type its widget cannot show, a script missing from CMake, Qt
imported where the headless logic must not have it) fails here.
"""
from __future__ import annotations

import ast
import fnmatch
import py_compile
import re
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
MODULES = ("OrbitSeg", "OrbitSegTraining")
SHARED_RESOURCE_FOLDERS = ("Resources/Models", "Resources/SampleData")

# Which widget classes can show which parameter types (see slicer/parameterNodeWrapper/guiConnectors.py).
WIDGET_TYPES = {
    "qMRMLNodeComboBox": "node",
    "QSpinBox": "int",
    "QDoubleSpinBox": "float",
    "ctkDoubleSpinBox": "float",
    "ctkSliderWidget": "float",
    "QCheckBox": "bool",
    "QLineEdit": "str",
    "ctkPathLineEdit": "Path",
    "ctkDirectoryButton": "Path",
    "QComboBox": "enum",
}


def source_files() -> set[str]:
    """Paths (relative to the repository) of tracked and untracked-but-not-ignored files.

    Outside a git checkout: every file but caches and build metadata.
    """
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, text=True, check=True, encoding="utf-8").stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        skip = ("__pycache__", ".egg-info", ".git", ".pytest_cache", ".venv")
        listed = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                  if not any(part.endswith(skip) for part in p.relative_to(REPO).parts)]
    return {f for f in listed if (REPO / f).is_file()}


def ui_widgets(module: str) -> dict[str, ET.Element]:
    tree = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui")
    return {w.get("name"): w for w in tree.iter("widget")}


def ui_parameter_names(module: str) -> dict[str, str]:
    """SlicerParameterName -> widget class, for every widget that has one."""
    names = {}
    for widget in ui_widgets(module).values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                name = prop.find("string").text
                assert name not in names, f"{module}.ui: SlicerParameterName {name!r} used twice"
                names[name] = widget.get("class")
    return names


def module_tree(module: str) -> ast.Module:
    return ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))


def parameter_fields(tree: ast.Module) -> dict[str, str]:
    """Field name -> annotation source of the ``@parameterNodeWrapper`` class in a module."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list):
            return {item.target.id: ast.unparse(item.annotation) for item in node.body
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
    raise AssertionError("no @parameterNodeWrapper class")


def library_file(module_name: str) -> Path | None:
    """The file of an ``OrbitSegQtLib`` module (which lives in the OrbitSeg module's folder), or None."""
    if not module_name.startswith("OrbitSegQtLib."):
        return None
    return REPO / "OrbitSeg" / (module_name.replace(".", "/") + ".py")


def enum_classes(tree: ast.Module) -> set[str]:
    names = {n.name for n in tree.body if isinstance(n, ast.ClassDef)
             and any(ast.unparse(b) in ("enum.Enum", "Enum") for b in n.bases)}
    for node in tree.body:  # enums imported from the shared Qt library
        if isinstance(node, ast.ImportFrom) and library_file(node.module or ""):
            library = ast.parse(library_file(node.module).read_text(encoding="utf-8"))
            names |= {a.name for a in node.names if a.name in enum_classes(library)}
    return names


def panel_sources(module: str) -> dict[str, str]:
    """File name -> source of a module file and of the ``OrbitSegQtLib`` modules it imports from."""
    sources = {f"{module}.py": (REPO / module / f"{module}.py").read_text(encoding="utf-8")}
    for node in module_tree(module).body:
        if isinstance(node, ast.ImportFrom) and library_file(node.module or ""):
            sources[library_file(node.module).name] = library_file(node.module).read_text(encoding="utf-8")
    return sources


def kind_of(annotation: str, enums: set[str]) -> str:
    base = re.sub(r"^Annotated\[([^,\]]+).*$", r"\1", annotation).strip()
    if base.startswith("vtkMRML"):
        return "node"
    if base in enums:
        return "enum"
    return base


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_widget_the_code_touches_exists(module):
    sources = panel_sources(module)
    assert "panel.py" in sources, f"{module}.py does not use the shared panel base class"
    for name, source in sources.items():
        used = set(re.findall(r"\bself\.ui\.(\w+)", source))
        assert used or name in ("sampledata.py", "selftests.py"), f"{name} uses no widgets?"
        missing = sorted(used - set(ui_widgets(module)))
        assert not missing, f"{name} uses widgets that {module}.ui does not have: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_every_slicer_parameter_name_is_a_parameter_field_its_widget_can_show(module):
    tree = module_tree(module)
    fields = parameter_fields(tree)
    enums = enum_classes(tree)
    names = ui_parameter_names(module)
    assert names
    for name, widget_class in names.items():
        assert name in fields, f"{module}.ui: SlicerParameterName {name!r} is not a field of the parameter node"
        assert WIDGET_TYPES.get(widget_class) == kind_of(fields[name], enums), \
            f"{module}.ui: {widget_class} cannot show {name}: {fields[name]}"
    # node selectors offer the node class the field holds
    for widget in ui_widgets(module).values():
        props = {p.get("name"): p for p in widget.findall("property")}
        if widget.get("class") == "qMRMLNodeComboBox" and "SlicerParameterName" in props:
            types = [s.text for s in props["nodeTypes"].iter("string")]
            assert types == [fields[props["SlicerParameterName"].find("string").text]], widget.get("name")


@pytest.mark.parametrize("module", MODULES)
def test_mrml_widgets_receive_the_scene(module):
    tree = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui")
    mrml = {w.get("name") for w in tree.iter("widget") if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    connected = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert mrml <= connected, f"{module}.ui: not connected to the scene: {sorted(mrml - connected)}"
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    used = {w.get("class") for w in tree.iter("widget")}
    assert {c for c in used if c.startswith(("qMRML", "ctk"))} <= declared


@pytest.mark.parametrize("module", MODULES)
def test_every_button_does_something(module):
    """A button in the .ui that no code connects would do nothing when pressed."""
    code = "\n".join(panel_sources(module).values())
    buttons = [name for name, w in ui_widgets(module).items() if w.get("class") in ("QPushButton", "QToolButton")]
    assert buttons
    idle = [name for name in buttons if not re.search(rf"self\.ui\.{name}\.connect\(\"clicked\(bool\)\"", code)]
    assert idle == [], f"{module}.ui: buttons nothing is connected to: {idle}"


def test_both_panels_share_one_remembered_site_folder():
    """Save as training case (OrbitSeg) and Adapt (OrbitSeg Training) offer the same site folders: one
    directory path history in the settings."""
    edits = [ui_widgets(module)["siteFolderPathLineEdit"] for module in MODULES]
    keys = {e.find("property[@name='settingKey']/string").text for e in edits}
    assert len(keys) == 1 and None not in keys and all(e.get("class") == "ctkPathLineEdit" for e in edits)
    assert all("ctkPathLineEdit::Dirs" in e.find("property[@name='filters']/set").text for e in edits)
    for module in MODULES:  # a remembered folder is added to the history when it is used
        assert "self.ui.siteFolderPathLineEdit.addCurrentPathToHistory()" in "\n".join(panel_sources(module).values())


def test_module_and_library_files_compile(tmp_path):
    files = [REPO / m / f"{m}.py" for m in MODULES] + sorted((REPO / "OrbitSeg" / "OrbitSegMRMLLib").glob("*.py")) \
        + sorted((REPO / "OrbitSeg" / "OrbitSegQtLib").glob("*.py"))
    for n, path in enumerate(files):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{n}.pyc"), doraise=True)


def cmake_list(text: str, variable: str, module: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [item.replace("${MODULE_NAME}", module) for item in match.group(1).split()]


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_every_script_and_resource(module):
    text = (REPO / module / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    files = {f[len(module) + 1:] for f in source_files() if f.startswith(module + "/")}
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    excluded = cmake_list(text, "MODULE_FILES_NOT_INSTALLED", module) if "MODULE_FILES_NOT_INSTALLED" in text else []
    assert sorted(set(scripts + resources + excluded) - files) == [], "listed but missing"
    # Slicer loads every top-level .py of the scripted-modules folder as a module: only modules go there
    assert [s for s in scripts if "/" not in s] == [f"{module}.py"]
    unlisted = sorted(f for f in files - set(scripts) - set(resources) - set(excluded) if f != "CMakeLists.txt")
    assert unlisted == [], f"{module}/CMakeLists.txt does not list {unlisted}"
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources))
    assert "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert f"class {module}Test(ScriptedLoadableModuleTest)" in (REPO / module / f"{module}.py").read_text(encoding="utf-8")


def test_shared_models_and_sample_data_are_covered_by_the_cmake_globs():
    text = (REPO / "OrbitSeg" / "CMakeLists.txt").read_text(encoding="utf-8")
    patterns = re.findall(r"\$\{PROJECT_SOURCE_DIR\}/(Resources/[^\s)]+)", text)
    assert set(patterns) == {f"{folder}/{'*.pt' if folder.endswith('Models') else '*'}" for folder in SHARED_RESOURCE_FOLDERS}
    shared = [f for f in source_files() if f.startswith("Resources/") and not f.startswith("Resources/Icons/")]
    uncovered = [f for f in shared if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert uncovered == [], f"top-level resources neither installed nor an icon: {uncovered}"


def test_extension_cmake_declares_the_extension_and_both_modules():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"project\(OrbitSeg\)", text)
    for field in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{field} "[^"]+"\)', text), field
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == list(MODULES)
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text
    icon = REPO / "Resources" / "Icons" / "OrbitSeg.png"
    from PIL import Image

    assert Image.open(icon).size == (128, 128)
    for module in MODULES:
        assert (REPO / module / "Resources" / "Icons" / f"{module}.png").is_file()
    # the icon and screenshot links into this repository name files that exist
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "https://github.com/([^"]+)"\)', text).group(1)
    links = re.findall(rf"https://raw.githubusercontent.com/{homepage}/main/(\S+?)[\s\"]", text)
    assert len(links) == 3 and all((REPO / link).is_file() for link in links), links
    module_text = (REPO / "OrbitSeg" / "OrbitSeg.py").read_text(encoding="utf-8")
    help_links = re.findall(r'href="https://github.com/([^/"#]+/[^/"#]+)', module_text)
    assert help_links and set(help_links) == {homepage}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_headless_logic_imports_no_qt_and_the_core_no_slicer():
    for path in (REPO / "OrbitSeg" / "OrbitSegMRMLLib").glob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("qt", "ctk") or n.startswith("slicer.app")
               or n in ("slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper")}
        assert not bad, f"{path.name} imports {bad}"
        assert "slicer.app" not in path.read_text(encoding="utf-8"), path.name
    for path in (REPO / "OrbitSeg" / "OrbitSegLib").rglob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("slicer", "qt", "ctk", "vtk")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    for name in ("__init__.py", "processtree.py"):  # imported by the headless tests
        path = REPO / "OrbitSeg" / "OrbitSegQtLib" / name
        assert not {n for n in _imports(path) if n.split(".")[0] in ("slicer", "qt", "ctk", "vtk")}, name


def test_module_files_are_thin_and_do_not_import_each_other():
    limits = {"OrbitSeg": 300, "OrbitSegTraining": 200}
    for module in MODULES:
        path = REPO / module / f"{module}.py"
        assert len(path.read_text(encoding="utf-8").splitlines()) <= limits[module], f"{module}.py has grown"
        others = {m for m in MODULES if m != module}
        assert not {n.split(".")[0] for n in _imports(path)} & others, f"{module}.py imports another module file"


def test_the_error_prefix_is_spelled_once():
    from OrbitSegLib.protocol import ERROR_PREFIX

    spelled = [f for f in source_files() if f.endswith(".py") and ERROR_PREFIX in (REPO / f).read_text(encoding="utf-8")]
    assert spelled == ["OrbitSeg/OrbitSegLib/protocol.py"], spelled


def test_the_slicer_side_parses_as_python_3_9():
    """Slicer 5.6 to 5.8 run Python 3.9: no newer syntax in the modules or the libraries they import."""
    for f in sorted(source_files()):
        if f.endswith(".py") and f.startswith(MODULES):
            tree = ast.parse((REPO / f).read_text(encoding="utf-8"), filename=f, feature_version=(3, 9))
            postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
            annotations = [a for n in ast.walk(tree) for a in (getattr(n, "annotation", None), getattr(n, "returns", None))
                           if a is not None]
            unions = [a for a in annotations for n in ast.walk(a) if isinstance(n, ast.BinOp)]
            assert postponed or not unions, f"{f}: X | Y annotations need 'from __future__ import annotations' on 3.9"


def test_slicer_requirements_match_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {Requirement(r).name.lower(): Requirement(r) for r in pyproject["project"]["dependencies"]}
    lines = [line.split("#")[0].strip() for line in
             (REPO / "OrbitSeg" / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    slicer_side = {Requirement(line).name.lower(): Requirement(line) for line in lines if line}
    provided_by_slicer = {"torch", "numpy", "simpleitk"}  # SlicerPyTorch, and Slicer itself
    assert set(slicer_side) == set(declared) - provided_by_slicer
    for name, requirement in slicer_side.items():
        assert requirement.specifier == declared[name].specifier, name
    # Slicer 5.8 has Python 3.9 and its own SciPy: nothing may need a newer Python, nor a SciPy newer than
    # the lowest one the code runs on (which Slicer's satisfies, so pip never replaces it)
    assert slicer_side["scipy"].specifier.contains("1.13.1")
